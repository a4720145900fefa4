"""What every ``shipdeck`` command shares: the error line, ``-c FILE`` and ``-e NAME``,
``--no-mouse``, ``--override-freeze --reason TEXT``.
Exit codes are :class:`engine.errors.ExitCode`.

Standard library only at import time (the parser is built from every command module).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def err(msg: str) -> None:
    """One line on stderr, prefixed ``shipdeck:``."""
    sys.stderr.write(f"shipdeck: {msg}\n")


#: the environment variable naming the environment when ``-e`` is not given
ENV_VAR = "SHIPDECK_ENV"


def env_choice(args: argparse.Namespace) -> tuple[str | None, str]:
    """The environment asked for and who asked: ``-e NAME``, else ``$SHIPDECK_ENV``."""
    if getattr(args, "env", None):
        return args.env, "-e"
    return os.environ.get(ENV_VAR) or None, ENV_VAR


def load(args: argparse.Namespace) -> Any:
    """The config named by ``-c FILE``, in the environment of ``-e NAME`` /
    ``$SHIPDECK_ENV`` (else the file's default one). Raises
    ``engine.config.ConfigError``."""
    from engine.config import load_config

    env, source = env_choice(args)
    return load_config(args.config, env, env_source=source)


def add_config(p: argparse.ArgumentParser) -> None:
    """``-c/--config FILE`` (default ``./shipdeck.toml``) and ``-e/--env NAME``."""
    p.add_argument(
        "-c",
        "--config",
        default="shipdeck.toml",
        metavar="FILE",
        help="config file (default: ./shipdeck.toml)",
    )
    p.add_argument(
        "-e",
        "--env",
        metavar="NAME",
        help=f"environment: the config's [env.NAME] over its top level (default: ${ENV_VAR}, else the file's default)",
    )


#: what ``--hosts`` takes (:func:`engine.hosts.select`), said the same by every command
HOSTS_HELP = "groups or hosts (comma-separated globs) and/or labels: role=web,az=a (az!=b)"


def add_hosts(p: argparse.ArgumentParser) -> None:
    """``--hosts PATTERN``: which hosts of the config the command works on."""
    p.add_argument("--hosts", metavar="PATTERN", help=HOSTS_HELP)


def add_freeze(p: argparse.ArgumentParser) -> None:
    """``--override-freeze --reason TEXT`` (deploy, rollback)."""
    p.add_argument(
        "--override-freeze",
        action="store_true",
        help="go ahead inside a [[freeze]] window (an admin, when a relay is configured; recorded)",
    )
    p.add_argument("--reason", metavar="TEXT", help="why the freeze is overridden (required with it)")


def freeze_override(args: argparse.Namespace, operator: str, role: str | None) -> Any:
    """The ``engine.freeze.Override`` that ``--override-freeze --reason`` asks for (None
    without it), by ``operator`` with the ``role`` the relay confirmed (None: no relay
    asked). Raises ValueError for ``--reason`` alone or ``--override-freeze`` without
    a reason (bad usage, exit 2)."""
    reason = " ".join((getattr(args, "reason", None) or "").split())
    if not getattr(args, "override_freeze", False):
        if reason:
            raise ValueError("--reason goes with --override-freeze")
        return None
    if not reason:
        raise ValueError("--override-freeze needs --reason TEXT (it is recorded and announced)")
    from engine.freeze import Override

    return Override(reason=reason, by=operator, role=role)


def app_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``App.run`` keywords of a full-screen command (``--no-mouse``)."""
    return {"mouse": not getattr(args, "no_mouse", False)}

"""What every ``shipdeck`` command shares: the error line, ``-c FILE``, ``--no-mouse``.
Exit codes are :class:`engine.errors.ExitCode`.

Standard library only at import time (the parser is built from every command module).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def err(msg: str) -> None:
    """One line on stderr, prefixed ``shipdeck:``."""
    sys.stderr.write(f"shipdeck: {msg}\n")


def load(args: argparse.Namespace) -> Any:
    """The config named by ``-c FILE``. Raises ``engine.config.ConfigError``."""
    from engine.config import load_config

    return load_config(args.config)


def add_config(p: argparse.ArgumentParser) -> None:
    """``-c/--config FILE`` (default ``./shipdeck.toml``)."""
    p.add_argument(
        "-c",
        "--config",
        default="shipdeck.toml",
        metavar="FILE",
        help="config file (default: ./shipdeck.toml)",
    )


def app_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``App.run`` keywords of a full-screen command (``--no-mouse``)."""
    return {"mouse": not getattr(args, "no_mouse", False)}

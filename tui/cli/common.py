"""What every ``shipdeck`` command shares: the error line, ``-c FILE``, exit codes.

Standard library only at import time (the parser is built from every command module).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

#: exit codes (README): 0 every host ok; 1 finished, some hosts failed within the
#: budget; 2 bad usage or config; 3 stopped (budget, abort, lock held, relay refused)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3
#: say/tail: the relay could not be reached or refused the token
EXIT_CONNECT = 3


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

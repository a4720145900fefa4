"""``shipdeck demo``: a local fleet, a sample repo and the TUI ready to deploy.
Textual is imported when the command runs, not when the parser is built."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    """Register ``demo``."""
    p = sub.add_parser(
        "demo",
        help="local fleet + sample repo: the TUI ready to deploy (press d)",
        description="Start N in-process SSH hosts, a sample git repo and the TUI ready for d.",
    )
    p.add_argument(
        "--hosts", type=int, default=8, metavar="N", help="hosts in the local fleet (default 8)"
    )
    p.add_argument("--dir", metavar="PATH", help="keep the fleet's host directories in PATH")
    p.add_argument(
        "--with-failure",
        action="store_true",
        help="one host fails its health check, to show the failure and its rollback",
    )
    p.add_argument(
        "--batches", nargs="+", metavar="SIZE", help="deploy in waves: counts or %% (1 50%% 100%%)"
    )
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    p.add_argument(
        "--simulate",
        action="store_true",
        help="accepted for old scripts; the same as demo (the real engine over the local fleet)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from tui.demo import run_demo

    return run_demo(
        hosts=args.hosts,
        directory=args.dir,
        with_failure=args.with_failure,
        mouse=not args.no_mouse,
        simulate=args.simulate,
        batches=tuple(args.batches) if args.batches else None,
    )

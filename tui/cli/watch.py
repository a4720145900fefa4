"""``shipdeck watch``: the spectator TUI of a relay room (tree + chat, no engine).
Textual is imported when the command runs, not when the parser is built."""

from __future__ import annotations

import argparse
import os
from typing import Any

from tui.cli.common import app_kwargs
from tui.cli.operator import relay_operator, resolve_operator


def add_parsers(sub: Any) -> None:
    """Register ``watch``."""
    p = sub.add_parser("watch", help="spectator TUI of a relay room (tree + chat, no engine)")
    p.add_argument("--relay", required=True, metavar="URL")
    p.add_argument("--room", required=True)
    p.add_argument("--token", help="relay token (default: $SHIPDECK_TOKEN)")
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    p.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio

    from tui.app import ShipdeckApp

    token = args.token or os.environ.get("SHIPDECK_TOKEN")
    operator = resolve_operator(asyncio.run(relay_operator(args.relay, args.room, token)))
    message = None
    chat = None
    watcher = None
    try:
        from relay.publish import tui_watch
    except ImportError:
        message = (
            f"connecting to {args.relay} room {args.room}… the relay client (relay/client.py) "
            "is not installed yet, so this spectator view cannot receive the deploy."
        )
    else:
        chat, watcher = tui_watch(args.relay, args.room, token=token, operator=operator)
    app = ShipdeckApp(None, chat=chat, operator=operator, watch=args.room, start_message=message)
    if message:
        app.relay_status = "connecting"
    if watcher is not None:
        app.watcher = watcher  # feeds app.feed(event) once mounted
    code = app.run(**app_kwargs(args))
    return int(code or 0)

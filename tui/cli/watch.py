"""``shipdeck watch``: the spectator TUI of a relay room (tree + chat, no engine).
Textual is imported when the command runs, not when the parser is built."""

from __future__ import annotations

import argparse
import os
from typing import Any

from tui.cli.common import app_kwargs
from tui.cli.operator import resolve_operator


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
    who = asyncio.run(relay_identity(args.relay, args.room, token))
    operator = resolve_operator(who[0] if who else None)
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
    limit_to_role(app, who[1] if who else "operator")
    code = app.run(**app_kwargs(args))
    return int(code or 0)


async def relay_identity(
    url: str, room: str, token: str | None, timeout: float = 5.0
) -> tuple[str | None, str] | None:
    """``(operator, role)`` the relay gives ``token`` (one short connection), or None
    when it cannot be asked (no token, relay client missing, unreachable, refused)."""
    if not token:
        return None
    try:
        from relay.client import RelayClient, RelayError
    except ImportError:
        return None
    client = RelayClient(url, room, token, snapshot=False, reconnect=False)
    try:
        await client.start(timeout=timeout)
        return client.operator, client.role
    except RelayError:
        return None
    finally:
        await client.close(flush=0)


def limit_to_role(app: Any, role: str) -> None:
    """Offer only the keys ``role`` may use: an observer's footer, key bindings and
    palette leave out abort and approve (the relay would refuse them)."""
    from tui import actions

    app.relay_role = role
    check = app.check_action

    def check_action(action: str, parameters: tuple[object, ...]) -> bool | None:
        if not actions.role_allows(action, role):
            return False
        return check(action, parameters)

    app.check_action = check_action

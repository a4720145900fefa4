"""TUI entry points for the ``shipdeck`` command: ``demo``, ``watch`` and the
interactive ``deploy``. Nothing here imports textual at module level, so
``shipdeck --help`` and headless commands stay fast and terminal-free.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _app_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"mouse": not getattr(args, "no_mouse", False)}


def run_deploy_tui(args: argparse.Namespace) -> int:
    """``shipdeck deploy`` without ``--headless``: the app on ``args.config``.

    Returns the deploy's exit code, or 0 if the operator quit without deploying.
    """
    from engine.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"shipdeck: {exc}\n")
        return 2
    import asyncio

    from tui.cli import config_operator

    # who deploys is settled before anything starts (the relay confirms the token's operator)
    app = deploy_app(config, args, asyncio.run(config_operator(config, args)))
    code = app.run(**_app_kwargs(args))
    return int(code or 0)


def deploy_app(config: Any, args: argparse.Namespace, operator: str) -> Any:
    """The deploying app on ``config`` as ``operator`` (see ``tui.cli.resolve_operator``)."""
    from tui.app import ShipdeckApp
    from tui.backend import EngineBackend

    backend = EngineBackend(
        config,
        ref=getattr(args, "ref", None),
        hosts=getattr(args, "hosts", None),
        operator=operator,
        force_unlock=getattr(args, "force_unlock", False),
    )
    chat, note = _chat_for(config, backend.operator)
    return ShipdeckApp(backend, chat=chat, operator=backend.operator, start_message=note)


def _chat_for(config: Any, operator: str) -> tuple[Any, str | None]:
    """The relay chat backend for a config, if the relay client is installed."""
    relay = getattr(config, "relay", None)
    if relay is None:
        return None, None
    try:
        from relay.publish import tui_chat_backend
    except ImportError:
        return None, f"relay {relay.url} configured, but the relay client is not installed yet"
    token = os.environ.get(getattr(relay, "token_env", "") or "SHIPDECK_TOKEN")
    return tui_chat_backend(relay.url, relay.room, token=token, operator=operator), None


def cmd_demo(args: argparse.Namespace) -> int:
    from tui.demo import run_demo

    return run_demo(
        hosts=args.hosts,
        directory=args.dir,
        with_failure=args.with_failure,
        mouse=not args.no_mouse,
        simulate=args.simulate,
    )


def cmd_watch(args: argparse.Namespace) -> int:
    import asyncio

    from tui.app import ShipdeckApp
    from tui.cli import relay_operator, resolve_operator

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
    code = app.run(**_app_kwargs(args))
    return int(code or 0)


def add_parsers(sub: Any) -> None:
    """Register ``demo`` and ``watch`` on the ``shipdeck`` subcommand parser."""
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
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    p.add_argument(
        "--simulate",
        action="store_true",
        help="no SSH at all: a scripted deploy (for screenshots and slow machines)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("watch", help="spectator TUI of a relay room (tree + chat, no engine)")
    p.add_argument("--relay", required=True, metavar="URL")
    p.add_argument("--room", required=True)
    p.add_argument("--token", help="relay token (default: $SHIPDECK_TOKEN)")
    p.add_argument("--no-mouse", action="store_true", help="do not capture the mouse")
    p.set_defaults(func=cmd_watch)

"""``shipdeck maintenance on|off``: every server of the backend out of rotation (or
the ``deploy.maintenance_on`` / ``deploy.maintenance_off`` hooks), who and why recorded
in history and in the relay room. No textual.

With ``[relay]`` the room's lease is taken first, as a deploy takes it (a deploy that
is running holds it: maintenance waits for nobody and says who holds it, exit 3), the
change is published as one event (watchers' headers show it) and the lease is given
back. The engine's part is :mod:`engine.maintenance`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.errors import ExitCode
from tui.cli.common import add_config, err, load


def add_parsers(sub: Any) -> None:
    """Register ``maintenance``."""
    p = sub.add_parser(
        "maintenance",
        help="maintenance mode on or off: every server of the backend out of rotation",
        description="on: put every server of [balancer]'s backend in HAProxy's maint state"
        " (and run deploy.maintenance_on hooks); off: put them back in rotation (servers that"
        " were already out before on stay out) and run deploy.maintenance_off hooks. Who and"
        " --message (why) are recorded in history and published to the relay room, whose"
        " watchers show it in their header; a deploy during maintenance says so and leaves"
        " its hosts out of rotation. Exit 0 done; 1 HAProxy or a hook refused (what was done"
        " stays done); 2 nothing to switch in the config; 3 the room's lock is held.",
    )
    p.add_argument("state", choices=("on", "off"), help="on or off")
    add_config(p)
    p.add_argument("--message", "-m", default="", metavar="TEXT", help="why (recorded, shown)")
    p.add_argument("--json", action="store_true", help="print the recorded event as JSON")
    p.add_argument(
        "--without-relay",
        action="store_true",
        help="go ahead when the configured relay is down or refuses the token (recorded)",
    )
    p.set_defaults(func=cmd_maintenance)


def cmd_maintenance(args: argparse.Namespace) -> int:
    import asyncio

    from engine.config import ConfigError
    from engine.maintenance import configured

    try:
        config = load(args)
        if not configured(config):
            from engine.maintenance import NOT_CONFIGURED

            raise ConfigError(config.path, NOT_CONFIGURED, key="balancer")
    except ConfigError as exc:
        err(str(exc))
        return ExitCode.USAGE
    return asyncio.run(_maintenance(config, args))


async def _maintenance(config: Any, args: argparse.Namespace) -> int:
    import asyncio

    from tui.cli import room
    from tui.cli.operator import resolve_operator

    on = args.state == "on"
    doing = f"maintenance {args.state}"
    try:
        client = await room.connect(config, args)
    except room.RoomLocked as exc:
        err(f"{exc}; {doing} not switched")
        return ExitCode.STOPPED
    try:
        by = resolve_operator(getattr(client, "operator", None))
        if client is not None:
            held = await _take_lease(client, f"{doing}: {args.message}".rstrip(": "))
            if held:
                err(f"{held}; {doing} not switched")
                return ExitCode.STOPPED
        return await _switch(config, args, on, by, client)
    finally:
        if client is not None:
            try:
                await asyncio.wait_for(client.release_lock(), 5)
            except Exception:  # noqa: BLE001 - the lease goes stale by itself
                pass
            await client.close(flush=2.0)


async def _take_lease(client: Any, reason: str) -> str:
    """Take the room's lease; "" when taken, else who holds it."""
    from relay.client import LeaseHeld

    try:
        await client.acquire_lock(reason, ttl=30.0)
    except LeaseHeld as exc:
        holder = exc.holder or {}
        return (
            f"the room's deploy lock is held by {holder.get('operator', '?')}:"
            f" {holder.get('reason', '')}"
        )
    return ""


async def _switch(config: Any, args: argparse.Namespace, on: bool, by: str, client: Any) -> int:
    import asyncio
    import secrets
    import time

    from engine.errors import ShipdeckError
    from engine.events import MaintenanceChanged
    from engine.history import History
    from engine.maintenance import switch
    from engine.remote.shell import utc_stamp
    from engine.ssh import Connector
    from tui.cli.prompt import prompter
    from tui.render import maintenance_text

    history = History()
    deploy_id = f"{utc_stamp(time.time())}-{secrets.token_hex(3)}"
    try:
        previous = history.last_maintenance(config.project.name)
    except Exception:  # noqa: BLE001 - an unreadable history loses only "kept" servers
        previous = None
    ask = prompter()
    try:
        done = await switch(
            config,
            on,
            by=by,
            message=args.message,
            deploy_id=deploy_id,
            connector=lambda: Connector(config.ssh, config.base_dir, prompter=ask),
            previous=previous,
        )
    except ShipdeckError as exc:
        failed = MaintenanceChanged(deploy_id, on=on, by=by, message=args.message, at=time.time())
        history.record_maintenance(
            failed,
            project=config.project.name,
            config=str(config.path),
            status="failed",
            exit_code=int(ExitCode.FAILED),
            detail={"reason": str(exc), "message": args.message},
        )
        err(f"maintenance {args.state}: {exc}")
        return ExitCode.FAILED
    event = done.event
    if args.without_relay and config.relay is not None:
        skipped = {"relay": "skipped (--without-relay)"}
    else:
        skipped = {}
    history.record_maintenance(
        event,
        project=config.project.name,
        config=str(config.path),
        detail={**done.detail(), **skipped},
    )
    code = ExitCode.OK
    if client is not None:
        try:
            await asyncio.wait_for(client.publish_event(event), 10)
        except Exception as exc:  # noqa: BLE001 - switched and recorded; the room missed it
            err(f"relay: the room did not record it ({exc or type(exc).__name__})")
            code = ExitCode.FAILED
    if args.json:
        print(json.dumps(event.to_json()))
        return code
    for name, before in done.before.items():
        after = done.after.get(name, "?")
        kept = "  (out before maintenance on: left in maint)" if name in done.kept else ""
        print(f"  {config.balancer.backend}/{name:<20} {before} -> {after}{kept}")
    print(maintenance_text(event) + f"  [{event.deploy_id}]")
    return code

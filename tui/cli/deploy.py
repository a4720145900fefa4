"""``shipdeck deploy`` (full screen, ``--headless``, ``--json``, ``--dry-run``) and
``shipdeck rollback``.

Headless runs and the dry run never import textual; the full-screen deploy imports
the app only when it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import ExitCode
from tui.cli import room
from tui.cli.common import (
    add_config,
    add_freeze,
    add_hosts,
    app_kwargs,
    err,
    freeze_override,
    load,
)
from tui.cli.operator import config_operator, resolve_operator
from tui.cli.prompt import ask, interactive, prompter

if TYPE_CHECKING:
    import asyncio


def add_parsers(sub: Any) -> None:
    """Register ``deploy`` and ``rollback``."""
    p = sub.add_parser("deploy", help="deploy a git ref to the fleet (TUI, or --headless)")
    add_config(p)
    p.add_argument("--ref", help="branch, tag or sha (default: project.ref)")
    add_hosts(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and check every host without changing anything",
    )
    p.add_argument("--no-connect", action="store_true", help="with --dry-run: print the plan only")
    p.add_argument("--headless", action="store_true", help="no TUI: one line per stage change")
    p.add_argument("--json", action="store_true", help="headless, events as JSON lines")
    p.add_argument("--yes", "-y", action="store_true", help="approve every gate")
    p.add_argument(
        "--force-unlock",
        action="store_true",
        help="take over a lock left by someone else (says whose)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="headless: print every output line")
    p.add_argument("--no-mouse", action="store_true", help="TUI: do not capture the mouse")
    p.add_argument(
        "--without-relay",
        action="store_true",
        help="go ahead when the configured relay is down or refuses the token (recorded)",
    )
    add_freeze(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("rollback", help="switch current back to the previous release (or --to)")
    add_config(p)
    p.add_argument("--to", metavar="RELEASE_ID")
    add_hosts(p)
    p.add_argument("--headless", action="store_true", help="(rollback always runs headless)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--force-unlock", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument(
        "--without-relay",
        action="store_true",
        help="go ahead when the configured relay is down or refuses the token (recorded)",
    )
    p.add_argument(
        "--all-at-once",
        action="store_true",
        help="switch every host at once instead of following the deploy's waves",
    )
    add_freeze(p)
    p.set_defaults(func=cmd_rollback)


# -- deploy -----------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    import asyncio

    from engine.approvals import ApprovalRefused
    from engine.config import ConfigError
    from engine.freeze import Frozen

    try:
        config = load(args)
        if args.dry_run:
            return asyncio.run(_dry_run(config, args))
        if not args.headless and not args.json:
            if args.override_freeze:
                err("--override-freeze: running headless (pass --headless to say so)")
            elif not sys.stdout.isatty() and not os.environ.get("SHIPDECK_FORCE_TUI"):
                err("no terminal: running headless (pass --headless to say so)")
            else:
                return run_deploy_tui(args)
        # git fetches while Python loads the SSH layer (about a tenth of a second)
        from engine import git as gitmod

        early = gitmod.start_fetch(gitmod.normalise_repo(config.project.repo, config.base_dir))
        try:
            from engine.deploy import Deployment
        except BaseException:
            early.close()
            raise

        async def main() -> int:
            return await _headless_with_relay(
                config,
                args,
                "deploying",
                lambda operator, override: Deployment(
                    config,
                    freeze_override=override,
                    ref=args.ref,
                    hosts=args.hosts,
                    operator=operator,
                    prompter=prompter(),
                    force_unlock=args.force_unlock,
                    auto_approve=args.yes,
                    early_fetch=early,
                    without_relay=args.without_relay and config.relay is not None,
                ),
            )

        try:
            return asyncio.run(main())
        finally:
            early.close()
    except (ConfigError, ApprovalRefused) as exc:  # ApprovalRefused: --yes under four eyes
        err(str(exc))
        return ExitCode.USAGE
    except Frozen as exc:
        err(str(exc))
        return ExitCode.STOPPED


async def _dry_run(config: Any, args: argparse.Namespace) -> int:
    from engine.deploy import Deployment
    from engine.preflight import preflight
    from tui.render import outgoing_lines, render_tree

    d = Deployment(config, ref=args.ref, hosts=args.hosts, auto_approve=args.yes)
    for line in render_tree(d.plan, collapse_steps=True):
        print(line)
    print()
    frozen = _frozen_now(config)
    if frozen:
        print(frozen)
        print()
    if args.no_connect:
        return ExitCode.OK
    report = await preflight(config, d.selected, ref=d.ref, prompter=prompter())
    card = await _dry_run_outgoing(config, report)
    if args.json:
        data = report.to_json()
        if card is not None:
            data["outgoing"] = card.to_json()
        print(json.dumps(data, indent=2))
    else:
        for line in report.lines():
            print(line)
        if card is not None:
            print()
            for line in outgoing_lines(card):
                print(line)
    return ExitCode.OK if report.ok else ExitCode.FAILED


def _frozen_now(config: Any) -> str:
    """The dry run's word on the freeze windows: "" when none holds now."""
    import datetime

    from engine.freeze import active

    hit = active(config.freeze, datetime.datetime.now(datetime.UTC))
    if hit is None:
        return ""
    return f"frozen: a deploy now is refused ({hit.text()}; {hit.until_text()}) unless --override-freeze"
async def _dry_run_outgoing(config: Any, report: Any) -> Any:
    """What goes out, against the current release the preflight read on each host
    (None when the target could not be resolved: the report says why)."""
    from engine import git as gitmod
    from engine.outgoing import Running, outgoing

    if not report.target_sha:
        return None
    mirror = gitmod.mirror_path(gitmod.normalise_repo(config.project.repo, config.base_dir))
    running = [
        Running.of_release(h.host, h.current, error="" if h.auth else h.error or "not reached")
        for h in report.hosts
    ]
    return await outgoing(mirror, report.target_sha, running)


# -- rollback ---------------------------------------------------------------------


def cmd_rollback(args: argparse.Namespace) -> int:
    import asyncio

    from engine.config import ConfigError
    from engine.freeze import Frozen

    try:
        config = load(args)
        from engine.deploy import Rollback

        async def main() -> int:
            return await _headless_with_relay(
                config,
                args,
                "rolling back",
                lambda operator, override: Rollback(
                    config,
                    freeze_override=override,
                    to=args.to,
                    hosts=args.hosts,
                    operator=operator,
                    prompter=prompter(),
                    force_unlock=args.force_unlock,
                    without_relay=args.without_relay and config.relay is not None,
                    all_at_once=args.all_at_once,
                ),
            )

        return asyncio.run(main())
    except ConfigError as exc:
        err(str(exc))
        return ExitCode.USAGE
    except Frozen as exc:
        err(str(exc))
        return ExitCode.STOPPED


# -- headless runs ----------------------------------------------------------------


async def _headless_with_relay(
    config: Any, args: argparse.Namespace, doing: str, make: Callable[[str, Any], Any]
) -> int:
    """A headless deploy or rollback with the room: the relay first (the operator it
    confirms for the token is the identity recorded everywhere: history,
    revisions.log, host locks, and its role decides a freeze override; a relay that is
    down or refuses the token stops here unless --without-relay), then the run built
    by ``make(operator, freeze_override)``, checked against the freeze windows before
    the room's lease is taken (raises ``engine.freeze.Frozen``), published."""
    try:
        client = await room.connect(config, args)
    except room.RoomLocked as exc:
        err(f"{exc}; not {doing}")
        return ExitCode.STOPPED
    try:
        operator = resolve_operator(getattr(client, "operator", None))
        try:
            override = freeze_override(args, operator, getattr(client, "role", None))
        except ValueError as exc:
            if client is not None:
                await client.close(flush=0)
            err(str(exc))
            return ExitCode.USAGE
        run = make(operator, override)
        run.check_freeze()
    except BaseException:
        if client is not None:
            await client.close(flush=0)
        raise
    try:
        publisher = await room.publisher(config, run, client)
    except room.RoomLocked as exc:
        err(f"{exc}; not {doing}")
        return ExitCode.STOPPED
    try:
        return await _run_headless(run, args)
    finally:
        if publisher is not None:
            await publisher()


async def _run_headless(run: Any, args: argparse.Namespace) -> int:
    from tui.headless import HeadlessPrinter, JsonPrinter

    def on_stdout_closed() -> None:
        # like `yes | head`, but a release is never cut short: stop at a safe point
        try:
            err(f"stdout closed: stopping at a safe point (`shipdeck show {run.deploy_id}`)")
        except OSError:
            pass
        run.abort(reason="stdout closed (its reader went away)")

    printer = (
        JsonPrinter(on_closed=on_stdout_closed)
        if args.json
        else HeadlessPrinter(verbose=getattr(args, "verbose", False), on_closed=on_stdout_closed)
    )
    run.subscribe(printer)
    _stop_on_signals(run)
    if getattr(run, "plan", None) is not None and any(n.kind == "gate" for n in run.plan):
        run.subscribe(_gate_asker(run))
    result = await run.run()
    return ExitCode.PIPE if printer.closed else result.exit_code


def _stop_on_signals(run: Any) -> None:
    """Ctrl-C and SIGTERM stop the run at a safe point (a second press only says so)."""
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    presses = [0]

    def on_sigint() -> None:
        presses[0] += 1
        if presses[0] == 1:
            err(
                "Ctrl-C: stopping at a safe point (hosts being switched finish first; press again to see this message)"
            )
            run.abort(reason="interrupted (Ctrl-C)")
        else:
            err("still stopping safely: no host is left half-switched; waiting for in-flight steps")

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_sigint)
        except (NotImplementedError, RuntimeError):
            pass


def _gate_asker(run: Any) -> Callable[[Any], None]:
    """A subscriber that asks on the terminal at each gate (approve or abort); without
    a terminal a gate aborts the run (``--yes`` approves gates up front)."""
    import asyncio

    tasks: list[asyncio.Task[None]] = []  # keeps the question alive while it waits

    gates = getattr(run, "gates", None)
    rule = getattr(gates, "rule", None)

    def on_gate(event: Any) -> None:
        if event.type != "gate":
            return
        if rule is not None and rule.distinct:  # four eyes: the deployer's own does not count
            if gates.others_can_approve():
                err(
                    f"{event.key}: waiting for {rule.needs()} ({rule.text()}) in relay room"
                    f" {run.config.relay.room}; {run.operator}'s own approval does not count"
                )
            else:
                run.abort(
                    reason=f"{event.key}: {rule.text()} (four eyes) needs {rule.needs()},"
                    " and without a relay no other operator can approve"
                )
            return
        if interactive():

            async def question() -> None:
                answer = await ask(f"{event.key}: approve and continue? [y/N] ")
                if answer.strip().lower() in ("y", "yes"):
                    run.approve(key=event.key)
                else:
                    run.abort(reason=f"{event.key} not approved")

            tasks.append(asyncio.ensure_future(question()))
        else:
            run.abort(reason=f"{event.key} needs an approval: pass --yes, or run interactively")

    return on_gate


# -- full screen ------------------------------------------------------------------


def run_deploy_tui(args: argparse.Namespace) -> int:
    """``shipdeck deploy`` without ``--headless``: the app on ``args.config``.

    Returns the deploy's exit code, or 0 if the operator quit without deploying.
    """
    import asyncio

    from engine.config import ConfigError

    try:
        config = load(args)
    except ConfigError as exc:
        err(str(exc))
        return ExitCode.USAGE
    # who deploys is settled before anything starts (the relay confirms the token's operator)
    app = deploy_app(config, args, asyncio.run(config_operator(config, args)))
    code = app.run(**app_kwargs(args))
    return int(code or 0)


def deploy_app(config: Any, args: argparse.Namespace, operator: str) -> Any:
    """The deploying app on ``config`` as ``operator`` (see :func:`resolve_operator`)."""
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

"""The ``shipdeck`` command. Imports lazily: relay, say, tail, history, show,
download and ``deploy --headless`` never import textual."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3


def _err(msg: str) -> None:
    sys.stderr.write(f"shipdeck: {msg}\n")


def _load(args: argparse.Namespace) -> Any:
    from engine.config import load_config

    return load_config(args.config)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default="shipdeck.toml",
        metavar="FILE",
        help="config file (default: ./shipdeck.toml)",
    )


def resolve_operator(confirmed: str | None = None) -> str:
    """The one operator identity recorded and shown everywhere (history, revisions.log,
    host locks, the TUI header): ``SHIPDECK_OPERATOR``, else ``confirmed`` (the operator
    the relay confirmed for the token), else ``user@hostname``."""
    from engine.deploy import default_operator

    name = os.environ.get("SHIPDECK_OPERATOR", "").strip()
    if name:
        if confirmed and confirmed != name:
            _err(
                f"operator {name!r} (SHIPDECK_OPERATOR); the relay knows this token as"
                f" {confirmed!r}, which is what the room's chat and lock show"
            )
        return name
    return confirmed or default_operator()


async def relay_operator(
    url: str, room: str, token: str | None, timeout: float = 5.0
) -> str | None:
    """Who the relay says ``token`` belongs to (one short connection), or None when it
    cannot be asked (no token, relay client missing, unreachable, refused)."""
    if not token:
        return None
    try:
        from relay.client import RelayClient, RelayError
    except ImportError:
        return None
    client = RelayClient(url, room, token, snapshot=False, reconnect=False)
    try:
        await client.start(timeout=timeout)
        return client.operator
    except RelayError:
        return None
    finally:
        await client.close(flush=0)


def relay_token(config: Any) -> str | None:
    """The relay token of a config: ``$<relay.token_env>``, else ``$SHIPDECK_TOKEN``."""
    env = getattr(config.relay, "token_env", "") or "SHIPDECK_TOKEN"
    return os.environ.get(env) or os.environ.get("SHIPDECK_TOKEN")


async def config_operator(config: Any, args: argparse.Namespace | None = None) -> str:
    """:func:`resolve_operator` for a config, asking its relay (when configured and not
    ``--without-relay``) who the token belongs to."""
    confirmed = None
    if config.relay is not None and not getattr(args, "without_relay", False):
        confirmed = await relay_operator(config.relay.url, config.relay.room, relay_token(config))
    return resolve_operator(confirmed)


class _HeadlessPrompter:
    """Asks on the terminal when there is one; otherwise declines."""

    def __init__(self, interactive: bool):
        self.interactive = interactive

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool:
        if not self.interactive:
            return False
        answer = await _ask(f"{host}: unknown host key {key_type} {fingerprint}. Trust it? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    async def ask_password(self, host: str, user: str) -> str | None:
        if not self.interactive:
            return None
        return await _ask(f"password for {user}@{host}: ", secret=True)

    async def ask_passphrase(self, path: str) -> str | None:
        if not self.interactive:
            return None
        return await _ask(f"passphrase for the key {path}: ", secret=True)


def _ask(prompt: str, *, secret: bool = False) -> asyncio.Future[str]:
    """Read one answer line from the terminal without a thread: the event loop watches
    stdin, so a Ctrl-C that stops the run never waits for someone to press Enter."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    fd = sys.stdin.fileno()
    sys.stderr.write(prompt)
    sys.stderr.flush()
    saved = None
    if secret:
        try:
            import termios

            saved = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
        except (ImportError, OSError):
            saved = None
    buf = bytearray()

    def restore(_f: object = None) -> None:
        loop.remove_reader(fd)
        if saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            sys.stderr.write("\n")

    def readable() -> None:
        try:
            data = os.read(fd, 1024)
        except OSError:
            data = b""
        buf.extend(data)
        if (not data or b"\n" in buf) and not fut.done():
            fut.set_result(bytes(buf).split(b"\n", 1)[0].decode(errors="replace"))

    loop.add_reader(fd, readable)
    fut.add_done_callback(restore)
    return fut


def _interactive() -> bool:
    return (
        sys.stdin is not None
        and sys.stdin.isatty()
        and os.environ.get("CI", "").lower() not in ("true", "1")
    )


async def _run_headless(run: Any, args: argparse.Namespace) -> int:
    from engine.printer import EXIT_PIPE
    from tui.headless import HeadlessPrinter, JsonPrinter

    def on_stdout_closed() -> None:
        # like `yes | head`, but a release is never cut short: stop at a safe point
        try:
            _err(f"stdout closed: stopping at a safe point (`shipdeck show {run.deploy_id}`)")
        except OSError:
            pass
        run.abort(reason="stdout closed (its reader went away)")

    printer = (
        JsonPrinter(on_closed=on_stdout_closed)
        if args.json
        else HeadlessPrinter(verbose=getattr(args, "verbose", False), on_closed=on_stdout_closed)
    )
    run.subscribe(printer)
    loop = asyncio.get_running_loop()
    presses = [0]

    def on_sigint() -> None:
        presses[0] += 1
        if presses[0] == 1:
            _err(
                "Ctrl-C: stopping at a safe point (hosts being switched finish first; press again to see this message)"
            )
            run.abort(reason="interrupted (Ctrl-C)")
        else:
            _err(
                "still stopping safely: no host is left half-switched; waiting for in-flight steps"
            )

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_sigint)
        except (NotImplementedError, RuntimeError):
            pass

    gate_task: asyncio.Task[None] | None = None
    if getattr(run, "plan", None) is not None and any(n.kind == "gate" for n in run.plan):

        def on_gate(event: Any) -> None:
            nonlocal gate_task
            if event.type != "gate":
                return
            if _interactive():

                async def ask() -> None:
                    answer = await _ask(f"{event.key}: approve and continue? [y/N] ")
                    if answer.strip().lower() in ("y", "yes"):
                        run.approve(key=event.key)
                    else:
                        run.abort(reason=f"{event.key} not approved")

                gate_task = asyncio.ensure_future(ask())
            else:
                run.abort(reason=f"{event.key} needs an approval: pass --yes, or run interactively")

        run.subscribe(on_gate)
    result = await run.run()
    return EXIT_PIPE if printer.closed else result.exit_code


def cmd_deploy(args: argparse.Namespace) -> int:
    from engine.config import ConfigError

    try:
        config = _load(args)
        if args.dry_run:
            return asyncio.run(_dry_run(config, args))
        if not args.headless and not args.json:
            if not sys.stdout.isatty() and not os.environ.get("SHIPDECK_FORCE_TUI"):
                _err("no terminal: running headless (pass --headless to say so)")
            else:
                launch = importlib.import_module("tui.launch")
                return int(launch.run_deploy_tui(args))
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
                lambda operator: Deployment(
                    config,
                    ref=args.ref,
                    hosts=args.hosts,
                    operator=operator,
                    prompter=_HeadlessPrompter(_interactive()),
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
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE


def _relay_refused(config: Any, exc: BaseException) -> _RoomLocked:
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return _RoomLocked(
        f"relay {config.relay.url} room {config.relay.room}: {reason}; the room's lock "
        "cannot be taken (pass --without-relay to go ahead without it)"
    )


async def _relay_connect(config: Any, args: argparse.Namespace) -> Any:
    """A client connected to the config's relay room (its ``operator`` is who the relay
    says the token belongs to), or None: no ``[relay]``, or ``--without-relay`` (said on
    stderr, and recorded by the run). A relay that cannot be reached or refuses the
    token raises _RoomLocked: the room's lock is never skipped silently."""
    if config.relay is None:
        return None
    if getattr(args, "without_relay", False):
        _err(
            f"relay: not used (--without-relay): no room lease on {config.relay.room}, no watchers"
        )
        return None
    try:
        integration = importlib.import_module("relay.publish")
    except ImportError as exc:
        raise _RoomLocked(
            f"relay: cannot load the relay client ({exc}); the room's lock cannot be taken "
            "(pass --without-relay to go ahead without it)"
        ) from None
    try:
        return await integration.connect(config)
    except Exception as exc:  # unreachable, refused token, ...
        raise _relay_refused(config, exc) from None


async def _relay_publisher(config: Any, run: Any, client: Any = None) -> Any:
    """Take the room's lease over ``client`` and publish the run's events there."""
    if config.relay is None or client is None:
        return None
    integration = importlib.import_module("relay.publish")
    try:
        return await integration.attach(config, run, client=client)
    except integration.LockHeld as exc:
        holder = exc.holder or {}
        raise _RoomLocked(
            f"the room's deploy lock is held by {holder.get('operator', '?')}: {holder.get('reason', '')}"
        ) from None
    except Exception as exc:  # the connection broke while taking the lease
        raise _relay_refused(config, exc) from None


class _RoomLocked(Exception):
    pass


async def _dry_run(config: Any, args: argparse.Namespace) -> int:
    from engine.deploy import Deployment
    from engine.preflight import preflight
    from tui.render import render_tree

    d = Deployment(config, ref=args.ref, hosts=args.hosts, auto_approve=args.yes)
    for line in render_tree(d.plan, collapse_steps=True):
        print(line)
    print()
    if args.no_connect:
        return EXIT_OK
    report = await preflight(
        config, d.selected, ref=d.ref, prompter=_HeadlessPrompter(_interactive())
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return EXIT_OK if report.ok else EXIT_FAILED


async def _headless_with_relay(
    config: Any, args: argparse.Namespace, doing: str, make: Callable[[str], Any]
) -> int:
    """A headless deploy or rollback with the room: the relay first (the operator it
    confirms for the token is the identity recorded everywhere: history,
    revisions.log, host locks; a relay that is down or refuses the token stops here
    unless --without-relay), then the run built by ``make(operator)``, published."""
    try:
        client = await _relay_connect(config, args)
    except _RoomLocked as exc:
        _err(f"{exc}; not {doing}")
        return EXIT_STOPPED
    try:
        run = make(resolve_operator(getattr(client, "operator", None)))
    except BaseException:
        if client is not None:
            await client.close(flush=0)
        raise
    try:
        publisher = await _relay_publisher(config, run, client)
    except _RoomLocked as exc:
        _err(f"{exc}; not {doing}")
        return EXIT_STOPPED
    try:
        return await _run_headless(run, args)
    finally:
        if publisher is not None:
            await publisher()


def cmd_rollback(args: argparse.Namespace) -> int:
    from engine.config import ConfigError

    try:
        config = _load(args)
        from engine.deploy import Rollback

        async def main() -> int:
            return await _headless_with_relay(
                config,
                args,
                "rolling back",
                lambda operator: Rollback(
                    config,
                    to=args.to,
                    hosts=args.hosts,
                    operator=operator,
                    prompter=_HeadlessPrompter(_interactive()),
                    force_unlock=args.force_unlock,
                    without_relay=args.without_relay and config.relay is not None,
                    all_at_once=args.all_at_once,
                ),
            )

        return asyncio.run(main())
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_history(args: argparse.Namespace) -> int:
    from engine.history import History

    rows = History().list(args.n)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        print("no deploys yet")
        return EXIT_OK
    print(
        f"{'ID':<26} {'KIND':<8} {'PROJECT':<12} {'REF':<12} {'RELEASE':<26} {'STATUS':<11} {'HOSTS':<9} {'OPERATOR':<20} STARTED"
    )
    for r in rows:
        dur = f"{r['ended'] - r['started']:.1f}s" if r.get("ended") else ""
        hosts = f"{r['hosts_ok']}✓ {r['hosts_failed']}✗"
        print(
            f"{r['id']:<26} {r['kind']:<8} {r['project'][:12]:<12} {(r.get('ref') or '')[:12]:<12} "
            f"{(r.get('release_id') or '-')[:26]:<26} {r['status']:<11} {hosts:<9} {(r.get('operator') or '')[:20]:<20} "
            f"{_when(r['started'])} {dur}"
        )
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from engine.history import AmbiguousId, History

    h = History()
    try:
        r = h.find(args.deploy_id)
    except AmbiguousId as exc:
        shown = exc.candidates[:10]
        more = len(exc.candidates) - len(shown)
        _err(
            f"show: {args.deploy_id!r} matches {len(exc.candidates)} deploys; give more of"
            " the deploy or release id:\n"
            + "\n".join(
                f"  {c['id']:<26} {c['kind']:<8} release {c.get('release_id') or '-':<26}"
                f" {c['status']:<11} {_when(c['started'])}"
                for c in shown
            )
            + (f"\n  … and {more} more" if more else "")
        )
        return EXIT_USAGE
    if r is None:
        _err(f"show: no deploy or release {args.deploy_id!r} in {h.path} (see `shipdeck history`)")
        return EXIT_USAGE
    if args.json:
        print(json.dumps(r, indent=2, default=str))
        return EXIT_OK
    print(f"{r['kind']} {r['id']}")
    print(f"  project   {r['project']}")
    print(f"  ref       {r.get('ref') or '-'}  sha {(r.get('sha') or '-')[:12]}")
    print(f"  release   {r.get('release_id') or '-'}")
    print(f"  operator  {r.get('operator')}")
    print(f"  started   {_when(r['started'])}   ended {_when(r.get('ended'))}")
    print(f"  status    {r['status']} (exit {r.get('exit_code')})")
    reason = (r.get("summary") or {}).get("reason")
    if reason:
        print(f"  reason    {reason}")
    if (r.get("summary") or {}).get("relay"):
        print(f"  relay     {r['summary']['relay']}")
    print("  hosts:")
    for host in r["hosts"]:
        glyph = {"ok": "✓", "failed": "✗"}.get(host["status"], "–")
        print(f"    {glyph} {host['host']:<24} {host['status']:<10} {host.get('detail') or ''}")
    t = h.transcript(r["id"])
    if t:
        print(f"  transcript {t}")
        if args.transcript:
            from tui.render import transcript_lines

            print()
            with open(t, encoding="utf-8", errors="replace") as fh:
                for raw in fh:
                    for line in transcript_lines(raw):
                        print(line)
    elif args.transcript:
        print("  transcript (none recorded)")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from engine.config import ConfigError

    try:
        config = _load(args)
        hosts = config.select_hosts(args.hosts)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_USAGE
    from engine.preflight import download, remote_path, shown_path

    try:
        where = shown_path(remote_path(config.deploy.path, args.remote_path))
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    # first, so that `| head -1` and a slow fleet both show what is being fetched from where
    print(
        f"download {where} from {len(hosts)} host(s) into {Path(args.dest) / '<host>'}/",
        flush=True,
    )
    results = asyncio.run(
        download(
            config,
            hosts,
            args.remote_path,
            Path(args.dest),
            prompter=_HeadlessPrompter(_interactive()),
        )
    )
    failed = 0
    for name, (ok, text) in results.items():
        print(f"{'✓' if ok else '✗'} {name}: {text}")
        failed += not ok
    return EXIT_OK if not failed else (EXIT_FAILED if failed < len(results) else EXIT_STOPPED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shipdeck", description="Release code to a fleet over SSH, from the terminal."
    )
    parser.add_argument("--version", action="version", version="shipdeck 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("deploy", help="deploy a git ref to the fleet (TUI, or --headless)")
    _add_config(p)
    p.add_argument("--ref", help="branch, tag or sha (default: project.ref)")
    p.add_argument("--hosts", metavar="PATTERN", help="comma-separated globs of groups or hosts")
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
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("rollback", help="switch current back to the previous release (or --to)")
    _add_config(p)
    p.add_argument("--to", metavar="RELEASE_ID")
    p.add_argument("--hosts", metavar="PATTERN")
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
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", help="list past deploys and rollbacks")
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser(
        "show",
        help="one deploy with per-host results",
        description="One deploy or rollback: what, by whom, and each host's outcome. ID is"
        " a deploy id, a release id (the deploy that made it) or a unique prefix of either.",
    )
    p.add_argument("deploy_id", metavar="ID", help="deploy id, release id, or a unique prefix")
    p.add_argument("--transcript", action="store_true", help="then every event of the run, as text")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "download",
        help="fetch a file (a log) from every host into DEST/<host>/",
        description="Fetch REMOTE_PATH from every selected host into DEST/<host>/. A relative"
        " path is under deploy.path (shared/log/app.log), ~/... under the login home;"
        " absolute paths are taken as they are.",
    )
    _add_config(p)
    p.add_argument(
        "remote_path",
        metavar="REMOTE_PATH",
        help="relative to deploy.path (e.g. shared/log/app.log), ~/..., or absolute",
    )
    p.add_argument("--dest", default=".")
    p.add_argument("--hosts", metavar="PATTERN")
    p.set_defaults(func=cmd_download)

    for module in ("relay.cli", "tui.launch"):
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            if exc.name != module:
                raise
            continue
        mod.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return EXIT_STOPPED
    except BrokenPipeError:  # `shipdeck history | head`: the reader went away
        from engine.printer import EXIT_PIPE, stdout_gone

        stdout_gone()
        return EXIT_PIPE


def run() -> None:
    """The ``shipdeck`` command: :func:`main`, then exit without tearing the interpreter
    down (every file is closed and every subprocess waited for by then; module teardown
    of asyncssh, cryptography and GitPython would add tens of milliseconds to every
    command)."""
    code = main()
    if os.environ.get("SHIPDECK_SLOW_EXIT"):
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = 141  # a closed pipe (engine.printer.EXIT_PIPE): nothing more can be said
    os._exit(code)


if __name__ == "__main__":
    run()

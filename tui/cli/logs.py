"""``shipdeck logs``: one file's tail on every selected host, merged in arrival
order, each line tagged with its host; ``--follow`` until Ctrl-C, reconnecting a
host that drops. No textual."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any

from engine.errors import ExitCode
from tui.cli.common import add_config, add_hosts, err, load
from tui.cli.prompt import interactive, prompter


def add_parsers(sub: Any) -> None:
    """Register ``logs``."""
    p = sub.add_parser(
        "logs",
        help="tail a file (a log) on every host, merged and host-tagged",
        description="Print the last lines of PATH on every selected host, each tagged with its"
        " host, merged in arrival order. PATH is relative to deploy.path"
        " (shared/log/app.log), ~/... under the login home, or absolute. --follow goes on"
        " until Ctrl-C over one connection per host; a host that disconnects is marked and"
        " connected again. At a terminal --follow opens the TUI's fleet log instead (filter,"
        " search, marks; q quits; --plain prints). Exit 0, or 1 if a host's file could not"
        " be read.",
    )
    add_config(p)
    p.add_argument("path", metavar="PATH", help="relative to deploy.path, ~/..., or absolute")
    add_hosts(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    p.add_argument("--lines", "-n", type=int, default=10, metavar="N", help="last N lines (10)")
    p.add_argument("--grep", metavar="RE", help="only lines matching this regular expression")
    p.add_argument(
        "--plain",
        action="store_true",
        help="print lines even at a terminal (where --follow otherwise opens the TUI's"
        " fleet log; q stops)",
    )
    p.add_argument("--no-mouse", action="store_true", help="TUI: do not capture the mouse")
    p.set_defaults(func=cmd_logs)


class _Out:
    """Writes tagged lines; after stdout's reader went away (``| head``), nothing."""

    def __init__(self, pattern: re.Pattern[str] | None) -> None:
        self.pattern = pattern
        #: masks the app's secrets ([secrets]) in what the hosts print
        self.redact: Callable[[str], str] = str
        self.gone = False
        self.task: Any = None  # the tail, ended when stdout's reader goes away

    def line(self, host: str, stream: str, text: str) -> None:
        if self.pattern is not None and not self.pattern.search(text):
            return
        from tui.cli.exec import line_text

        self._write(line_text(host, stream, self.redact(text)))

    def note(self, host: str, text: str) -> None:
        self._write(f"{host} ~ {text}")

    def _write(self, text: str) -> None:
        if self.gone:
            return
        try:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        except OSError as exc:
            from tui.pipes import is_broken_pipe, stdout_gone

            if not is_broken_pipe(exc):
                raise
            self.gone = True
            stdout_gone()
            if self.task is not None:  # nobody reads the tail: end it
                self.task.cancel()


def cmd_logs(args: argparse.Namespace) -> int:
    import asyncio

    from engine.appsecrets import SecretsError, redactor_for
    from engine.fleetlogs import tail_fleet

    ready = _prepare(args)
    if isinstance(ready, int):
        return ready
    pattern, config, specs = ready
    if args.follow and not args.plain and interactive() and sys.stdout.isatty():
        return _tui(config, args)
    out = _Out(pattern)

    async def go() -> dict[str, str] | None:
        out.task = asyncio.current_task()
        try:
            out.redact = (await redactor_for(config)).text
        except SecretsError as exc:
            err(f"logs: {exc}; not tailing (the lines could not be masked)")
            return None
        return await tail_fleet(
            config, specs, args.path, lines=args.lines, follow=args.follow,
            on_line=out.line, on_note=out.note, prompter=prompter(),
        )  # fmt: skip

    try:
        failed = asyncio.run(go())
    except KeyboardInterrupt:  # Ctrl-C: how a follow ends
        return ExitCode.PIPE if out.gone else ExitCode.OK
    except asyncio.CancelledError:
        return ExitCode.PIPE
    if failed is None:
        return ExitCode.STOPPED
    if out.gone:
        return ExitCode.PIPE
    for host, why in failed.items():
        err(f"logs: {host}: {why}")
    return ExitCode.FAILED if failed else ExitCode.OK


def _prepare(args: argparse.Namespace) -> tuple[re.Pattern[str] | None, Any, list[Any]] | int:
    """The --grep pattern, the config and the selected hosts; or the usage exit code
    after saying what is wrong."""
    from engine.config import ConfigError
    from engine.remote.tail import file_sh

    try:
        pattern = re.compile(args.grep) if args.grep else None
    except re.error as exc:
        err(f"logs: --grep {args.grep!r}: {exc}")
        return ExitCode.USAGE
    if args.lines < 0:
        err(f"logs: --lines {args.lines}: expected a number >= 0")
        return ExitCode.USAGE
    try:
        file_sh(args.path)
        config = load(args)
        return pattern, config, config.select_hosts(args.hosts)
    except (ConfigError, ValueError) as exc:
        err(str(exc))
        return ExitCode.USAGE


def _tui(config: Any, args: argparse.Namespace) -> int:
    """``shipdeck logs --follow`` at a terminal: the TUI, its fleet log following the
    file on every selected host (a disconnected host marked and reconnected); q quits."""
    from tui.app import ShipdeckApp
    from tui.backend import EngineBackend

    backend = EngineBackend(config, hosts=args.hosts)
    tail = {"path": args.path, "lines": args.lines, "follow": True, "grep": args.grep}
    app = ShipdeckApp(backend, operator=backend.operator, tail=tail)
    app.run(mouse=not args.no_mouse)
    return ExitCode.OK

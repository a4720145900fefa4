"""``shipdeck exec``: run a command on the selected hosts (in ``current``, or
``--cwd``), wave by wave under the failure budget; every line of output tagged with
its host, then each host's exit status and duration. Recorded in history (with the
transcript) and in each host's ``revisions.log`` as ``exec``. No textual."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.errors import ExitCode
from tui.cli.common import add_config, add_hosts, err, load
from tui.cli.prompt import interactive, prompter

#: control characters a host's output may not send to our terminal (tab stays)
_CONTROL = {c: "?" for c in (*range(0, 9), *range(10, 32), 127, 0x9B)}


def add_parsers(sub: Any) -> None:
    """Register ``exec``."""
    p = sub.add_parser(
        "exec",
        help="run a command on the selected hosts (in current, or --cwd)",
        description="Run COMMAND with /bin/sh on every selected host, in <deploy.path>/current"
        " (or --cwd: relative to deploy.path, ~/... under the login home, or absolute), stdin"
        " from /dev/null. Output lines are tagged with their host ('|' stdout, '!' stderr),"
        " then each host's exit status and duration. Waves (--batches) and deploy.max_fail"
        " apply. Exit 0 only if every host returned 0; 1 if some did not; 3 if the failure"
        " budget stopped it.",
        usage="shipdeck exec [-c FILE] [--hosts PATTERN] [--parallel N] [--cwd DIR]"
        " [--batches SIZE ...] [--json] [--yes] -- COMMAND ...",
    )
    add_config(p)
    add_hosts(p)
    p.add_argument(
        "--parallel", type=int, metavar="N", help="hosts at once (default: deploy.parallel)"
    )
    p.add_argument("--cwd", metavar="DIR", help="where to run (default: current)")
    p.add_argument("--batches", nargs="+", metavar="SIZE", help="wave sizes: counts or %%")
    p.add_argument("--json", action="store_true", help="every event as one JSON line")
    p.add_argument("--yes", "-y", action="store_true", help='skip deploy.confirm_exec = "typed"')
    p.add_argument("command", nargs="*", metavar="COMMAND", help="after --: the command line")
    p.set_defaults(func=cmd_exec)


def _checked(args: argparse.Namespace) -> str | None:
    """The command line, or None after saying on stderr what is wrong."""
    from engine.config import parse_size

    words = list(args.command)
    if words[:1] == ["--"]:
        words = words[1:]
    if not " ".join(words).strip():
        err("exec: no command (usage: shipdeck exec [--hosts PATTERN] -- COMMAND ...)")
        return None
    if args.parallel is not None and args.parallel < 1:
        err(f"exec: --parallel {args.parallel}: expected a number >= 1")
        return None
    for size in args.batches or ():
        try:
            if parse_size(size)[0] <= 0:
                raise ValueError(f'"{size}" is an empty wave')
        except ValueError as exc:
            err(f"exec: --batches: {exc}")
            return None
    return " ".join(words)


def cmd_exec(args: argparse.Namespace) -> int:
    import asyncio

    from engine.config import ConfigError

    command = _checked(args)
    if command is None:
        return ExitCode.USAGE
    try:
        config = load(args)
        specs = config.select_hosts(args.hosts)
    except ConfigError as exc:
        err(str(exc))
        return ExitCode.USAGE
    if config.deploy.confirm_exec == "typed" and not args.yes:
        refused = _confirm(config, len(specs), command)
        if refused is not None:
            return refused
    return asyncio.run(_run(config, specs, command, args))


def _confirm(config: Any, n: int, command: str) -> int | None:
    """``deploy.confirm_exec = "typed"``: the host count typed at a terminal, or None
    when confirmed; else the exit code."""
    if not interactive():
        err(f'exec: {config.path}: deploy.confirm_exec = "typed": pass --yes, or run at a terminal')
        return ExitCode.USAGE
    import asyncio

    from tui.cli.prompt import ask

    async def answer() -> str:
        return await ask(f"run {command!r} on {n} host(s)? type {n} to confirm: ")

    if asyncio.run(answer()).strip() != str(n):
        err("exec: not confirmed; nothing ran")
        return ExitCode.STOPPED
    return None


def line_text(host: str, stream: str, text: str) -> str:
    """One output line as printed: ``<host> | text`` (stderr: ``<host> ! text``),
    control characters shown as ``?``."""
    mark = "!" if stream == "stderr" else "|"
    return f"{host} {mark} {text.translate(_CONTROL)}"


class _Printer:
    """Prints the exec's events (text or JSON lines) and writes its transcript. Text:
    each output line tagged with its host, each host's outcome, the summary (the
    plan, the run's and waves' statuses only in JSON)."""

    def __init__(self, as_json: bool, transcript: Any) -> None:
        from engine.state import RunState

        self.as_json = as_json
        self.transcript = transcript
        self.gone = False  # stdout's reader went away: the run goes on, quietly
        self.state = RunState()  # the plan's host names, for a key

    def __call__(self, event: Any) -> None:
        self.transcript(event)
        self.state.apply(event)
        if self.gone:
            return
        try:
            self._print(event)
        except OSError as exc:  # `shipdeck exec -- ... | head`: the reader went away
            from tui.pipes import is_broken_pipe, stdout_gone

            if not is_broken_pipe(exc):
                raise
            self.gone = True
            stdout_gone()

    def _print(self, event: Any) -> None:
        if self.as_json:
            sys.stdout.write(event.dumps() + "\n")
        elif event.type == "log":
            sys.stdout.write(line_text(self._host(event.key), event.stream, event.text) + "\n")
        elif event.type == "status":
            node = self.state.plan.nodes.get(event.key)
            if node is None or node.kind != "host" or event.status == "running":
                return
            glyph = {"ok": "✓", "failed": "✗"}.get(event.status, "-")
            sys.stdout.write(f"{glyph} {node.label}: {event.detail or event.status}\n")
        elif event.type == "finished":
            s = event.report
            why = f" ({s.reason})" if s.reason else ""
            sys.stdout.write(f"{s.ok} ok, {s.failed} failed, {s.skipped} skipped{why}\n")
        else:
            return
        sys.stdout.flush()

    def _host(self, key: str) -> str:
        node = self.state.plan.nodes.get(key)
        return node.label if node is not None else key


async def _run(config: Any, specs: list[Any], command: str, args: argparse.Namespace) -> int:
    from engine.fleetexec import new_exec_id, record, run_exec
    from engine.history import History, TranscriptWriter
    from engine.operator import default_operator

    exec_id, operator = new_exec_id(), default_operator()
    history = History()
    history.start(exec_id, "exec", config.project.name, "", operator, str(config.path))
    transcript = TranscriptWriter(history, exec_id)
    printer = _Printer(args.json, transcript)
    if not args.json:
        where = args.cwd or "current"
        print(f"exec {command!r} on {len(specs)} host(s) in {where} ({exec_id})", flush=True)
    result = None
    try:
        result = await run_exec(
            config, specs, command, emit=printer, exec_id=exec_id, operator=operator,
            cwd=args.cwd, parallel=args.parallel,
            batches=tuple(args.batches) if args.batches else None, prompter=prompter(),
        )  # fmt: skip
    finally:
        transcript.close()
        record(history, exec_id, command, args.cwd, result)
    code = int(result.exit_code) if result else int(ExitCode.STOPPED)
    return ExitCode.PIPE if printer.gone else code

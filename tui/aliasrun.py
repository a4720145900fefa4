"""What an ``[aliases]`` entry does when chosen in the TUI's command palette.

:func:`alias_action` parses the alias's words with the ``shipdeck`` parser itself:
``exec`` runs in the TUI (its confirmation, its tree), ``logs`` tails into the fleet
log, ``status`` opens the fleet status screen; any other command runs as
``shipdeck <words>`` in a subprocess, its output into the fleet log. No textual.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

__all__ = ["AliasAction", "alias_action"]


@dataclass(frozen=True)
class AliasAction:
    """One alias, understood: ``kind`` is exec, logs, status or command (a
    subprocess); ``error`` says why its words do not parse (then it does nothing)."""

    name: str
    words: tuple[str, ...]
    kind: str = "command"
    hosts: str | None = None
    command: str = ""  # exec: the command line
    cwd: str | None = None
    path: str = ""  # logs
    lines: int = 10
    follow: bool = True
    grep: str | None = None
    error: str = ""


def alias_action(name: str, words: list[str]) -> AliasAction:
    """What ``name`` (expanding to ``words``) does in the TUI (see the module docstring)."""
    from tui.cli import build_parser

    base = AliasAction(name, tuple(words))
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(list(words))
    except SystemExit:
        why = stderr.getvalue().strip().splitlines()
        return AliasAction(name, tuple(words), error=(why[-1] if why else "does not parse"))
    # by the function it runs: exec's own positional COMMAND shares the name ``command``
    command = getattr(getattr(args, "func", None), "__name__", "").removeprefix("cmd_")
    hosts = getattr(args, "hosts", None)
    if command == "exec":
        line = list(args.command)
        if line[:1] == ["--"]:
            line = line[1:]
        return AliasAction(
            name, base.words, "exec", hosts=hosts, command=" ".join(line), cwd=args.cwd
        )
    if command == "logs":
        return AliasAction(
            name, base.words, "logs", hosts=hosts, path=args.path, lines=args.lines,
            follow=bool(args.follow), grep=args.grep,
        )  # fmt: skip
    if command == "status":
        return AliasAction(name, base.words, "status", hosts=hosts)
    return base

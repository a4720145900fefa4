"""Plain-text output for headless runs (``deploy --headless``, ``rollback --headless``):
one line per stage change, or every event as a JSON line. No terminal UI library.

The state comes from the one reducer (:class:`engine.state.RunState`); the words from
:mod:`tui.render`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from engine.events import RUNNING, SKIPPED, WAITING, Event, LogLine, NodeStatus
from engine.state import RunState
from tui.pipes import is_broken_pipe, stdout_gone
from tui.render import headless_lines


class HeadlessPrinter:
    """Prints one line per node status change, plus failures' output (every log line
    with ``verbose``)."""

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        verbose: bool = False,
        color: bool | None = None,
        on_closed: Callable[[], None] | None = None,
    ):
        self.out = out or sys.stdout
        self.verbose = verbose
        self.state = RunState()
        self.on_closed = on_closed
        #: the reader of ``out`` went away (``| head``): nothing more is written
        self.closed = False

    @property
    def plan(self):
        return self.state.plan if self.state.deploy_id else None

    def _write(self, text: str) -> None:
        self.closed = _write_line(self, text)

    def __call__(self, event: Event) -> None:
        duration = None
        if isinstance(event, NodeStatus):
            node = self.state.plan.nodes.get(event.key)
            seen = node.started if node is not None else None
            self.state.apply(event)
            if event.status == SKIPPED and not event.detail and event.key.endswith("/rollback"):
                return  # the rollback step a host never needed
            if event.status in (RUNNING, WAITING):
                if event.status == WAITING or self.verbose:
                    self._write(headless_lines(event)[0])
                return
            if seen is not None:
                duration = event.at - seen
        else:
            self.state.apply(event)
            if isinstance(event, LogLine) and not (self.verbose or event.stream == "stderr"):
                return
        for line in headless_lines(event, duration=duration):
            self._write(line)


class JsonPrinter:
    """Prints every event as one JSON line."""

    def __init__(self, out: TextIO | None = None, *, on_closed: Callable[[], None] | None = None):
        self.out = out or sys.stdout
        self.on_closed = on_closed
        self.closed = False

    def __call__(self, event: Event) -> None:
        self.closed = _write_line(self, event.dumps())


def _write_line(printer: HeadlessPrinter | JsonPrinter, text: str) -> bool:
    """Write and flush one line; returns whether the output is closed. The first time
    the reader is found gone, stdout is pointed at /dev/null and ``on_closed`` runs
    (once: it may emit events, which come back here and are dropped)."""
    if printer.closed:
        return True
    try:
        printer.out.write(text + "\n")
        printer.out.flush()
        return False
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and not is_broken_pipe(exc):
            raise
    printer.closed = True
    if printer.out is sys.stdout:
        stdout_gone()
    if printer.on_closed is not None:
        printer.on_closed()
    return True

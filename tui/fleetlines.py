"""The merged fleet log's lines: every host's output in arrival order, bounded.

A :class:`FleetLines` keeps a ring of :class:`FleetLine` (at most ``max_lines``
lines and ``max_bytes`` bytes of text; a line longer than ``line_chars`` is cut),
the lines a filter lets through (``shown``), and a search over those. No textual:
the widget (tui/widgets/fleet_log.py) draws ``shown`` and asks for matches.

A filter is words separated by spaces: a status word (``failed``, ``running``,
``ok`` …) keeps the lines of hosts in that status now; any other word is a glob on
the host's name (a word without ``* ? [`` matches inside the name). Lines pass when
they match one of the globs (if any) and one of the statuses (if any). A mark
(:meth:`FleetLines.mark`) always passes.
"""

from __future__ import annotations

import fnmatch
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.events import STATUSES

MAX_LINES = 20_000
MAX_BYTES = 4 * 1024 * 1024
LINE_CHARS = 1_000
#: the stream of a divider inserted by :meth:`FleetLines.mark`
MARK = "mark"
#: the stream of a note about a host (disconnected, reconnected)
NOTE = "note"

StatusOf = Callable[[str], "str | None"]


@dataclass(slots=True)
class FleetLine:
    seq: int
    at: float
    host: str  # "" for a stage's line or a mark
    step: str
    stream: str  # stdout, stderr, info, note, mark
    text: str


@dataclass(frozen=True)
class LineFilter:
    """A parsed filter (see the module docstring); the empty filter passes all."""

    globs: tuple[str, ...] = ()
    statuses: frozenset[str] = frozenset()
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> LineFilter:
        globs, statuses = [], set()
        for word in text.split():
            if word in STATUSES:
                statuses.add(word)
            else:
                globs.append(word if any(c in word for c in "*?[") else f"*{word}*")
        return cls(tuple(globs), frozenset(statuses), " ".join(text.split()))

    @property
    def empty(self) -> bool:
        return not self.globs and not self.statuses

    def passes(self, line: FleetLine, status_of: StatusOf) -> bool:
        if line.stream == MARK or self.empty:
            return True
        host = line.host
        if self.globs and not any(fnmatch.fnmatchcase(host, g) for g in self.globs):
            return False
        return not self.statuses or status_of(host) in self.statuses


def _no_status(host: str) -> str | None:
    return None


class FleetLines:
    """The ring, the filtered view and the search (see the module docstring)."""

    def __init__(
        self,
        *,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_BYTES,
        line_chars: int = LINE_CHARS,
    ) -> None:
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.line_chars = line_chars
        self.lines: deque[FleetLine] = deque()
        self.shown: deque[FleetLine] = deque()
        self.size = 0  # bytes of text kept (sum of the kept lines' lengths)
        self.seq = 0
        self.filter = LineFilter()
        self.status_of: StatusOf = _no_status
        self.search = ""
        #: how many shown lines were dropped off the top by the last add (the view
        #: keeps its place when scrolled up)
        self.dropped_shown = 0

    # -- adding -------------------------------------------------------------------

    def add(self, host: str, step: str, stream: str, text: str, at: float) -> FleetLine:
        """Append one line; return it (older lines go past the bounds)."""
        self.seq += 1
        if len(text) > self.line_chars:
            text = text[: self.line_chars - 1] + "…"
        line = FleetLine(self.seq, at, host, step, stream, text)
        self.lines.append(line)
        self.size += len(text) + len(host) + len(step) + 32
        if self.filter.passes(line, self.status_of):
            self.shown.append(line)
        self._bound()
        return line

    def extend(self, items: Iterable[tuple[str, str, str, str, float]]) -> int:
        """Append many ``(host, step, stream, text, at)``; how many."""
        self.dropped_shown = 0
        n = 0
        dropped = 0
        for host, step, stream, text, at in items:
            self.add(host, step, stream, text, at)
            dropped += self.dropped_shown
            n += 1
        self.dropped_shown = dropped
        return n

    def mark(self, at: float, note: str = "") -> FleetLine:
        """A divider: ``mark HH:MM:SS`` (and the note), shown whatever the filter."""
        return self.add("", "", MARK, note, at)

    def _bound(self) -> None:
        lines, shown = self.lines, self.shown
        dropped = 0
        while len(lines) > 1 and (len(lines) > self.max_lines or self.size > self.max_bytes):
            old = lines.popleft()
            self.size -= len(old.text) + len(old.host) + len(old.step) + 32
            if shown and shown[0] is old:
                shown.popleft()
                dropped += 1
        self.dropped_shown = dropped

    def clear(self) -> None:
        self.lines.clear()
        self.shown.clear()
        self.size = 0

    # -- filter -------------------------------------------------------------------

    def set_filter(self, text: str, status_of: StatusOf | None = None) -> None:
        """Show only the lines ``text`` lets through (see the module docstring)."""
        self.filter = LineFilter.parse(text)
        if status_of is not None:
            self.status_of = status_of
        self.refilter()

    def refilter(self) -> bool:
        """Apply the filter again (hosts' statuses move on); whether the view changed."""
        f, status_of = self.filter, self.status_of
        if f.empty:
            shown = deque(self.lines)
        else:
            shown = deque(line for line in self.lines if f.passes(line, status_of))
        changed = len(shown) != len(self.shown) or (
            bool(shown) and (shown[0] is not self.shown[0] or shown[-1] is not self.shown[-1])
        )
        self.shown = shown
        return changed

    @property
    def filtered(self) -> bool:
        return not self.filter.empty

    # -- search -------------------------------------------------------------------

    def matches(self, line: FleetLine) -> bool:
        s = self.search
        return bool(s) and (s in line.text.lower() or s in line.host.lower())

    def find(self, start: int, forward: bool = True) -> int | None:
        """The index in ``shown`` of the next line (after ``start``; before it when not
        ``forward``) that holds the search text, wrapping around; None if none does."""
        if not self.search or not self.shown:
            return None
        shown = self.shown
        n = len(shown)
        step = 1 if forward else -1
        i = start
        for _ in range(n):
            i = (i + step) % n
            if self.matches(shown[i]):
                return i
        return None

    def count_matches(self) -> int:
        return sum(1 for line in self.shown if self.matches(line)) if self.search else 0

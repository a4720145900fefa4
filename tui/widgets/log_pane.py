"""Log of the selected node (a step, a host with all its steps, or a stage).

A ``Log`` with ``max_lines``; lines arrive in batches from the app's flush (one
``write_lines`` per flush, only the tail of an oversized batch).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import Log, Static

from engine.events import FAILED
from tui.labels import GLYPH
from tui.model import DeckModel, LogEntry

MAX_LINES = 2000
MAX_BATCH = 500


class LogPane(Vertical):
    DEFAULT_CSS = """
    LogPane > #log-title { height: auto; max-height: 6; padding: 0 1; }
    LogPane > Log { height: 1fr; padding: 0 0 0 1; }
    """

    def __init__(self, model: DeckModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.key: str | None = None
        self.last_seq = 0
        self.placeholder = False
        self._title_plain = ""

    def compose(self) -> ComposeResult:
        yield Static("log", id="log-title")
        yield Log(max_lines=MAX_LINES, auto_scroll=True, id="log")

    @property
    def log_widget(self) -> Log:
        return self.query_one("#log", Log)

    def _prefix(self, entry: LogEntry) -> str:
        key = self.key or ""
        rel = entry.key[len(key) + 1 :] if entry.key.startswith(key + "/") else ""
        mark = "!" if entry.stream == "stderr" else ("·" if entry.stream == "info" else " ")
        return f"{rel} {mark} " if rel else f"{mark} "

    def _lines(self, entries: list[LogEntry]) -> list[str]:
        prefix = self._prefix
        return [prefix(e) + e.text for e in entries]

    def show(self, key: str | None) -> None:
        """Show the log of ``key`` (its own lines and its descendants')."""
        self.key = key
        node = self.model.plan.nodes.get(key) if key else None
        try:
            title = self.query_one("#log-title", Static)
        except NoMatches:  # the app is closing: its widgets are being removed
            return
        if node is None:
            title.update("log")
        else:
            text = self.title_for(key)
            self._title_plain = text.plain
            title.update(text)
        log = self.log_widget
        log.clear()
        entries = self.model.log_for(key)[-MAX_LINES:]
        self.last_seq = entries[-1].seq if entries else self.model.seq
        self.placeholder = not entries
        if entries:
            log.write_lines(self._lines(entries))
        elif node is not None:
            log.write_line(f"(no output yet for {node.label})")

    def title_for(self, key: str) -> Text:
        """``log · <key>`` and, for a failed node, its whole reason (wrapped): the tree
        line has room for a glimpse only."""
        node = self.model.plan.nodes[key]
        text = Text()
        text.append(f"log · {key}")
        if node.status == FAILED and node.detail:
            text.append(f"\n{GLYPH[FAILED]} {node.detail}", style="bold red")
        return text

    def refresh_title(self) -> None:
        """After a flush: the shown node may have failed since."""
        if self.key is None or self.key not in self.model.plan.nodes:
            return
        title = self.query_one("#log-title", Static)
        text = self.title_for(self.key)
        if text.plain != self._title_plain:
            self._title_plain = text.plain
            title.update(text)

    def add(self, entries: list[LogEntry]) -> None:
        """Append a flush's new lines that belong to the shown node."""
        key = self.key
        if key is None or not entries:
            return
        prefix = key + "/"
        mine = [
            e
            for e in entries
            if e.seq > self.last_seq and (e.key == key or e.key.startswith(prefix))
        ]
        if not mine:
            return
        if self.placeholder:
            self.log_widget.clear()
            self.placeholder = False
        self.last_seq = mine[-1].seq
        self.log_widget.write_lines(self._lines(mine[-MAX_BATCH:]))

"""Two-line header: who/what (project, ref → sha, release, operator, relay) and state."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class DeckHeader(Static):
    DEFAULT_CSS = """
    DeckHeader { height: 2; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def show(self, identity: Text, state: Text) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append_text(identity)
        text.append("\n")
        text.append_text(state)
        self.update(text, layout=False)  # fixed height: no layout pass per flush

"""Help: every key, what the glyphs mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.labels import GLYPH, STYLE

KEYS = [
    ("d", "deploy: shows the plan, Enter confirms"),
    ("a", "abort the running deploy (asks first; stops at a safe point)"),
    ("r", "roll back to an earlier release"),
    ("g", "approve the waiting gate"),
    ("/", "filter hosts: name glob or status (failed, running…)"),
    ("f", "follow: keep the cursor on what is running"),
    ("c", "chat; Esc returns to the tree"),
    ("h", "history of deploys on this machine"),
    ("tab", "next pane"),
    ("↑ ↓ j k", "move in the tree; → / Enter opens a host"),
    ("ctrl+p", "command palette: every action"),
    ("q", "quit (while deploying: abort safely first)"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, what in KEYS:
            keys.add_row(key, what)
        legend = Text()
        for status, glyph in GLYPH.items():
            legend.append(glyph, style=STYLE[status])
            legend.append(f" {status}   ")
        with VerticalScroll(classes="dialog -wide"):
            yield Static("shipdeck — keys", classes="dialog-title")
            yield Static(keys)
            yield Static(Text("\nStatus", style="bold"))
            yield Static(legend)
            yield Static(
                Text(
                    "\nWave and release lines count hosts: 37/50 ✓ 1 ✗ = 37 of 50 ok, 1 failed.",
                    style="dim",
                )
            )

    def action_close(self) -> None:
        self.dismiss(None)

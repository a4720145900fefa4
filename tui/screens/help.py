"""Help: every key, what the glyphs mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui import actions
from tui.labels import GLYPH, STYLE


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, mode: str = actions.OPERATOR) -> None:
        super().__init__(classes="modal")
        self.mode = mode

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, what in actions.key_table(self.mode):
            keys.add_row(key, what)
        legend = Text()
        for status, glyph in GLYPH.items():
            legend.append(glyph, style=STYLE[status])
            legend.append(f" {status}   ")
        title = "shipdeck — keys" + (" (watching)" if self.mode == actions.SPECTATOR else "")
        with VerticalScroll(classes="dialog -wide", id="help-body"):
            yield Static(
                Text.assemble((title, "bold"), ("   ↑ ↓ scroll · esc closes", "dim")),
                classes="dialog-title",
            )
            yield Static(keys)
            yield Static(Text("\nStatus", style="bold"))
            yield Static(legend)
            yield Static(
                Text(
                    "\nWave and release lines count hosts: 37/50 ✓ 1 ✗ = 37 of 50 ok, 1 failed.",
                    style="dim",
                )
            )

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()  # ↑ ↓ pgup pgdn scroll it

    def action_close(self) -> None:
        self.dismiss(None)

"""The deck: header, stage tree | log / chat, footer; and what it says when the
terminal is too small for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Static

from tui import actions
from tui.widgets.chat_pane import ChatPane
from tui.widgets.fleet_log import FleetLogPane
from tui.widgets.footer import DeckFooter
from tui.widgets.header import DeckHeader
from tui.widgets.log_pane import LogPane
from tui.widgets.stage_tree import StageTree

if TYPE_CHECKING:
    from tui.app import ShipdeckApp

MIN_WIDTH, MIN_HEIGHT = 60, 16


class MainScreen(Screen[None]):
    """The deck: header, tree | log / chat, footer."""

    BINDINGS = actions.bindings()

    def __init__(self, deck: ShipdeckApp) -> None:
        super().__init__(id="main-screen")
        self.deck = deck

    def compose(self) -> ComposeResult:
        deck = self.deck
        self.stage_tree = StageTree(deck.model, id="tree")
        self.log_pane_w = LogPane(deck.model, id="log-pane")
        self.chat_pane_w = ChatPane(
            configured=deck.chat is not None, cursor_blink=deck.cursor_blink, id="chat-pane"
        )
        self.fleet_pane_w = FleetLogPane(
            deck.fleet_lines,
            clock=deck.clock,
            status_of=deck.host_status_lookup,
            cursor_blink=deck.cursor_blink,
            id="fleet-pane",
        )
        #: held, not queried: the header is redrawn before the screen's children mount
        self.header_w = DeckHeader(id="header")
        yield self.header_w
        with Horizontal(id="main"):
            yield self.stage_tree
            with Vertical(id="side"):
                yield self.log_pane_w
                yield self.fleet_pane_w
                yield self.chat_pane_w
        yield Static("", id="too-small")
        yield DeckFooter(compact=True)

    def on_resize(self) -> None:
        width, height = self.size
        small = width < MIN_WIDTH or height < MIN_HEIGHT
        self.set_class(small, "-too-small")
        if small:
            self.query_one("#too-small", Static).update(
                f"shipdeck needs a terminal of at least {MIN_WIDTH}×{MIN_HEIGHT}\n"
                f"(this one is {width}×{height})"
            )

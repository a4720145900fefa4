"""Chat: the room's messages and an input line."""

from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, RichLog, Static

from engine.events import ChatLine
from tui.messages import ChatSubmitted
from tui.widgets.inputs import blinking


class ChatPane(Vertical):
    DEFAULT_CSS = """
    ChatPane > #chat-title { height: 1; padding: 0 1; }
    ChatPane > RichLog { height: 1fr; scrollbar-size-vertical: 1; }
    ChatPane > Input { height: 1; padding: 0 1; }
    """

    def __init__(self, *, configured: bool, cursor_blink: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.configured = configured
        self.cursor_blink = cursor_blink
        #: the messages shown, newest last (bounded like the log widget)
        self.messages: deque[ChatLine] = deque(maxlen=500)

    def compose(self) -> ComposeResult:
        yield Static("chat", id="chat-title")
        yield RichLog(max_lines=500, wrap=True, markup=False, min_width=10, id="chat-log")
        yield blinking(
            self.cursor_blink,
            placeholder="say something (Enter to send, Esc to leave)"
            if self.configured
            else "relay not configured",
            id="chat-input",
            disabled=not self.configured,
            compact=True,
        )

    def on_mount(self) -> None:
        self.query_one(RichLog).can_focus = False
        if not self.configured:
            self.add_system(
                "relay not configured — add a [relay] section (url, room) to shipdeck.toml "
                "to talk with other operators"
            )

    def add(self, message: ChatLine) -> None:
        self.messages.append(message)
        text = Text(no_wrap=False)
        text.append(time.strftime("%H:%M ", time.localtime(message.at)), style="dim")
        if message.system:
            text.append(message.text, style="italic dim")
        else:
            text.append(message.author, style="bold cyan")
            text.append(": ")
            text.append(message.text)
        self.query_one(RichLog).write(text)

    def add_system(self, text: str) -> None:
        self.messages.append(ChatLine("", text, system=True))
        line = Text(text, style="italic dim")
        self.query_one(RichLog).write(line)

    def set_title(self, text: Text | str) -> None:
        self.query_one("#chat-title", Static).update(text)

    @on(Input.Submitted, "#chat-input")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        event.input.clear()
        if value:
            self.post_message(ChatSubmitted(value))

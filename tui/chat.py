"""The interface the relay plugs into the TUI's chat pane (no textual here).

A relay integration implements :class:`ChatBackend`; the app calls :meth:`start` with
three callbacks (called on the event loop thread) and :meth:`send` for each line the
operator types. Without a relay the app uses no backend and the pane says
"relay not configured".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from engine.events import ChatLine


@runtime_checkable
class ChatBackend(Protocol):
    """What the chat pane needs from a relay connection."""

    #: shown in the header, e.g. "relay.example.com/web-prod"
    description: str

    async def start(
        self,
        on_message: Callable[[ChatLine], None],
        on_presence: Callable[[list[str]], None],
        on_status: Callable[[str], None],
    ) -> None:
        """Connect and keep delivering until :meth:`close`.

        ``on_status`` receives "connecting", "connected", "reconnecting" or an error
        text; ``on_presence`` the operator names in the room. Raises nothing: errors
        are reported through ``on_status``.
        """

    async def send(self, text: str) -> None:
        """Post one chat line to the room (retried until acknowledged)."""

    async def close(self) -> None:
        """Disconnect."""


class LocalEcho:
    """A backend with no relay: messages stay on this screen (used by tests)."""

    description = "local"

    def __init__(self, operator: str) -> None:
        self.operator = operator
        self._on_message: Callable[[ChatLine], None] | None = None

    async def start(self, on_message, on_presence, on_status) -> None:
        self._on_message = on_message
        on_presence([self.operator])
        on_status("connected")

    async def send(self, text: str) -> None:
        if self._on_message is not None:
            self._on_message(ChatLine(self.operator, text))

    async def close(self) -> None:
        self._on_message = None

"""Messages posted inside the shipdeck app."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engine.events import ChatLine


@dataclass
class ChatReceived(Message):
    """A chat line arrived from the relay (or was echoed locally)."""

    message: ChatLine


@dataclass
class PresenceChanged(Message):
    """Who is in the relay room."""

    names: list[str]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PresenceChanged)  # a newer list supersedes an older one


@dataclass
class RelayStatus(Message):
    """The relay connection changed state ("connected", "reconnecting", an error)."""

    status: str


@dataclass
class ChatSubmitted(Message):
    """The operator typed a chat line."""

    text: str


@dataclass
class DeployDone(Message):
    """A deploy or rollback run returned."""

    status: str
    exit_code: int

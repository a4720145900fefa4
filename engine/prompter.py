"""How the engine asks the operator: the :class:`Prompter` interface, and the clock
that keeps the time spent answering out of the connect timeout."""

from __future__ import annotations

import time
from typing import Any, Protocol

__all__ = ["PromptClock", "Prompter", "ask_passphrase", "can_ask"]


class Prompter(Protocol):
    """How the engine asks the operator (the TUI shows modals; headless may use a TTY).

    A prompter with ``interactive = False`` has nobody to ask: the engine then reports
    what it would have asked instead of asking."""

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool: ...

    async def ask_password(self, host: str, user: str) -> str | None: ...

    async def ask_passphrase(self, path: str) -> str | None:
        """The passphrase of the encrypted key file ``path`` (None: not given).

        Prompters without this method are asked through ``ask_password``."""
        ...


async def ask_passphrase(prompter: Any, path: str) -> str | None:
    """Ask ``prompter`` for the passphrase of key file ``path`` (through
    ``ask_password`` when it has no ``ask_passphrase``)."""
    ask = getattr(prompter, "ask_passphrase", None)
    if ask is not None:
        return await ask(path)
    return await prompter.ask_password(f"key {path}", "passphrase")


def can_ask(prompter: Any) -> bool:
    """Whether someone is there to answer ``prompter``'s questions."""
    return prompter is not None and getattr(prompter, "interactive", True) is not False


class PromptClock:
    """Time spent waiting for the operator to answer a prompt."""

    def __init__(self) -> None:
        self.active = False
        self._spent = 0.0
        self._since = 0.0

    def start(self) -> None:
        self.active, self._since = True, time.monotonic()

    def stop(self) -> None:
        if self.active:
            self._spent += time.monotonic() - self._since
        self.active = False

    def spent(self) -> float:
        return self._spent + (time.monotonic() - self._since if self.active else 0.0)

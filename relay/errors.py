"""The relay client's errors (re-exported by :mod:`relay.client`, whose API they are).

Part of shipdeck's one error tree (:mod:`engine.errors`)::

    ShipdeckError
    └── RelayError        the relay refused a request (``code``, as in its error frames)
        ├── AuthError     the relay refused the token (HTTP 401)
        ├── ConnectFailed the relay could not be reached in time
        ├── LeaseHeld     the room's deploy lease is someone else's (``holder``)
        └── ClientClosed  the client was closed
"""

from __future__ import annotations

from typing import Any

from engine.errors import ShipdeckError

#: Error codes after which re-sending the same frame cannot help.
FINAL_ERRORS = frozenset(
    {
        "bad_json",
        "not_object",
        "bad_version",
        "unknown_type",
        "bad_field",
        "bad_event",
        "too_large",
        "not_lock_holder",
        "no_lock_holder",
        "forbidden",
        "not_approver",
    }
)


class RelayError(ShipdeckError):
    """A request refused by the relay (``code`` as in the protocol's error frames)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AuthError(RelayError):
    """The relay refused the token (HTTP 401). Retrying will not help."""


class ConnectFailed(RelayError):
    """The relay could not be reached in time."""


class LeaseHeld(RelayError):
    """The room's deploy lease is held by someone else; ``holder`` is their lease."""

    def __init__(self, holder: dict[str, Any] | None) -> None:
        who = holder.get("operator", "?") if holder else "?"
        reason = f" ({holder.get('reason')})" if holder and holder.get("reason") else ""
        super().__init__("lock_held", f"the deploy lock is held by {who}{reason}")
        self.holder = holder


class ClientClosed(RelayError):
    def __init__(self) -> None:
        super().__init__("closed", "the relay client was closed")


__all__ = ["FINAL_ERRORS", "AuthError", "ClientClosed", "ConnectFailed", "LeaseHeld", "RelayError"]

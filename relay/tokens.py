"""Operator tokens: the relay's tokens file and the client's token lookup.

The tokens file is TOML, one token per operator::

    [operators]
    alice = "token-for-alice"
    bob = { token = "token-for-bob", role = "observer" }
    carol = { token = "token-for-carol", role = "admin" }

A plain string entry is an ``operator``. Roles: ``observer`` (reads and chats),
``operator`` (also takes the deploy lock, publishes events, aborts and approves),
``admin`` (everything an operator may, and breaking another's lease).

A token is never logged, stored in the room log or echoed in a message; the relay
only ever shows the operator name it maps to.
"""

from __future__ import annotations

import hmac
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from engine.errors import ShipdeckError
from relay.protocol import RELAY_SENDER

TOKEN_ENV = "SHIPDECK_TOKEN"
OPERATOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_TOKEN_CHARS = 8
ROLES = ("observer", "operator", "admin")
DEFAULT_ROLE = "operator"


class TokensError(ShipdeckError, ValueError):
    """The tokens file is missing or invalid; the message names the file and key."""


class TokenTable:
    """Maps bearer tokens to operator names with constant-time comparison."""

    def __init__(self, operators: dict[str, Any]) -> None:
        parsed = {name: _parse_entry("<tokens>", name, entry) for name, entry in operators.items()}
        tokens = [token for token, _ in parsed.values()]
        if len(set(tokens)) != len(tokens):
            raise TokensError("two operators share the same token")
        self._entries = [(token.encode(), name) for name, (token, _) in parsed.items()]
        self._roles = {name: role for name, (_, role) in parsed.items()}

    @property
    def roles(self) -> dict[str, str]:
        """Every operator's role (a copy)."""
        return dict(self._roles)

    def role_of(self, operator: str) -> str:
        """The role of ``operator`` (``operator`` for a name the table does not hold)."""
        return self._roles.get(operator, DEFAULT_ROLE)

    def __len__(self) -> int:
        return len(self._entries)

    def operator_for_header(self, values: list[str]) -> str | None:
        """The operator an ``Authorization`` header's bearer token names (``values``:
        every such header sent; none or several name nobody)."""
        header = values[0] if len(values) == 1 else ""
        scheme, _, token = header.partition(" ")
        return self.operator_for(token.strip()) if scheme.lower() == "bearer" else None

    def operator_for(self, token: str | None) -> str | None:
        """The operator owning ``token``, or ``None``. Every entry is compared."""
        if not token:
            return None
        given = token.encode("utf-8", "surrogatepass")
        found = None
        for secret, name in self._entries:
            if hmac.compare_digest(secret, given):
                found = name
        return found


def _parse_entry(path: str, name: object, entry: object) -> tuple[str, str]:
    """``(token, role)`` of one ``[operators]`` entry: a token string, or a table
    ``{ token = "...", role = "..." }``. Raises :class:`TokensError`."""
    role = DEFAULT_ROLE
    if isinstance(entry, dict):
        unknown = sorted(set(entry) - {"token", "role"})
        if unknown:
            raise TokensError(
                f"{path}: [operators] {name}: unknown key {unknown[0]!r} (expected token, role)"
            )
        role = entry.get("role", DEFAULT_ROLE)
        if role not in ROLES:
            raise TokensError(
                f"{path}: [operators] {name}: role must be one of {', '.join(ROLES)}, not {role!r}"
            )
        entry = entry.get("token")
    _check_entry(path, name, entry)
    assert isinstance(entry, str)
    return entry, role


def _check_entry(path: str, name: object, token: object) -> None:
    if not isinstance(name, str) or not OPERATOR_RE.match(name):
        raise TokensError(
            f"{path}: [operators] {name!r}: operator names are 1-64 characters of A-Z a-z 0-9 . _ @ -"
        )
    if name == RELAY_SENDER:
        raise TokensError(f"{path}: [operators] {name!r} is reserved for the relay itself")
    if not isinstance(token, str):
        raise TokensError(f"{path}: [operators] {name}: the token must be a string")
    if (
        len(token) < MIN_TOKEN_CHARS
        or token.strip() != token
        or any(ord(c) < 33 or ord(c) > 126 for c in token)
    ):
        raise TokensError(
            f"{path}: [operators] {name}: the token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces"
        )


def load_tokens(path: str | Path) -> TokenTable:
    """Read a tokens file. Raises :class:`TokensError` with the file and key at fault."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokensError(f"{path}: no such tokens file") from None
    except OSError as exc:
        raise TokensError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TokensError(f"{path}: not valid TOML: {exc}") from None
    operators = data.get("operators")
    if not isinstance(operators, dict) or not operators:
        raise TokensError(
            f'{path}: expected an [operators] table with at least one `name = "token"` line'
        )
    for name, entry in operators.items():
        _parse_entry(str(path), name, entry)
    try:
        return TokenTable(dict(operators))
    except TokensError as exc:
        raise TokensError(f"{path}: {exc}") from None


def token_from_env(explicit: str | None = None, env: str = TOKEN_ENV) -> str | None:
    """The token given on the command line, else the one in ``$SHIPDECK_TOKEN``."""
    return explicit or os.environ.get(env) or None

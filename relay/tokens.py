"""Operator tokens: the relay's tokens file and the client's token lookup.

The tokens file is TOML, one token per operator::

    [operators]
    alice = "token-for-alice"
    bob = "token-for-bob"

A token is never logged, stored in the room log or echoed in a message; the relay
only ever shows the operator name it maps to.
"""

from __future__ import annotations

import hmac
import os
import re
import tomllib
from pathlib import Path

from engine.errors import ShipdeckError
from relay.protocol import RELAY_SENDER

TOKEN_ENV = "SHIPDECK_TOKEN"
OPERATOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_TOKEN_CHARS = 8


class TokensError(ShipdeckError, ValueError):
    """The tokens file is missing or invalid; the message names the file and key."""


class TokenTable:
    """Maps bearer tokens to operator names with constant-time comparison."""

    def __init__(self, operators: dict[str, str]) -> None:
        for name, token in operators.items():
            _check_entry("<tokens>", name, token)
        tokens = list(operators.values())
        if len(set(tokens)) != len(tokens):
            raise TokensError("two operators share the same token")
        self._entries = [(token.encode(), name) for name, token in operators.items()]

    def __len__(self) -> int:
        return len(self._entries)

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
    for name, token in operators.items():
        _check_entry(str(path), name, token)
    try:
        return TokenTable(dict(operators))
    except TokensError as exc:
        raise TokensError(f"{path}: {exc}") from None


def token_from_env(explicit: str | None = None, env: str = TOKEN_ENV) -> str | None:
    """The token given on the command line, else the one in ``$SHIPDECK_TOKEN``."""
    return explicit or os.environ.get(env) or None

"""Who the operator is, asking the relay when one is configured.

The rule itself (``SHIPDECK_OPERATOR`` > relay-confirmed name > ``user@host``) is
:mod:`engine.operator`; this module asks the relay for the middle term.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from engine.operator import resolve_operator as _rule
from tui.cli.common import err


def resolve_operator(confirmed: str | None = None) -> str:
    """The one operator identity recorded and shown everywhere (history, revisions.log,
    host locks, the TUI header): :func:`engine.operator.resolve_operator`, saying on
    stderr when ``SHIPDECK_OPERATOR`` overrides the name the relay confirmed."""
    return _rule(confirmed, warn=err)


async def relay_operator(
    url: str, room: str, token: str | None, timeout: float = 5.0
) -> str | None:
    """Who the relay says ``token`` belongs to (one short connection), or None when it
    cannot be asked (no token, relay client missing, unreachable, refused)."""
    if not token:
        return None
    try:
        from relay.client import RelayClient, RelayError
    except ImportError:
        return None
    client = RelayClient(url, room, token, snapshot=False, reconnect=False)
    try:
        await client.start(timeout=timeout)
        return client.operator
    except RelayError:
        return None
    finally:
        await client.close(flush=0)


def relay_token(config: Any) -> str | None:
    """The relay token of a config: ``$<relay.token_env>``, else ``$SHIPDECK_TOKEN``."""
    env = getattr(config.relay, "token_env", "") or "SHIPDECK_TOKEN"
    return os.environ.get(env) or os.environ.get("SHIPDECK_TOKEN")


async def config_operator(config: Any, args: argparse.Namespace | None = None) -> str:
    """:func:`resolve_operator` for a config, asking its relay (when configured and not
    ``--without-relay``) who the token belongs to."""
    confirmed = None
    if config.relay is not None and not getattr(args, "without_relay", False):
        confirmed = await relay_operator(config.relay.url, config.relay.room, relay_token(config))
    return resolve_operator(confirmed)

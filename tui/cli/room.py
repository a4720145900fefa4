"""The config's relay room for a headless deploy or rollback: connect (the relay
confirms who the token belongs to), take the room's lease, publish the run's events.

A relay that is configured but down or refusing the token stops the run unless
``--without-relay`` is given: the room's lock is never skipped silently.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from tui.cli.common import err


class RoomLocked(Exception):
    """The room's lease cannot be taken: held by someone else, or the relay is down,
    unreachable or refuses the token. The message says which and what to do."""


def _relay_refused(config: Any, exc: BaseException) -> RoomLocked:
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return RoomLocked(
        f"relay {config.relay.url} room {config.relay.room}: {reason}; the room's lock "
        "cannot be taken (pass --without-relay to go ahead without it)"
    )


async def connect(config: Any, args: argparse.Namespace) -> Any:
    """A client connected to the config's relay room (its ``operator`` is who the relay
    says the token belongs to), or None: no ``[relay]``, or ``--without-relay`` (said on
    stderr, and recorded by the run). A relay that cannot be reached or refuses the
    token raises :class:`RoomLocked`: the room's lock is never skipped silently."""
    if config.relay is None:
        return None
    if getattr(args, "without_relay", False):
        err(f"relay: not used (--without-relay): no room lease on {config.relay.room}, no watchers")
        return None
    try:
        integration = importlib.import_module("relay.publish")
    except ImportError as exc:
        raise RoomLocked(
            f"relay: cannot load the relay client ({exc}); the room's lock cannot be taken "
            "(pass --without-relay to go ahead without it)"
        ) from None
    try:
        return await integration.connect(config)
    except Exception as exc:  # unreachable, refused token, ...
        raise _relay_refused(config, exc) from None


async def publisher(config: Any, run: Any, client: Any = None) -> Any:
    """Take the room's lease over ``client`` and publish the run's events there; returns
    the coroutine function that stops publishing, or None without a client. Raises
    :class:`RoomLocked` when the lease is held or the connection broke."""
    if config.relay is None or client is None:
        return None
    integration = importlib.import_module("relay.publish")
    try:
        return await integration.attach(config, run, client=client)
    except integration.LeaseHeld as exc:
        holder = exc.holder or {}
        raise RoomLocked(
            f"the room's deploy lock is held by {holder.get('operator', '?')}: {holder.get('reason', '')}"
        ) from None
    except Exception as exc:  # the connection broke while taking the lease
        raise _relay_refused(config, exc) from None

"""Run a :class:`relay.server.Relay` until SIGTERM or SIGINT: the one serving loop behind
``shipdeck relay`` and ``python -m relay``."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from typing import Any

from engine.errors import ExitCode

log = logging.getLogger("shipdeck.relay")


def _err(message: str) -> None:
    print(f"relay: {message}", file=sys.stderr, flush=True)


async def _reach_store(relay: Any, where: str) -> bool:
    """Wait up to 10 s for a store that can be pinged (Redis may start with us)."""
    ping = getattr(relay.store, "ping", None)
    if ping is None:
        return True
    for attempt in range(50):
        try:
            await ping()
            return True
        except Exception as exc:
            if attempt == 49:
                _err(f"cannot reach {where}: {exc}")
                return False
            await asyncio.sleep(0.2)
    return False


async def serve(
    relay: Any, host: str, port: int, context: ssl.SSLContext | None, where: str, operators: int
) -> int:
    """Listen on ``host:port`` (``wss://`` with ``context``), print one line that says so
    (``shipdeck relay listening on ws://HOST:PORT (WHERE, N operators)``) and serve until
    SIGTERM/SIGINT, then tell clients to reconnect and stop. ``where`` says where the
    rooms are kept (``db FILE`` or ``redis URL``, never a password).

    Returns :class:`ExitCode` ``OK`` after a signal, ``CONNECT`` when the store cannot be
    reached or the address cannot be listened on (the reason on stderr)."""
    if not await _reach_store(relay, where):
        return ExitCode.CONNECT
    try:
        await relay.start(host, port, context)
    except OSError as exc:
        _err(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return ExitCode.CONNECT
    # before the listening line: whoever reads it may signal at once
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))
    scheme = "wss" if context else "ws"
    shown = f"[{host}]" if ":" in host else host
    print(
        f"shipdeck relay listening on {scheme}://{shown}:{relay.port} ({where}, {operators} operators)",
        flush=True,
    )
    got = await stop
    log.info("%s: telling clients to reconnect and stopping", signal.Signals(got).name)
    await relay.shutdown()
    return ExitCode.OK

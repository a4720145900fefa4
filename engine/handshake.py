"""One SSH handshake: its caps, its retries, its timeout and what it cost on the wire.

- handshakes are capped where the limit lives: at most ``ssh.max_startups`` in flight
  per sshd endpoint (see :class:`Handshakes`), plus ``ssh.max_handshakes`` over the
  fleet;
- a connection sshd resets before the handshake (MaxStartups) is tried again, like
  ssh's ConnectionAttempts;
- ``ssh.connect_timeout`` covers TCP, handshake and authentication, but not the time
  an operator spends answering a prompt;
- :class:`WireStats` counts round trips and bytes of each connection (a debug counter).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from engine.errors import AuthFailed, SSHError
from engine.prompter import PromptClock, Prompter, can_ask
from engine.sshconfig import Target

__all__ = [
    "CONNECT_ATTEMPTS",
    "CountingTunnel",
    "Handshakes",
    "WireStats",
    "client_factory",
    "connect_error",
    "handshake",
    "keepalive_lost",
    "tcp_bytes",
]

log = logging.getLogger("shipdeck.ssh")

#: tries per connection when sshd resets it before the handshake (MaxStartups)
CONNECT_ATTEMPTS = 4

Endpoint = tuple[Any, ...]


@dataclass
class WireStats:
    """What one connection cost on the wire (a debug counter).

    ``round_trips`` counts turns: a read that follows a write since the previous read
    (the client waited for the peer), plus the TCP handshake of a direct connection.
    Bytes are the SSH stream's (after encryption), both directions."""

    round_trips: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    handshake_round_trips: int = 0  # round_trips when authentication completed
    handshake_s: float = 0.0
    _waiting: bool = field(default=False, repr=False)
    _started: float = field(default=0.0, repr=False)

    def begin(self) -> None:
        """A connection attempt starts: the handshake is timed from here."""
        self._started = time.monotonic()

    def restart(self) -> None:
        """A new try of the same connection: its counts start again."""
        self.round_trips = self.bytes_in = self.bytes_out = 0

    def authenticated(self) -> None:
        """Authentication completed: the handshake's cost is what was counted so far."""
        self.handshake_round_trips = self.round_trips
        self.handshake_s = time.monotonic() - self._started

    def as_dict(self) -> dict[str, float]:
        return {
            "round_trips": self.round_trips,
            "handshake_round_trips": self.handshake_round_trips,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "handshake_s": round(self.handshake_s, 4),
        }


#: hosts listed one by one in :func:`wire_summary` (those with the most round trips)
WIRE_HOSTS_KEPT = 50


def wire_summary(stats: dict[str, WireStats], keep: int = WIRE_HOSTS_KEPT) -> dict[str, Any]:
    """What a run's connections cost, for its summary (a debug counter): the median
    and largest round trips per host, the handshake's share, the bytes both ways for
    the fleet, and per host (at most ``keep`` hosts, those with the most round trips)
    its own counts. Empty when nothing was counted."""
    if not stats:
        return {}
    trips = sorted(w.round_trips for w in stats.values())
    shakes = sorted(w.handshake_round_trips for w in stats.values())
    heavy = sorted(stats.items(), key=lambda kv: (-kv[1].round_trips, kv[0]))[:keep]
    return {
        "hosts": len(stats),
        "round_trips_median": statistics.median(trips),
        "round_trips_max": trips[-1],
        "handshake_round_trips_median": statistics.median(shakes),
        "bytes_out": sum(w.bytes_out for w in stats.values()),
        "bytes_in": sum(w.bytes_in for w in stats.values()),
        "per_host": {
            name: {"round_trips": w.round_trips, "bytes_out": w.bytes_out, "bytes_in": w.bytes_in}
            for name, w in heavy
        },
    }


class _CountingTransport:
    """The transport asyncssh writes to, counting bytes and turns."""

    def __init__(self, inner: Any, stats: WireStats):
        self._inner = inner
        self._stats = stats

    def write(self, data: bytes) -> None:
        self._stats.bytes_out += len(data)
        self._stats._waiting = True
        self._inner.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CountingProtocol:
    """Wraps asyncssh's connection protocol on its TCP (or tunnel) transport."""

    def __init__(self, inner: Any, stats: WireStats):
        self._inner = inner
        self._stats = stats

    def connection_made(self, transport: Any) -> None:
        self._inner.connection_made(_CountingTransport(transport, self._stats))

    def data_received(self, data: bytes, *args: Any) -> None:
        self._stats.bytes_in += len(data)
        if self._stats._waiting:
            self._stats.round_trips += 1
            self._stats._waiting = False
        self._inner.data_received(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CountingTunnel:
    """asyncssh's ``tunnel`` interface: open the stream (TCP, or a channel of a jump
    connection) with the protocol wrapped in counters."""

    def __init__(self, stats: WireStats, via: Any = None, addr: str | None = None):
        self.stats = stats
        self.via = via
        self.addr = addr  # resolved already (for the handshake cap): not looked up twice

    async def create_connection(self, factory: Callable[[], Any], host: str, port: int) -> Any:
        made: list[Any] = []

        def wrapped() -> _CountingProtocol:
            made.append(factory())
            return _CountingProtocol(made[0], self.stats)

        if self.via is not None:
            transport, _ = await self.via.create_connection(wrapped, host, port)
        else:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(wrapped, self.addr or host, port)
            self.stats.round_trips += 1  # the TCP handshake
        return transport, made[0]


def tcp_bytes(conn: Any) -> tuple[int, int] | None:
    """(bytes sent and acknowledged, bytes received) of a TCP connection (Linux)."""
    sock = conn.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
        return struct.unpack_from("QQ", info, 120)  # tcpi_bytes_acked, tcpi_bytes_received
    except (OSError, struct.error):
        return None


class Handshakes:
    """The handshake caps of one deploy: ``max_startups`` per endpoint (one sshd),
    ``max_handshakes`` over the fleet, with what was in flight at most (for tests
    and the debug counters) and how many connections were tried again."""

    def __init__(self, max_startups: int, max_handshakes: int) -> None:
        self.max_startups = max_startups
        self._global = asyncio.Semaphore(max_handshakes)
        self._endpoints: dict[Endpoint, asyncio.Semaphore] = {}
        self._global_now = 0
        #: handshakes in flight now / at most, per endpoint key and over the fleet
        self.in_flight: dict[Endpoint, int] = {}
        self.peak_in_flight: dict[Endpoint, int] = {}
        self.peak_global = 0
        #: connections tried again after sshd reset them before the handshake
        self.retries = 0

    @asynccontextmanager
    async def slot(self, endpoint: Endpoint) -> AsyncIterator[None]:
        """Wait for a handshake slot at ``endpoint`` and over the fleet; hold it."""
        sem = self._endpoints.setdefault(endpoint, asyncio.Semaphore(self.max_startups))
        async with sem, self._global:
            self.in_flight[endpoint] = self.in_flight.get(endpoint, 0) + 1
            self._global_now += 1
            self.peak_in_flight[endpoint] = max(
                self.peak_in_flight.get(endpoint, 0), self.in_flight[endpoint]
            )
            self.peak_global = max(self.peak_global, self._global_now)
            try:
                yield
            finally:
                self.in_flight[endpoint] -= 1
                self._global_now -= 1


def client_factory(
    keys: Any,
    files: tuple[str, ...],
    prompter: Prompter | None,
    password: str | None,
    target: Target,
    clock: PromptClock,
    lost: list[Exception],
    stats: WireStats,
) -> type:
    """asyncssh's client class for one connection: host keys decided by ``keys``
    (:class:`engine.hostkeys.HostKeys`), the password given or asked (with the time
    asked on ``clock``), why the connection ended appended to ``lost``."""

    class Client(asyncssh.SSHClient):
        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            return keys.decide(files, host, addr, port, key)

        _password_tries = 0

        def auth_completed(self) -> None:
            stats.authenticated()

        def connection_lost(self, exc: Exception | None) -> None:
            if exc is not None:
                lost.append(exc)

        async def password_auth_requested(self) -> str | None:  # type: ignore[override]
            # like ssh: the configured password once, or up to 3 prompts; then give up
            self._password_tries += 1
            if password is not None:
                return password if self._password_tries == 1 else None
            if not can_ask(prompter) or self._password_tries > 3:
                return None
            assert prompter is not None
            clock.start()
            try:
                return await prompter.ask_password(target.name, target.user)
            finally:
                clock.stop()

    return Client


async def handshake(
    client: type,
    target: Target,
    via: Any,
    options: dict[str, Any],
    *,
    stats: WireStats,
    clock: PromptClock,
    timeout: float,
    on_retry: Callable[[], None],
) -> asyncssh.SSHClientConnection:
    """Connect and authenticate within ``timeout`` seconds (time on ``clock``, an
    operator answering a prompt, not counted).

    Raises HostKeyNotVerifiable (asyncssh's: the caller says why), AuthFailed, or
    SSHError saying what went wrong with ``target``."""
    stats.begin()
    task = asyncio.ensure_future(_attempts(client, target, via, options, stats, on_retry))
    try:
        conn, _ = await _within(task, timeout, clock)
        return conn
    except asyncio.CancelledError:
        task.cancel()
        raise
    except asyncssh.HostKeyNotVerifiable:
        raise
    except (OSError, asyncssh.Error, ValueError, TypeError) as exc:  # TypeError, ValueError:
        raise connect_error(exc, target, timeout) from None  # key or option problems


async def _attempts(
    client: type,
    target: Target,
    via: Any,
    options: dict[str, Any],
    stats: WireStats,
    on_retry: Callable[[], None],
) -> Any:
    # sshd drops connections beyond its MaxStartups before the handshake (a reset,
    # nothing ran on the host): try again, like ssh's ConnectionAttempts, a few times
    # with a short random pause
    for n in range(1, CONNECT_ATTEMPTS + 1):
        stats.restart()
        try:
            return await asyncssh.create_connection(client, target.host, tunnel=via, **options)
        except (ConnectionResetError, asyncssh.ConnectionLost) as exc:
            if n == CONNECT_ATTEMPTS:
                raise
            log.info(
                "%s:%s dropped the connection before the handshake (%s); retrying",
                target.host,
                target.port,
                exc,
            )
            on_retry()
            await asyncio.sleep(0.05 * n + random.random() * 0.05)
    raise AssertionError("unreachable")


async def _within(task: asyncio.Future[Any], timeout: float, clock: PromptClock) -> Any:
    """``task``'s result, cancelling it after ``timeout`` seconds plus the time spent
    on prompts (never while a prompt is open). Raises TimeoutError."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not task.done():
        remaining = started + timeout + clock.spent() - loop.time()
        if remaining <= 0 and not clock.active:
            task.cancel()
            raise TimeoutError
        await asyncio.wait({task}, timeout=max(remaining, 0.05))
    return task.result()


def keepalive_lost(exc: Exception) -> bool:
    """Whether asyncssh closed the connection because the host stopped answering
    keepalives (``ssh.dead_after``).

    asyncssh (2.x, ``connection.py``) closes it with a plain ``ConnectionLost("Server
    not responding to keepalive")``, the class of every other lost connection: its
    text is the only difference. This is the one place that reads it."""
    return isinstance(exc, asyncssh.ConnectionLost) and "keepalive" in str(exc)


def connect_error(exc: BaseException, target: Target, timeout: float) -> SSHError:
    """What a failed connection to ``target`` says to the operator (by the failure's
    class): AuthFailed when the host refused every credential, SSHError otherwise."""
    where = f"{target.host}:{target.port}"
    if isinstance(exc, TimeoutError):
        return SSHError(f"timed out connecting to {where} after {timeout:g}s")
    if isinstance(exc, asyncssh.PermissionDenied):
        return AuthFailed(f"authentication failed for {target.user}@{where}: {exc.reason}")
    if isinstance(exc, asyncssh.DisconnectError):
        return SSHError(f"{where} disconnected: {exc.reason}")
    if isinstance(exc, ConnectionRefusedError):
        return SSHError(f"connection refused by {where}")
    if isinstance(exc, OSError):
        return SSHError(f"cannot reach {where}: {exc.strerror or exc}")
    return SSHError(f"{where}: {exc}")

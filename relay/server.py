"""The relay: rooms shared by operators over websockets, backed by a stored log.

One :class:`Relay` serves many rooms. A client authenticates with a bearer token in
the HTTP upgrade request (``Authorization: Bearer <token>``; refused with HTTP 401
before the upgrade), sends ``hello`` to join one room, and from then on receives every
message stored in that room, in offset order, exactly once per connection.

Fan-out writes each message's pre-encoded frame straight to the connections that keep
up (``websockets.broadcast``), so one slow receiver never delays the others; a
connection whose unsent data passes :attr:`Limits.max_buffer_bytes` is closed with
close code 4000 and resumes from its offset. See ``docs/relay-protocol.md``.

Run it with ``shipdeck relay`` or ``python -m relay.server`` (same options).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import secrets
import ssl
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from engine.events import (
    WAITING,
    DeployFinished,
    DeployMeta,
    Event,
    EventDecodeError,
    GateWaiting,
    LogLine,
    NodeStatus,
    PlanReady,
    event_from_json,
)
from engine.plan import Node, Plan
from relay.protocol import (
    CLOSE_ABUSE,
    CLOSE_NO_HELLO,
    CLOSE_RESTART,
    CLOSE_SLOW,
    ENVELOPE_BYTES,
    HARD_MAX_BYTES,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    RELAY_SENDER,
    SNAPSHOT_DETAIL_CHARS,
    SNAPSHOT_FINISHED_BYTES,
    SNAPSHOT_LABEL_CHARS,
    SNAPSHOT_LOG_CHARS,
    SNAPSHOT_META_BYTES,
    ProtocolError,
    Snapshot,
    check_event,
    cut_text,
    dumps,
    error_frame,
    json_size,
    parse_client_frame,
    shrink_json,
    snapshot_part_frame,
    split_snapshot,
)
from relay.store import Record, Store
from relay.tokens import TokenTable

log = logging.getLogger("shipdeck.relay")

try:  # errors of a shared store that is unreachable for a while
    from redis.exceptions import RedisError

    _STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, RedisError)
except ImportError:  # redis is an optional extra
    _STORE_ERRORS = (OSError,)

#: Close code when the shared store (Redis) cannot be reached: "try again later".
CLOSE_UNAVAILABLE = 1013


@dataclass(slots=True)
class Limits:
    """Per-connection and per-room limits. Defaults suit a team relay."""

    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_event_bytes: int = MAX_EVENT_BYTES
    #: Sustained frames per second read from one connection, and the burst allowed.
    #: Beyond it the relay stops reading that connection (TCP back-pressure); nothing
    #: is dropped and no one else is affected.
    rate: float = 200.0
    burst: float = 400.0
    #: Unsent bytes allowed to pile up for one live connection before it is closed
    #: (4000): twice the largest frame, so one big event never drops a reader.
    max_buffer_bytes: int = 2 * HARD_MAX_BYTES
    #: Bytes (and messages) held for a connection still joining or replaying history
    #: before it is closed (4000); it resumes from its offset.
    max_pending_bytes: int = 4 * HARD_MAX_BYTES
    max_pending: int = 10_000
    #: History read from the store per replay page: at most this many messages and
    #: (past the first) this many bytes.
    replay_page: int = 500
    replay_bytes: int = 1024 * 1024
    #: Bytes of chat and of log lines a room keeps for its snapshot.
    snapshot_chat_bytes: int = 128 * 1024
    snapshot_log_bytes: int = 128 * 1024
    #: A room nobody is in (no connection, no waiter, no live lease) leaves memory
    #: after this many seconds; it is read back from the store when someone joins.
    room_idle: float = 60.0
    #: At most this many idle rooms stay in memory; beyond, the longest idle leave
    #: at once (a relay that saw a thousand rooms keeps only its busy ones).
    max_idle_rooms: int = 100
    #: More than ``abuse_errors`` invalid frames within ``abuse_window`` s: close 4008.
    abuse_errors: int = 20
    abuse_window: float = 10.0
    hello_timeout: float = 10.0
    snapshot_chat: int = 50
    snapshot_logs: int = 100
    #: Seconds between writes of the deploy snapshot state to the store.
    state_flush: float = 1.0
    trim_interval: float = 60.0


def session_hash(session: str) -> str:
    """What the relay keeps of a client's session id (never the id itself)."""
    return hashlib.sha256(session.encode()).hexdigest()


def client_handle(operator: str, shash: str) -> str:
    """Public id of one client session, shown to others (in presence and leases)."""
    return hashlib.sha256(f"{operator}\0{shash}".encode()).hexdigest()[:12]


def _now() -> float:
    return round(time.time(), 3)


@dataclass(slots=True)
class Lease:
    """The room's deploy lock: held by one client session until released or stale."""

    operator: str
    session: str  # session_hash() of the holder's session id
    reason: str
    ttl: float
    since: float
    expires: float
    stale: bool = False

    @property
    def client(self) -> str:
        return client_handle(self.operator, self.session)

    def public(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "client": self.client,
            "reason": self.reason,
            "ttl": self.ttl,
            "since": self.since,
            "expires": self.expires,
            "stale": self.stale,
        }

    def state(self) -> dict[str, Any]:
        return {**self.public(), "session": self.session}


@dataclass(slots=True)
class Waiter:
    peer: Peer
    request_id: str
    reason: str
    ttl: float


def _short_log(data: dict[str, Any]) -> dict[str, Any]:
    """A log event as kept for snapshots: its text cut to SNAPSHOT_LOG_CHARS."""
    text = data.get("text")
    if not isinstance(text, str) or len(text) <= SNAPSHOT_LOG_CHARS:
        return data
    short, cut = cut_text(text, SNAPSHOT_LOG_CHARS)
    return {**data, "text": short, "cut": cut + int(data.get("cut") or 0)}


def _bound_node(node: Node) -> None:
    node.label = cut_text(node.label, SNAPSHOT_LABEL_CHARS)[0]
    node.detail = cut_text(node.detail, SNAPSHOT_DETAIL_CHARS)[0]
    node.kind = node.kind[:32]
    node.status = node.status[:32]


def _plan_of(event: PlanReady) -> Plan:
    plan = Plan.from_event(event)
    for node in plan:
        _bound_node(node)
    plan.meta = shrink_json(plan.meta, SNAPSHOT_META_BYTES)
    return plan


@dataclass(slots=True)
class DeployState:
    """The current deploy as a late joiner needs it (built from ``event`` messages).

    Bounded in bytes whatever the events hold: log lines, details and labels are cut,
    the kept logs fit ``log_bytes``, meta and the finished event are shrunk, and gates
    are only the plan's own nodes."""

    plan: Plan
    finished: dict[str, Any] | None = None
    gates: set[str] = field(default_factory=set)
    logs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    applied: int = 0  # offset of the last event message applied
    log_bytes: int = 128 * 1024
    _log_size: int = 0

    def apply(self, event: Event, data: dict[str, Any]) -> None:
        if event.deploy_id != self.plan.deploy_id:
            return
        if isinstance(event, DeployFinished):
            self.finished = shrink_json(data, SNAPSHOT_FINISHED_BYTES)
        elif isinstance(event, GateWaiting):
            if event.key in self.plan:
                self.gates.add(event.key)
        elif isinstance(event, LogLine):
            self.add_log(data)
        else:
            if (
                isinstance(event, NodeStatus)
                and event.key in self.gates
                and event.status != WAITING
            ):
                self.gates.discard(event.key)
            node = self.plan.apply(event)
            if node is not None:
                _bound_node(node)
            if isinstance(event, DeployMeta):
                self.plan.meta = shrink_json(self.plan.meta, SNAPSHOT_META_BYTES)

    def add_log(self, data: dict[str, Any]) -> None:
        data = _short_log(data)
        if len(self.logs) == self.logs.maxlen:
            self._log_size -= json_size(self.logs[0])
        self.logs.append(data)
        self._log_size += json_size(data)
        while len(self.logs) > 1 and self._log_size > self.log_bytes:
            self._log_size -= json_size(self.logs.popleft())

    def to_json(self) -> dict[str, Any]:
        return {
            "deploy_id": self.plan.deploy_id,
            "plan": self.plan.snapshot().to_json(),
            "finished": self.finished,
            "gates": sorted(self.gates),
            "logs": list(self.logs),
            "applied": self.applied,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], logs: int, log_bytes: int) -> DeployState:
        plan_event = event_from_json(data["plan"])
        assert isinstance(plan_event, PlanReady)
        state = cls(plan=_plan_of(plan_event), logs=deque(maxlen=logs), log_bytes=log_bytes)
        for line in data.get("logs") or ():  # a state saved before lines were cut, too
            if isinstance(line, dict):
                state.add_log(line)
        finished = data.get("finished")
        state.finished = shrink_json(finished, SNAPSHOT_FINISHED_BYTES) if finished else None
        state.gates = {g for g in data.get("gates") or () if isinstance(g, str) and g in state.plan}
        state.applied = int(data.get("applied", 0))
        return state


class Peer:
    """One authenticated connection, in at most one room."""

    __slots__ = (
        "ws",
        "operator",
        "session",
        "handle",
        "room",
        "live",
        "pending",
        "pending_bytes",
        "tokens",
        "refilled",
        "errors",
        "dropped",
    )

    def __init__(self, ws: ServerConnection, operator: str) -> None:
        self.ws = ws
        self.operator = operator
        self.session = ""
        self.handle = ""
        self.room: Room | None = None
        self.live = False  # receives fan-out directly; else queued in ``pending``
        self.pending: deque[tuple[int | None, str]] = deque()
        self.pending_bytes = 0
        self.tokens = 0.0
        self.refilled = 0.0
        self.errors: deque[float] = deque()
        self.dropped = False


class Room:
    __slots__ = (
        "limits",
        "chat_bytes",
        "idle_since",
        "name",
        "epoch",
        "head",
        "subs",
        "presence",
        "lock",
        "waiters",
        "deploy",
        "chat",
        "mutex",
        "dirty",
        "timer",
        "everyone",
        "follower",
    )

    def __init__(self, name: str, epoch: str, head: int, limits: Limits) -> None:
        self.limits = limits
        self.chat_bytes = 0
        #: monotonic time since the room has had nobody in it (None: in use)
        self.idle_since: float | None = time.monotonic()
        self.name = name
        self.epoch = epoch
        self.head = head
        self.subs: set[Peer] = set()
        self.presence: dict[str, int] = {}
        self.lock: Lease | None = None
        self.waiters: deque[Waiter] = deque()
        self.deploy: DeployState | None = None
        self.chat: deque[Record] = deque()
        self.mutex = asyncio.Lock()
        self.dirty = False
        self.timer: asyncio.TimerHandle | None = None
        #: With a shared store: connections per operator over every node (else None).
        self.everyone: dict[str, int] | None = None
        self.follower: asyncio.Task[Any] | None = None

    def who(self) -> list[dict[str, Any]]:
        counts = self.presence if self.everyone is None else self.everyone
        return [{"operator": op, "connections": n} for op, n in sorted(counts.items())]

    def snapshot(self) -> Snapshot:
        return Snapshot(
            head=self.head,
            deploy=self._deploy_json(),
            lock=self.lock.public() if self.lock else None,
            chat=[r.frame() for r in self.chat],
            presence=self.who(),
        )

    def _deploy_json(self) -> dict[str, Any] | None:
        if self.deploy is None:
            return None
        data = self.deploy.to_json()
        data.pop("applied", None)
        return data

    def add_chat(self, rec: Record) -> None:
        """Keep ``rec`` for snapshots: the newest chats within count and bytes."""
        lim = self.limits
        size = len(rec.text)
        self.chat.append(dataclasses.replace(rec, _text=None))  # the body is enough
        self.chat_bytes += size
        while len(self.chat) > 1 and (
            len(self.chat) > lim.snapshot_chat or self.chat_bytes > lim.snapshot_chat_bytes
        ):
            self.chat_bytes -= self._size(self.chat.popleft())

    @staticmethod
    def _size(rec: Record) -> int:
        size = len(rec.text)
        rec._text = None
        return size

    def forget_chat_before(self, first: int) -> None:
        """Drop chats that retention removed from the log."""
        while self.chat and self.chat[0].offset < first:
            self.chat_bytes -= self._size(self.chat.popleft())

    def observe(self, rec: Record, decoded: list[Event] | None) -> None:
        """Update the room's in-memory state from a newly stored message."""
        if rec.type == "chat":
            self.add_chat(rec)
        elif rec.type == "event":
            raw = rec.body.get("events") or []
            if decoded is None:
                decoded = []
                for data in raw:
                    try:
                        decoded.append(check_event(data))
                    except EventDecodeError:
                        decoded.append(None)  # type: ignore[arg-type]
            for event, data in zip(decoded, raw, strict=False):
                if event is None:
                    continue
                if isinstance(event, PlanReady):
                    self.deploy = DeployState(
                        plan=_plan_of(event),
                        logs=deque(maxlen=self.limits.snapshot_logs),
                        log_bytes=self.limits.snapshot_log_bytes,
                    )
                elif self.deploy is not None:
                    self.deploy.apply(event, data)
            if self.deploy is not None:
                self.deploy.applied = rec.offset
                self.dirty = True


class Relay:
    """Rooms, auth, fan-out, locks and limits over one :class:`~relay.store.Store`."""

    def __init__(self, store: Store, tokens: TokenTable, limits: Limits | None = None) -> None:
        self.store = store
        #: True when other relay nodes write to the same store (Redis): each room is
        #: then delivered by following its stored log, and the lease and presence
        #: live in the store.
        self.shared = bool(getattr(store, "shared", False))
        self.tokens = tokens
        self.limits = limits or Limits()
        self.rooms: dict[str, Room] = {}
        self.peers: set[Peer] = set()
        self._rooms_lock = asyncio.Lock()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        #: Connections closed with 4000 because they fell behind (for tests, figures).
        self.dropped_slow = 0

    # -- lifecycle ---------------------------------------------------------------

    async def start(
        self, host: str = "127.0.0.1", port: int = 8765, ssl_context: ssl.SSLContext | None = None
    ) -> Server:
        """Start listening; returns the websockets server (``port=0`` picks a free port)."""
        await self.store.trim()
        self._server = await serve(
            self.handler,
            host,
            port,
            process_request=self.process_request,
            ssl=ssl_context,
            max_size=HARD_MAX_BYTES,
            max_queue=4,
            compression=None,
            close_timeout=3,
            ping_interval=20,
            ping_timeout=20,
            server_header="shipdeck-relay",
        )
        self._spawn(self._maintenance())
        if self.shared:
            self._spawn(self.store.listen(self._on_presence_frame))  # type: ignore[attr-defined]
        return self._server

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def shutdown(self, retry_after: float = 0.5) -> None:
        """Tell every client to reconnect (close code 1012), then stop and flush."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close(close_connections=False)
        notice = dumps(
            {
                "type": "reconnect",
                "v": PROTOCOL_VERSION,
                "reason": "relay is restarting",
                "retry_after": retry_after,
            }
        )
        conns = [p.ws for p in self.peers]
        broadcast(conns, notice)
        if conns:
            await asyncio.wait(
                [
                    asyncio.ensure_future(ws.close(CLOSE_RESTART, "relay restarting; reconnect"))
                    for ws in conns
                ],
                timeout=5,
            )
        if self._server is not None:
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await self._flush_state()
        await self.store.close()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _maintenance(self) -> None:
        last_trim = time.monotonic()
        while True:
            await asyncio.sleep(self.limits.state_flush)
            try:
                if self.shared:
                    await self._refresh_presence()
                await self._flush_state()
                await self._evict_idle()
                if time.monotonic() - last_trim >= self.limits.trim_interval:
                    last_trim = time.monotonic()
                    await self.retain()
            except Exception:
                log.exception("relay maintenance failed")

    async def retain(self) -> int:
        """Apply retention now (the relay does it every ``trim_interval`` s): remove old
        messages from the store, and removed chats from the rooms' snapshots."""
        removed = await self.store.trim()
        if removed:
            log.info("retention removed %d old messages", removed)
            for room in list(self.rooms.values()):
                room.forget_chat_before((await self.store.info(room.name)).first)
        return removed

    def _idle(self, room: Room, since: float | None = None) -> bool:
        """Nobody in the room, nobody waiting, no live lease, since ``since`` at least
        (default: for ``room_idle`` seconds)."""
        if since is None:
            since = time.monotonic() - self.limits.room_idle
        return (
            room.idle_since is not None
            and room.idle_since <= since
            and not room.subs
            and not room.waiters
            and (room.lock is None or room.lock.stale)
            and not room.mutex.locked()
        )

    async def _evict_idle(self) -> int:
        """Let idle rooms leave memory (their state is saved first); returns how many.

        Rooms idle for ``room_idle`` seconds leave, and the longest idle ones beyond
        ``max_idle_rooms``. The next join reads the room back from the store: chat,
        deploy snapshot and lease as they were."""
        now = time.monotonic()
        idle = sorted(
            (r for r in self.rooms.values() if self._idle(r, now)),
            key=lambda r: r.idle_since or 0.0,
        )
        excess = len(idle) - self.limits.max_idle_rooms
        evicted = 0
        for i, room in enumerate(idle):
            since = now if i < excess else now - self.limits.room_idle
            if not self._idle(room, since):
                continue
            if room.dirty and room.deploy is not None:
                room.dirty = False
                await self.store.put_state(room.name, "deploy", room.deploy.to_json())
            elif room.deploy is None:  # no deploy up to here: the next load starts here
                await self.store.put_state(
                    room.name, "scanned", {"epoch": room.epoch, "head": room.head}
                )
            if not self._idle(room, since) or self.rooms.get(room.name) is not room:
                continue  # someone came in while the state was written
            del self.rooms[room.name]
            if room.timer is not None:
                room.timer.cancel()
            if room.follower is not None:
                room.follower.cancel()
            evicted += 1
        if evicted:
            log.info("%d idle rooms left memory (%d in memory)", evicted, len(self.rooms))
        return evicted

    async def _flush_state(self) -> None:
        for room in list(self.rooms.values()):
            if room.dirty and room.deploy is not None:
                room.dirty = False
                await self.store.put_state(room.name, "deploy", room.deploy.to_json())

    # -- auth ---------------------------------------------------------------------

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        values = request.headers.get_all("Authorization")
        header = values[0] if len(values) == 1 else ""  # none or several: no token
        scheme, _, token = header.partition(" ")
        operator = self.tokens.operator_for(token.strip()) if scheme.lower() == "bearer" else None
        if operator is None:
            log.info(
                "refused %s: %s token",
                _peer_addr(connection),
                "missing" if not header else "invalid",
            )
            response = connection.respond(
                HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token\n"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="shipdeck-relay"'
            return response
        if self._closing:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "relay is restarting\n")
        connection.shipdeck_operator = operator  # type: ignore[attr-defined]
        return None

    # -- connection ---------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        peer = Peer(ws, ws.shipdeck_operator)  # type: ignore[attr-defined]
        peer.tokens = self.limits.burst
        peer.refilled = time.monotonic()
        self.peers.add(peer)
        try:
            hello = await self._await_hello(peer)
            if hello is None:
                return
            await self._join(peer, hello)
            async for text in ws:
                await self._throttle(peer)
                await self._dispatch(peer, text)
        except ConnectionClosed:
            pass
        except _STORE_ERRORS as exc:
            if not self.shared:
                raise
            # The shared store is unreachable (Redis restarting): nothing unacknowledged
            # was stored; the client reconnects with jitter and re-sends its outbox.
            log.warning("closing %s: store unavailable: %s", peer.operator, exc)
            await ws.close(CLOSE_UNAVAILABLE, "store unavailable; reconnect")
        finally:
            self.peers.discard(peer)
            if peer.room is not None:
                try:
                    await self._leave(peer)
                except _STORE_ERRORS as exc:
                    if not self.shared:
                        raise
                    log.warning("could not record %s leaving: %s", peer.operator, exc)

    async def _await_hello(self, peer: Peer) -> dict[str, Any] | None:
        deadline = asyncio.get_running_loop().time() + self.limits.hello_timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    text = await peer.ws.recv()
            except TimeoutError:
                await peer.ws.close(CLOSE_NO_HELLO, "no hello")
                return None
            try:
                frame = parse_client_frame(
                    text,
                    max_bytes=self.limits.max_message_bytes,
                    max_event_bytes=self.limits.max_event_bytes,
                )
            except ProtocolError as exc:
                if not await self._reject(peer, exc):
                    return None
                continue
            if frame["type"] != "hello":
                await self._reject(
                    peer,
                    ProtocolError("not_joined", "send hello with a room first", frame.get("id")),
                )
                continue
            return frame

    async def _throttle(self, peer: Peer) -> None:
        lim = self.limits
        now = time.monotonic()
        peer.tokens = min(lim.burst, peer.tokens + (now - peer.refilled) * lim.rate)
        peer.refilled = now
        if peer.tokens < 1.0:
            await asyncio.sleep((1.0 - peer.tokens) / lim.rate)
            peer.tokens = 1.0
            peer.refilled = time.monotonic()
        peer.tokens -= 1.0

    async def _reject(self, peer: Peer, exc: ProtocolError, *, counts: bool = True) -> bool:
        """Answer a bad frame with an error; return False if the peer was closed for abuse."""
        await peer.ws.send(dumps(error_frame(exc.code, exc.message, exc.msg_id)))
        if not counts:
            return True
        now = time.monotonic()
        peer.errors.append(now)
        while peer.errors and peer.errors[0] < now - self.limits.abuse_window:
            peer.errors.popleft()
        if len(peer.errors) > self.limits.abuse_errors:
            log.warning(
                "closing %s (%s): too many invalid frames", peer.operator, _peer_addr(peer.ws)
            )
            await peer.ws.close(CLOSE_ABUSE, "too many invalid frames")
            return False
        return True

    async def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is not None:
            return room
        async with self._rooms_lock:
            room = self.rooms.get(name)
            if room is not None:
                return room
            lim = self.limits
            info = await self.store.open_room(name)
            room = Room(name, info.epoch, info.head, lim)
            chats = await self.store.last(name, "chat", lim.snapshot_chat)
            for rec in chats:
                if rec.offset <= info.head:
                    room.add_chat(rec)
            state = await self.store.get_state(name, "deploy")
            if state:
                room.deploy = DeployState.from_json(
                    state, lim.snapshot_logs, lim.snapshot_log_bytes
                )
            # Apply what was stored after the saved deploy state (or everything, or
            # what came after the room last left memory without any deploy).
            if room.deploy is not None:
                after = room.deploy.applied
            else:
                scanned = await self.store.get_state(name, "scanned")
                after = info.first - 1
                if isinstance(scanned, dict) and scanned.get("epoch") == info.epoch:
                    after = max(after, min(int(scanned.get("head") or 0), info.head))
            while True:
                recs = await self.store.read(name, after, lim.replay_page, lim.replay_bytes)
                if not recs:
                    break
                recs = [r for r in recs if r.offset <= info.head]  # later: delivered live
                if not recs:
                    break
                for rec in recs:
                    if rec.type == "event":
                        try:
                            room.observe(rec, None)
                        except Exception:
                            log.exception(
                                "could not apply message %d of %s to the snapshot", rec.offset, name
                            )
                after = recs[-1].offset
            if self.shared:
                await self._refresh_lease(room)
                room.everyone = await self.store.who(name)  # type: ignore[attr-defined]
                room.follower = self._spawn(self._follow(room))
                self.rooms[name] = room
                return room
            lease = await self.store.get_state(name, "lock")
            if lease and lease.get("session"):
                room.lock = Lease(
                    operator=lease["operator"],
                    session=lease["session"],
                    reason=lease.get("reason", ""),
                    ttl=float(lease["ttl"]),
                    since=float(lease["since"]),
                    expires=float(lease["expires"]),
                    stale=bool(lease.get("stale")),
                )
                self._arm_expiry(room)
            self.rooms[name] = room
            return room

    async def _join(self, peer: Peer, hello: dict[str, Any]) -> None:
        room = await self._room(hello["room"])
        raw_session = hello.get("session") or secrets.token_hex(12)
        peer.session = session_hash(raw_session)
        peer.handle = client_handle(peer.operator, peer.session)
        peer.room = room
        peer.live = False
        # From here on, new messages queue in peer.pending; the head read below is
        # consistent with that (no await in between).
        room.subs.add(peer)
        room.idle_since = None
        info = await self.store.info(room.name)
        first = info.first
        # With several nodes this node may not have followed the store's newest
        # messages yet (its reader was reconnecting to Redis, say): the client is
        # promised everything stored, and the replay below reads the store itself.
        head = max(room.head, info.head) if self.shared else room.head
        resume, since = hello.get("resume"), hello.get("since")
        recovered: bool | None = None
        start: int | None = None
        truncated = False
        if self.shared and info.epoch != room.epoch:
            await self._epoch_changed(room, info.epoch)
            return
        if resume is not None:
            # with several nodes the client may come from a node that delivered more
            # than this one has yet: its offset is fine up to the stored head
            ok = resume["epoch"] == room.epoch and first - 1 <= resume["offset"] <= head
            recovered = ok
            start = resume["offset"] if ok else None
            if ok:
                head = max(head, resume["offset"])
        elif since is not None:
            start = min(max(since, first - 1), head)
            truncated = since < first - 1
        room.presence[peer.operator] = room.presence.get(peer.operator, 0) + 1
        if self.shared:
            await self._shared_presence(room, peer, +1)
        elif room.presence[peer.operator] == 1:
            self._presence(room, "join", peer)
        welcome: dict[str, Any] = {
            "type": "welcome",
            "v": PROTOCOL_VERSION,
            "room": room.name,
            "epoch": room.epoch,
            "head": head,
            "first": first,
            "you": {"operator": peer.operator, "client": peer.handle, "session": raw_session},
            "recovered": recovered,
            "replay_from": start,
            "truncated": truncated,
            "presence": room.who(),
            "lock": room.lock.public() if room.lock else None,
            "limits": {
                "max_message_bytes": self.limits.max_message_bytes,
                "rate": self.limits.rate,
            },
        }
        parts: list[list[dict[str, Any]]] = []
        if hello.get("snapshot", True) and recovered is not True:
            welcome["snapshot"], parts = split_snapshot(room.snapshot().to_json())
        log.info(
            "%s joined %s (%s, recovered=%s)",
            peer.operator,
            room.name,
            _peer_addr(peer.ws),
            recovered,
        )
        await peer.ws.send(dumps(welcome))
        for i, nodes in enumerate(parts, 1):
            await peer.ws.send(snapshot_part_frame(room.name, i, len(parts), nodes))
        del parts
        last = head
        if start is not None:
            last = start
            while not peer.dropped:
                recs = await self.store.read(
                    room.name, last, self.limits.replay_page, self.limits.replay_bytes
                )
                if not recs:
                    break
                for rec in recs:
                    if peer.dropped:
                        break
                    await peer.ws.send(rec.text)
                last = recs[-1].offset
                del recs
        while peer.pending and not peer.dropped:
            offset, text = peer.pending.popleft()
            peer.pending_bytes -= len(text)
            if offset is not None and offset <= last:
                continue
            await peer.ws.send(text)
            if offset is not None:
                last = offset
        if not peer.dropped:
            peer.live = True
            room.idle_since = None

    async def _leave(self, peer: Peer) -> None:
        room = peer.room
        assert room is not None
        room.subs.discard(peer)
        if not room.subs:
            room.idle_since = time.monotonic()
        room.waiters = deque(w for w in room.waiters if w.peer is not peer)
        count = room.presence.get(peer.operator, 0) - 1
        if count <= 0:
            room.presence.pop(peer.operator, None)
            if not self.shared:
                self._presence(room, "leave", peer)
        else:
            room.presence[peer.operator] = count
        if self.shared:
            await self._shared_presence(room, peer, -1)
        log.info("%s left %s", peer.operator, room.name)

    def _presence(self, room: Room, op: str, peer: Peer) -> None:
        frame = {
            "type": "presence",
            "v": PROTOCOL_VERSION,
            "room": room.name,
            "offset": None,
            "time": _now(),
            "op": op,
            "operator": peer.operator,
            "client": peer.handle,
            "who": room.who(),
        }
        self._send_room(room, None, dumps(frame))

    # -- fan-out --------------------------------------------------------------------

    def _send_room(self, room: Room, offset: int | None, text: str) -> None:
        """Write one frame to every subscriber without waiting for any of them."""
        limit = self.limits.max_buffer_bytes
        max_pending = self.limits.max_pending
        targets: list[ServerConnection] = []
        slow: list[Peer] = []
        for peer in room.subs:
            if peer.live:
                transport = peer.ws.transport
                if transport is None or transport.get_write_buffer_size() > limit:
                    slow.append(peer)
                else:
                    targets.append(peer.ws)
            elif (
                len(peer.pending) >= max_pending
                or peer.pending_bytes + len(text) > self.limits.max_pending_bytes
            ):
                slow.append(peer)
            else:
                peer.pending.append((offset, text))
                peer.pending_bytes += len(text)
        if targets:
            broadcast(targets, text)
        for peer in slow:
            self._drop_slow(room, peer)

    def _drop_slow(self, room: Room, peer: Peer) -> None:
        room.subs.discard(peer)
        if not room.subs:
            room.idle_since = time.monotonic()
        peer.live = False
        peer.dropped = True
        peer.pending.clear()
        peer.pending_bytes = 0
        self.dropped_slow += 1
        log.warning(
            "closing %s (%s) in %s: fell behind", peer.operator, _peer_addr(peer.ws), room.name
        )
        self._spawn(peer.ws.close(CLOSE_SLOW, "fell behind; resume from your last offset"))

    async def publish(
        self,
        room: Room,
        sender: str,
        client_id: str | None,
        type: str,
        body: dict[str, Any],
        decoded: list[Event] | None = None,
    ) -> tuple[Record, bool]:
        """Store one message and fan it out; a duplicate is acknowledged, not resent."""
        if self.shared:
            # Stored atomically by the store; every node (this one included) delivers
            # it from the room's stream, in the stream's order (see _follow).
            return await self.store.append(room.name, sender, client_id, type, body, _now())
        async with room.mutex:
            rec, duplicate = await self.store.append(
                room.name, sender, client_id, type, body, _now()
            )
            if duplicate:
                return rec, True
            room.head = rec.offset
            try:
                room.observe(rec, decoded)
            except Exception:  # the message is stored; a snapshot bug must not lose it
                log.exception(
                    "could not apply message %d of %s to the snapshot", rec.offset, room.name
                )
            self._send_room(room, rec.offset, rec.text)
            return rec, False

    async def _ack(
        self, peer: Peer, msg_id: str, rec: Record | None, duplicate: bool = False, **result: Any
    ) -> None:
        frame: dict[str, Any] = {"type": "ack", "v": PROTOCOL_VERSION, "id": msg_id}
        if rec is not None:
            frame["offset"] = rec.offset
            frame["duplicate"] = duplicate
        frame.update(result)
        await peer.ws.send(dumps(frame))

    # -- messages -------------------------------------------------------------------

    async def _dispatch(self, peer: Peer, text: str | bytes) -> None:
        try:
            frame = parse_client_frame(
                text,
                max_bytes=self.limits.max_message_bytes,
                max_event_bytes=self.limits.max_event_bytes,
            )
        except ProtocolError as exc:
            await self._reject(peer, exc)
            return
        room = peer.room
        assert room is not None
        kind = frame["type"]
        msg_id = frame.get("id")
        if kind == "hello":
            await self._reject(
                peer,
                ProtocolError(
                    "already_joined",
                    f"this connection is in room {room.name!r}; open another to join a second room",
                    msg_id,
                ),
            )
        elif kind == "chat":
            rec, dup = await self.publish(
                room, peer.operator, msg_id, "chat", {"text": frame["text"]}
            )
            await self._ack(peer, msg_id, rec, dup)
        elif kind == "event":
            lease = await self._refresh_lease(room) if self.shared else room.lock
            if lease is None or lease.session != peer.session or lease.operator != peer.operator:
                who = f"{lease.operator} holds" if lease is not None else "nobody holds"
                await self._reject(
                    peer,
                    ProtocolError(
                        "not_lock_holder",
                        f"{who} the deploy lock; only the connection holding it publishes events",
                        msg_id,
                    ),
                    counts=False,
                )
                return
            size = json_size({"events": frame["events"]}) + ENVELOPE_BYTES
            if size > self.limits.max_event_bytes:
                await self._reject(
                    peer,
                    ProtocolError(
                        "too_large",
                        f"event: stored it would be {size} bytes; the limit is"
                        f" {self.limits.max_event_bytes}",
                        msg_id,
                    ),
                )
                return
            rec, dup = await self.publish(
                room,
                peer.operator,
                msg_id,
                "event",
                {"events": frame["events"]},
                frame.get("decoded"),
            )
            await self._ack(peer, msg_id, rec, dup)
        elif kind == "control":
            lease = await self._refresh_lease(room) if self.shared else room.lock
            if lease is None:
                await self._reject(
                    peer,
                    ProtocolError(
                        "no_lock_holder",
                        "nobody holds the deploy lock in this room; there is no deploy to control",
                        msg_id,
                    ),
                    counts=False,
                )
                return
            body = {
                "action": frame["action"],
                "key": frame["key"],
                "to": lease.operator,
                "to_client": lease.client,
            }
            rec, dup = await self.publish(room, peer.operator, msg_id, "control", body)
            await self._ack(peer, msg_id, rec, dup)
        elif kind == "lock":
            await self._lock(peer, room, frame)

    # -- lock lease -----------------------------------------------------------------

    async def _lock(self, peer: Peer, room: Room, frame: dict[str, Any]) -> None:
        if self.shared:
            await self._lock_shared(peer, room, frame)
            return
        op, msg_id = frame["op"], frame["id"]
        now = _now()
        lease = room.lock
        mine = (
            lease is not None and lease.session == peer.session and lease.operator == peer.operator
        )
        if op == "acquire":
            ttl, reason = frame["ttl"], frame["reason"]
            if lease is not None and mine:
                lease.ttl, lease.expires = ttl, now + ttl
                if reason:
                    lease.reason = reason
                rec = await self._lease_changed(
                    room, peer.operator, "resumed" if lease.stale else None
                )
                lease.stale = False
                await self._ack(peer, msg_id, rec, granted=True, lease=lease.public())
            elif lease is None or lease.stale or lease.expires <= now:
                new = Lease(peer.operator, peer.session, reason, ttl, now, now + ttl)
                room.lock = new
                rec = await self._lease_changed(
                    room, peer.operator, "acquired" if lease is None else "takeover", previous=lease
                )
                await self._ack(peer, msg_id, rec, granted=True, lease=new.public())
            elif frame["wait"]:
                room.waiters = deque(w for w in room.waiters if w.peer is not peer)
                room.waiters.append(Waiter(peer, msg_id, reason, ttl))
                await self._ack(
                    peer, msg_id, None, granted=False, queued=True, holder=lease.public()
                )
            else:
                await self._ack(
                    peer, msg_id, None, granted=False, queued=False, holder=lease.public()
                )
        elif op == "heartbeat":
            if lease is not None and mine:
                lease.expires = now + lease.ttl
                rec = await self._lease_changed(
                    room, peer.operator, "resumed" if lease.stale else None
                )
                lease.stale = False
                await self._ack(peer, msg_id, rec, granted=True, lease=lease.public())
            else:
                await self._ack(
                    peer,
                    msg_id,
                    None,
                    granted=False,
                    lost=True,
                    holder=lease.public() if lease else None,
                )
        else:  # release
            room.waiters = deque(w for w in room.waiters if w.peer is not peer)
            if lease is not None and mine:
                room.lock = None
                rec = await self._lease_changed(room, peer.operator, "released", previous=lease)
                await self._ack(peer, msg_id, rec, released=True)
                await self._grant_next(room, None)
            else:
                await self._ack(peer, msg_id, None, released=False)

    async def _lease_changed(
        self, room: Room, sender: str, op: str | None, previous: Lease | None = None
    ) -> Record | None:
        """Persist the lease, re-arm its expiry, and (if ``op``) store a visible message."""
        lease = room.lock
        if op == "resumed" and lease is not None:
            lease.stale = False
        await self.store.put_state(room.name, "lock", lease.state() if lease else None)
        self._arm_expiry(room)
        if op is None:
            return None
        body: dict[str, Any] = {"op": op, "holder": lease.public() if lease else None}
        if previous is not None:
            body["previous"] = previous.public()
        rec, _ = await self.publish(room, sender, None, "lock", body)
        return rec

    def _arm_expiry(self, room: Room) -> None:
        if room.timer is not None:
            room.timer.cancel()
            room.timer = None
        lease = room.lock
        if lease is None or lease.stale:
            return
        delay = max(0.0, lease.expires - time.time())
        room.timer = asyncio.get_running_loop().call_later(
            delay + 0.01, lambda: self._spawn(self._expire(room))
        )

    async def _expire(self, room: Room) -> None:
        if self.shared:
            await self._expire_shared(room)
            return
        lease = room.lock
        if lease is None or lease.stale or lease.expires > time.time():
            if lease is not None and not lease.stale:
                self._arm_expiry(room)
            return
        lease.stale = True
        log.warning(
            "lock in %s held by %s went stale (no heartbeat for %.0fs)",
            room.name,
            lease.operator,
            lease.ttl,
        )
        await self._lease_changed(room, RELAY_SENDER, "stale")
        await self._grant_next(room, lease)

    async def _grant_next(self, room: Room, previous: Lease | None) -> None:
        if self.shared:
            await self._grant_next_shared(room)
            return
        while room.waiters and (room.lock is None or room.lock.stale):
            waiter = room.waiters.popleft()
            peer = waiter.peer
            if peer not in room.subs:
                continue
            now = _now()
            room.lock = Lease(
                peer.operator, peer.session, waiter.reason, waiter.ttl, now, now + waiter.ttl
            )
            rec = await self._lease_changed(
                room, peer.operator, "takeover" if previous else "acquired", previous=previous
            )
            self._granted(peer, waiter.request_id, rec, room.lock.public())
            return

    def _granted(
        self, peer: Peer, request_id: str, rec: Record | None, lease: dict[str, Any]
    ) -> None:
        """Tell a queued waiter its request was granted: a second ``ack`` with the id of
        its ``acquire`` (sent without waiting on it; a gone waiter is no one's error)."""
        frame: dict[str, Any] = {"type": "ack", "v": PROTOCOL_VERSION, "id": request_id}
        if rec is not None:
            frame["offset"] = rec.offset
            frame["duplicate"] = False
        frame.update(granted=True, queued=False, lease=lease)

        async def send() -> None:
            try:
                await peer.ws.send(dumps(frame))
            except ConnectionClosed:
                pass

        self._spawn(send())

    # -- several nodes on a shared store (Redis) --------------------------------------

    async def _follow(self, room: Room) -> None:
        """Deliver the room from its stored log, in the log's order, on this node.

        Every node runs this for each room it serves, so clients on different nodes
        see the same messages in the same order; what this node stored itself comes
        back the same way."""
        store: Any = self.store
        failures = 0
        while not self._closing:
            try:
                recs = await store.follow(room.name, room.head, block=5.0)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures in (1, 20) or failures % 100 == 0:
                    log.warning("reading %s from the store failed: %s", room.name, exc)
                await asyncio.sleep(min(1.0, 0.05 * failures))
                continue
            if not recs:
                await self._check_epoch(room)
                continue
            if recs[0].offset > room.head + 1 and room.head > 0:
                # Trimmed past what this node delivered (or a new epoch): the clients
                # here must resume; they get recovered: false and a snapshot.
                if await self._check_epoch(room):
                    continue
                log.warning(
                    "%s: messages %d..%d were removed before this node delivered them",
                    room.name,
                    room.head + 1,
                    recs[0].offset - 1,
                )
                self._resync(room)
            for rec in recs:
                if rec.offset <= room.head:
                    continue
                room.head = rec.offset
                try:
                    room.observe(rec, None)
                except Exception:
                    log.exception(
                        "could not apply message %d of %s to the snapshot", rec.offset, room.name
                    )
                self._send_room(room, rec.offset, rec.text)
                if rec.type == "lock":
                    self._spawn(self._lock_seen(room, rec))

    async def _check_epoch(self, room: Room) -> bool:
        try:
            info = await self.store.info(room.name)
        except Exception:
            return False
        if info.epoch != room.epoch:
            await self._epoch_changed(room, info.epoch)
            return True
        return False

    async def _epoch_changed(self, room: Room, epoch: str) -> None:
        """The room's log was lost (new epoch): start over; clients resume afresh."""
        log.warning("%s: the stored log was lost (new epoch %s)", room.name, epoch)
        self.rooms.pop(room.name, None)
        if room.follower is not None and room.follower is not asyncio.current_task():
            room.follower.cancel()
        self._closing_room(room)

    def _resync(self, room: Room) -> None:
        for peer in list(room.subs):
            self._drop_slow(room, peer)

    def _closing_room(self, room: Room) -> None:
        room.head = 1 << 62  # stop the old follower delivering anything more
        for peer in list(room.subs):
            room.subs.discard(peer)
            peer.live = False
            peer.dropped = True
            self._spawn(peer.ws.close(CLOSE_RESTART, "room log was reset; reconnect"))

    async def _lock_seen(self, room: Room, rec: Record) -> None:
        """A ``lock`` message came through the log: refresh the lease, serve waiters."""
        try:
            await self._refresh_lease(room)
            if rec.body.get("op") in ("released", "stale") and room.waiters:
                await self._grant_next_shared(room)
        except Exception as exc:
            log.warning("%s: could not refresh the lease: %s", room.name, exc)

    async def _refresh_lease(self, room: Room) -> Lease | None:
        """Read the lease from the store into ``room.lock`` and re-arm its expiry."""
        got = await self.store.lease(room.name, "get")  # type: ignore[attr-defined]
        room.lock = _lease_of(got)
        self._arm_expiry(room)
        return room.lock

    async def _lock_shared(self, peer: Peer, room: Room, frame: dict[str, Any]) -> None:
        store: Any = self.store
        op, msg_id = frame["op"], frame["id"]
        who = {"operator": peer.operator, "session": peer.session, "client": peer.handle}
        if op == "acquire":
            ttl, reason = frame["ttl"], frame["reason"]
            got = await store.lease(room.name, "acquire", reason=reason, ttl=ttl, **who)
            room.lock = _lease_of(got)
            self._arm_expiry(room)
            rec = got.get("record")
            if got["result"] == "granted":
                await self._ack(peer, msg_id, rec, granted=True, lease=got["lease"])
            elif frame["wait"]:
                room.waiters = deque(w for w in room.waiters if w.peer is not peer)
                room.waiters.append(Waiter(peer, msg_id, reason, ttl))
                await self._ack(peer, msg_id, None, granted=False, queued=True, holder=got["lease"])
                # released between the attempt and the queueing? try again now
                if room.lock is None or room.lock.stale:
                    await self._grant_next_shared(room)
            else:
                await self._ack(
                    peer, msg_id, None, granted=False, queued=False, holder=got["lease"]
                )
        elif op == "heartbeat":
            got = await store.lease(room.name, "heartbeat", **who)
            room.lock = _lease_of(got)
            self._arm_expiry(room)
            if got["result"] == "granted":
                await self._ack(peer, msg_id, got.get("record"), granted=True, lease=got["lease"])
            else:
                await self._ack(peer, msg_id, None, granted=False, lost=True, holder=got["lease"])
        else:  # release
            room.waiters = deque(w for w in room.waiters if w.peer is not peer)
            got = await store.lease(room.name, "release", **who)
            if got["result"] == "released":
                room.lock = None
                self._arm_expiry(room)
                await self._ack(peer, msg_id, got.get("record"), released=True)
                await self._grant_next_shared(room)
            else:
                await self._ack(peer, msg_id, None, released=False)

    async def _expire_shared(self, room: Room) -> None:
        try:
            lease = await self._refresh_lease(room)  # re-arms if it was extended
            if lease is None or lease.stale or lease.expires > time.time():
                return
            got = await self.store.lease(  # type: ignore[attr-defined]
                room.name, "stale", since=lease.since
            )
            room.lock = _lease_of(got)
            if got["result"] == "stale":  # this node saw it first; others see the message
                log.warning(
                    "lock in %s held by %s went stale (no heartbeat for %.0fs)",
                    room.name,
                    lease.operator,
                    lease.ttl,
                )
            self._arm_expiry(room)
            await self._grant_next_shared(room)
        except Exception as exc:
            log.warning("%s: lease expiry check failed: %s", room.name, exc)
            room.timer = asyncio.get_running_loop().call_later(
                1.0, lambda: self._spawn(self._expire(room))
            )

    async def _grant_next_shared(self, room: Room) -> None:
        """Offer a free or stale lease to this node's first waiter (atomically: a
        waiter on another node may win it instead)."""
        store: Any = self.store
        while room.waiters and (room.lock is None or room.lock.stale):
            waiter = room.waiters[0]
            peer = waiter.peer
            if peer not in room.subs:
                room.waiters.popleft()
                continue
            got = await store.lease(
                room.name,
                "grant",
                operator=peer.operator,
                session=peer.session,
                client=peer.handle,
                reason=waiter.reason,
                ttl=waiter.ttl,
            )
            room.lock = _lease_of(got)
            self._arm_expiry(room)
            if got["result"] == "granted":
                if room.waiters and room.waiters[0] is waiter:
                    room.waiters.popleft()
                self._granted(peer, waiter.request_id, got.get("record"), got["lease"])
            return

    async def _shared_presence(self, room: Room, peer: Peer, delta: int) -> None:
        store: Any = self.store
        await store.presence(room.name, peer.operator, delta)
        everyone = await store.who(room.name)
        total = everyone.get(peer.operator, 0)
        room.everyone = everyone
        if (delta > 0 and total == 1) or (delta < 0 and total == 0):
            frame = {
                "type": "presence",
                "v": PROTOCOL_VERSION,
                "room": room.name,
                "offset": None,
                "time": _now(),
                "op": "join" if delta > 0 else "leave",
                "operator": peer.operator,
                "client": peer.handle,
                "who": room.who(),
            }
            await store.announce(room.name, dumps(frame))

    async def _on_presence_frame(self, name: str, text: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        try:
            room.everyone = {w["operator"]: w["connections"] for w in json.loads(text)["who"]}
        except Exception:
            return
        self._send_room(room, None, text)

    async def _refresh_presence(self) -> None:
        store: Any = self.store
        for room in list(self.rooms.values()):
            if room.presence:
                await store.presence(room.name, "", 0)


def _lease_of(got: dict[str, Any]) -> Lease | None:
    """The store's view of a lease (``RedisStore.lease``) as a :class:`Lease`."""
    lease = got.get("lease")
    if not lease:
        return None
    return Lease(
        operator=lease["operator"],
        session=got.get("session") or "",
        reason=lease.get("reason") or "",
        ttl=float(lease["ttl"]),
        since=float(lease["since"]),
        expires=float(lease["expires"]),
        stale=bool(lease.get("stale")),
    )


def _peer_addr(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"


def tls_context(cert: str, key: str | None) -> ssl.SSLContext:
    """Server TLS context from a PEM certificate (chain) and key. Raises ``ssl.SSLError``/``OSError``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


if __name__ == "__main__":  # python -m relay.server [relay options]
    from tui.cli import main  # until relay/__main__.py serves on its own

    sys.exit(main(["relay", *sys.argv[1:]]))

"""A room as the relay holds it in memory: who is in it, its lease, its snapshot.

Plain data and the pure logic over it, no networking: :class:`Room` (subscribers,
presence, the lease and its waiters, the kept chat and the current deploy),
:class:`Peer` (one authenticated connection), :class:`Lease` (the room's deploy
lock), :class:`Waiter` (a queued ``acquire``), the current deploy as a late joiner
needs it (the engine's one reducer, :class:`engine.state.RunState`, bounded by
:data:`SNAPSHOT_BOUNDS`) and :func:`load_room` (a room read back from its store).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.approvals import ApprovalRule
from engine.events import Event, EventDecodeError, MaintenanceChanged, PlanReady
from engine.state import Bounds, RunState
from relay.limits import Limits
from relay.protocol import (
    PROTOCOL_VERSION,
    SNAPSHOT_DETAIL_CHARS,
    SNAPSHOT_FINISHED_BYTES,
    SNAPSHOT_LABEL_CHARS,
    SNAPSHOT_LOG_CHARS,
    SNAPSHOT_META_BYTES,
    ProtocolError,
    Snapshot,
    check_event,
)
from relay.store import Record, RoomInfo, Store

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

log = logging.getLogger("shipdeck.relay")


def session_hash(session: str) -> str:
    """What the relay keeps of a client's session id (never the id itself)."""
    return hashlib.sha256(session.encode()).hexdigest()


def client_handle(operator: str, shash: str) -> str:
    """Public id of one client session, shown to others (in presence and leases)."""
    return hashlib.sha256(f"{operator}\0{shash}".encode()).hexdigest()[:12]


def now() -> float:
    """Wall-clock time as the relay stamps messages and leases (ms precision)."""
    return round(time.time(), 3)


# -- the lease ------------------------------------------------------------------------


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

    def held_by(self, peer: Peer) -> bool:
        """True if ``peer``'s session (and operator) holds this lease."""
        return self.session == peer.session and self.operator == peer.operator

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
        """The lease as stored (its public view plus the holder's session hash)."""
        return {**self.public(), "session": self.session}

    @classmethod
    def from_state(cls, data: dict[str, Any], session: str | None = None) -> Lease:
        """A lease from :meth:`state` (or from a public view plus ``session``).
        Raises ``KeyError``/``ValueError`` on a malformed one."""
        return cls(
            operator=data["operator"],
            session=data.get("session") or session or "",
            reason=data.get("reason") or "",
            ttl=float(data["ttl"]),
            since=float(data["since"]),
            expires=float(data["expires"]),
            stale=bool(data.get("stale")),
        )


@dataclass(slots=True)
class Waiter:
    """A peer's ``acquire`` with ``wait``, queued until the lease is free."""

    peer: Peer
    request_id: str
    reason: str
    ttl: float


# -- the deploy snapshot -------------------------------------------------------------

#: What a room's deploy state keeps, cut to the protocol's snapshot limits.
SNAPSHOT_BOUNDS = Bounds(
    label_chars=SNAPSHOT_LABEL_CHARS,
    detail_chars=SNAPSHOT_DETAIL_CHARS,
    log_chars=SNAPSHOT_LOG_CHARS,
    meta_bytes=SNAPSHOT_META_BYTES,
    finished_bytes=SNAPSHOT_FINISHED_BYTES,
)


def deploy_state(limits: Limits, saved: dict[str, Any] | None = None) -> RunState:
    """A room's deploy state (the engine's one reducer, bounded for snapshots): new,
    or read back from ``saved`` (:meth:`RunState.to_json`). Raises ``ValueError`` if
    ``saved`` does not hold a plan."""
    kw: dict[str, Any] = {
        "log_lines": limits.snapshot_logs,
        "log_bytes": limits.snapshot_log_bytes,
        "bounds": SNAPSHOT_BOUNDS,
    }
    return RunState(**kw) if saved is None else RunState.from_json(saved, **kw)


def _decode_events(raw: list[Any]) -> list[Event | None]:
    decoded: list[Event | None] = []
    for data in raw:
        try:
            decoded.append(check_event(data))
        except EventDecodeError:
            decoded.append(None)
    return decoded


# -- peers and rooms --------------------------------------------------------------------


def peer_addr(connection: ServerConnection) -> str:
    """``host:port`` of a connection's far end (``?`` if unknown), for the log."""
    try:
        host, port = connection.remote_address[:2]
        return f"{host}:{port}"
    except Exception:
        return "?"


#: Frames an ``observer`` may not send (they change the deploy or the lease).
OPERATOR_FRAMES = frozenset({"event", "control", "lock"})


class Peer:
    """One authenticated connection, in at most one room."""

    __slots__ = (
        "ws",
        "operator",
        "role",
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

    def __init__(self, ws: ServerConnection, operator: str, role: str = "operator") -> None:
        self.ws = ws
        self.operator = operator
        #: ``observer``, ``operator`` or ``admin`` (from the tokens file).
        self.role = role
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

    def forbidden(self, frame: dict[str, Any]) -> ProtocolError | None:
        """The ``forbidden`` error for a frame this peer's role may not send, else None:
        an observer reads and chats, but takes no lock, controls and publishes nothing;
        only an admin breaks a lease."""
        if frame["type"] == "lock" and frame["op"] == "break" and self.role != "admin":
            return ProtocolError("forbidden", "only an admin breaks a lease", frame.get("id"))
        if self.role != "observer" or frame["type"] not in OPERATOR_FRAMES:
            return None
        return ProtocolError(
            "forbidden",
            f"{self.operator} is an observer: {frame['type']} frames need the operator"
            " or admin role",
            frame.get("id"),
        )

    def queue(self, offset: int | None, text: str, limits: Limits) -> bool:
        """Queue a frame while the peer joins; False if its queue is full."""
        if (
            len(self.pending) >= limits.max_pending
            or self.pending_bytes + len(text) > limits.max_pending_bytes
        ):
            return False
        self.pending.append((offset, text))
        self.pending_bytes += len(text)
        return True

    async def replay(self, store: Store, room: str, start: int, limits: Limits) -> int:
        """Send the stored messages after ``start``; returns the last offset sent.
        Raises what the store and the connection raise."""
        last = start
        while not self.dropped:
            recs = await store.read(room, last, limits.replay_page, limits.replay_bytes)
            if not recs:
                break
            for rec in recs:
                if self.dropped:
                    break
                await self.ws.send(rec.text)
            last = recs[-1].offset
            del recs
        return last

    async def drain(self, last: int) -> None:
        """Send what was queued while joining, past offset ``last`` (already sent)."""
        while self.pending and not self.dropped:
            offset, text = self.pending.popleft()
            self.pending_bytes -= len(text)
            if offset is not None and offset <= last:
                continue
            await self.ws.send(text)
            if offset is not None:
                last = offset


class Room:
    """One room in memory: subscribers, presence, lease, kept chat, current deploy."""

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
        "applied",
        "chat",
        "mutex",
        "dirty",
        "timer",
        "everyone",
        "follower",
        "roles",
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
        #: Connections per operator on this relay node.
        self.presence: dict[str, int] = {}
        self.lock: Lease | None = None
        self.waiters: deque[Waiter] = deque()
        #: The current deploy (None until a plan is published), and the offset of the
        #: last event message applied to it.
        self.deploy: RunState | None = None
        self.applied = 0
        self.chat: deque[Record] = deque()
        self.mutex = asyncio.Lock()
        self.dirty = False
        #: Fires when the lease is due to go stale.
        self.timer: asyncio.TimerHandle | None = None
        #: With several relay nodes: connections per operator over every node (else None).
        self.everyone: dict[str, int] | None = None
        #: With several relay nodes: the task delivering the room from its stored log.
        self.follower: asyncio.Task[Any] | None = None
        #: Role of each operator (from the tokens file; shown in presence).
        self.roles: dict[str, str] = {}

    def who(self) -> list[dict[str, Any]]:
        counts = self.presence if self.everyone is None else self.everyone
        out: list[dict[str, Any]] = []
        for op, n in sorted(counts.items()):
            entry: dict[str, Any] = {"operator": op, "connections": n}
            if op in self.roles:
                entry["role"] = self.roles[op]
            out.append(entry)
        return out

    def snapshot(self) -> Snapshot:
        return Snapshot(
            head=self.head,
            deploy=self._deploy_json(),
            lock=self.lock.public() if self.lock else None,
            chat=[r.frame() for r in self.chat],
            presence=self.who(),
        )

    def _deploy_json(self) -> dict[str, Any] | None:
        return None if self.deploy is None else self.deploy.to_json()

    def saved_deploy(self) -> dict[str, Any] | None:
        """The deploy state as stored (its snapshot plus the offset it is built to)."""
        if self.deploy is None:
            return None
        return {**self.deploy.to_json(), "applied": self.applied}

    def restore_deploy(self, saved: dict[str, Any]) -> None:
        """Read back :meth:`saved_deploy`. Raises ``ValueError`` if it holds no plan."""
        self.deploy = deploy_state(self.limits, saved)
        self.applied = int(saved.get("applied", 0))

    def lease_free(self) -> bool:
        """Nobody holds the lease, or its holder went stale."""
        return self.lock is None or self.lock.stale

    def holds(self, peer: Peer) -> bool:
        """True if ``peer`` holds the room's lease."""
        return self.lock is not None and self.lock.held_by(peer)

    def queue(self, waiter: Waiter) -> None:
        """Queue ``waiter`` for the lease (replacing its peer's earlier request)."""
        self.unqueue(waiter.peer)
        self.waiters.append(waiter)

    def unqueue(self, peer: Peer) -> None:
        """Forget ``peer``'s queued requests for the lease."""
        self.waiters = deque(w for w in self.waiters if w.peer is not peer)

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
            self._observe_events(rec, decoded)

    def _observe_events(self, rec: Record, decoded: list[Event] | None) -> None:
        raw = rec.body.get("events") or []
        events: list[Event | None] = list(decoded) if decoded is not None else _decode_events(raw)
        for event, data in zip(events, raw, strict=False):
            if event is None:
                continue
            # a maintenance change is the room's: kept even before any deploy
            if self.deploy is None and isinstance(event, (PlanReady, MaintenanceChanged)):
                self.deploy = deploy_state(self.limits)
            if self.deploy is not None:
                self.deploy.apply(event, data)
        if self.deploy is not None:
            self.applied = rec.offset
            self.dirty = True

    def observe_safely(self, rec: Record, decoded: list[Event] | None = None) -> None:
        """:meth:`observe`, logging instead of raising: the message is stored, and a
        snapshot bug must not lose it."""
        try:
            self.observe(rec, decoded)
        except Exception:
            log.exception("could not apply message %d of %s to the snapshot", rec.offset, self.name)


def approval_refusal(room: Room, deployer: str, by: str, frame: dict[str, Any]) -> str | None:
    """Why an ``approve`` control from ``by`` must not reach ``deployer``'s run, else
    None: under the four-eyes rule the room's deploy carries (its plan's meta), the
    deploying operator's own approval, or a second one by the same operator on a gate
    (:meth:`engine.gates.ApprovalRule.refusal`, the engine's own words)."""
    if frame.get("action") != "approve" or room.deploy is None:
        return None
    state = room.deploy
    rule = ApprovalRule.from_meta(state.meta)
    key = frame.get("key") or state.waiting_gate or ""
    given = [a["by"] for a in state.approvals.get(key, [])]
    return rule.refusal(deployer, by, given)


def presence_frame(room: Room, op: str, peer: Peer) -> dict[str, Any]:
    """The ``presence`` frame telling a room that ``peer``'s operator came or went."""
    return {
        "type": "presence",
        "v": PROTOCOL_VERSION,
        "room": room.name,
        "offset": None,
        "time": now(),
        "op": op,
        "operator": peer.operator,
        "role": peer.role,
        "client": peer.handle,
        "who": room.who(),
    }


# -- reading a room back ---------------------------------------------------------------


async def load_room(store: Store, name: str, limits: Limits) -> Room:
    """The room ``name`` as its store holds it: kept chat and deploy snapshot up to
    the stored head (the lease and presence are the coordinator's). Raises what the
    store raises."""
    info = await store.open_room(name)
    room = Room(name, info.epoch, info.head, limits)
    for rec in await store.last(name, "chat", limits.snapshot_chat):
        if rec.offset <= info.head:
            room.add_chat(rec)
    state = await store.get_state(name, "deploy")
    if state:
        room.restore_deploy(state)
    await _replay_events(store, room, await _applied_up_to(store, room, info.first))
    return room


async def _applied_up_to(store: Store, room: Room, first: int) -> int:
    """Offset up to which the room's snapshot is already built: the saved deploy
    state's, or where the room last left memory without any deploy, or nothing."""
    if room.deploy is not None:
        return room.applied
    scanned = await store.get_state(room.name, "scanned")
    after = first - 1
    if isinstance(scanned, dict) and scanned.get("epoch") == room.epoch:
        after = max(after, min(int(scanned.get("head") or 0), room.head))
    return after


async def _replay_events(store: Store, room: Room, after: int) -> None:
    """Apply the stored events after ``after`` up to the room's head (later ones are
    delivered live)."""
    lim = room.limits
    while True:
        recs = await store.read(room.name, after, lim.replay_page, lim.replay_bytes)
        recs = [r for r in recs if r.offset <= room.head]
        if not recs:
            return
        for rec in recs:
            if rec.type == "event":
                room.observe_safely(rec)
        after = recs[-1].offset


def resume_point(
    hello: dict[str, Any], epoch: str, info: RoomInfo, head: int
) -> tuple[int | None, int, bool | None, bool]:
    """Where a joiner's replay starts: ``(start, head, recovered, truncated)``.

    ``resume`` (epoch, offset) recovers if the epoch matches and the offset is
    retained (with several nodes it may be past this node's head, up to the stored
    one); ``since`` replays from an offset, clamped to what is retained."""
    resume, since = hello.get("resume"), hello.get("since")
    first = info.first
    if resume is not None:
        ok = resume["epoch"] == epoch and first - 1 <= resume["offset"] <= head
        if not ok:
            return None, head, False, False
        return resume["offset"], max(head, resume["offset"]), True, False
    if since is not None:
        return min(max(since, first - 1), head), head, None, since < first - 1
    return None, head, None, False


__all__ = [
    "SNAPSHOT_BOUNDS",
    "deploy_state",
    "Lease",
    "Limits",
    "Peer",
    "Room",
    "Waiter",
    "approval_refusal",
    "client_handle",
    "load_room",
    "now",
    "peer_addr",
    "presence_frame",
    "resume_point",
    "session_hash",
]

"""Who coordinates a room: this relay node alone, or every node sharing a Redis.

The server keeps connections, auth, dispatch and fan-out; everything about a room
that several relay nodes would have to agree on goes through one
:class:`Coordinator`: storing and delivering messages, the deploy lease and its
waiters, presence, and noticing that a room's log was reset.

- :class:`LocalCoordinator`: one node owns its rooms; it stores a message and fans it
  out itself, keeps the lease in the room (persisted in the store's state) and
  expires it with a timer.
- :class:`relay.redis_coordinator.RedisCoordinator`: several nodes share rooms
  through a :class:`relay.redis_store.RedisStore`; each node delivers a room by
  following its stored stream, and the lease and presence live in Redis.

:func:`relay.redis_coordinator.coordinator_for` picks the one that fits a store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from engine.events import Event
from relay.protocol import RELAY_SENDER, dumps
from relay.rooms import Lease, Peer, Room, Waiter, now, presence_frame
from relay.store import Record, RoomInfo, Store

log = logging.getLogger("shipdeck.relay")

#: Answers a lease request: ``await ack(record, **fields)`` sends the ``ack`` frame
#: (``record``: the ``lock`` message stored with it, if any).
Ack = Callable[..., Awaitable[None]]


class Hub(Protocol):
    """What a coordinator needs of the server that holds the connections."""

    store: Store
    rooms: dict[str, Room]

    @property
    def closing(self) -> bool:
        """True once the relay is shutting down."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background until it ends or the relay stops."""
        ...

    def send_room(self, room: Room, offset: int | None, text: str) -> None:
        """Write one frame to every subscriber of ``room`` on this node."""
        ...

    def drop_slow(self, room: Room, peer: Peer) -> None:
        """Close ``peer`` (4000) so it resumes from its offset."""
        ...

    def granted(
        self, peer: Peer, request_id: str, rec: Record | None, lease: dict[str, Any]
    ) -> None:
        """Tell a queued waiter its ``acquire`` was granted."""
        ...


class Coordinator(Protocol):
    """Rooms' shared state and delivery. Methods raise what the store raises
    (:attr:`unavailable` lists the errors that mean "try again later")."""

    #: Store errors after which a client should reconnect later (close code 1013)
    #: rather than the relay failing the connection.
    unavailable: tuple[type[BaseException], ...]

    async def start(self) -> None:
        """Start background work (called once the relay listens)."""
        ...

    async def tick(self) -> None:
        """Periodic upkeep (called every ``state_flush`` seconds)."""
        ...

    async def attach(self, room: Room) -> None:
        """A room was read back from the store into memory: load its lease (and
        presence), and start delivering it."""
        ...

    def detach(self, room: Room) -> None:
        """A room leaves memory: stop its timers and tasks."""
        ...

    async def head(self, room: Room, info: RoomInfo) -> int | None:
        """The offset a joiner may be promised, given the store's ``info``; None if
        the room's log was reset (its connections are then being closed)."""
        ...

    async def joined(self, room: Room, peer: Peer) -> None:
        """``peer`` was counted in ``room.presence``: tell the room if it is news."""
        ...

    async def left(self, room: Room, peer: Peer) -> None:
        """``peer`` was uncounted from ``room.presence``: tell the room if it is news."""
        ...

    async def publish(
        self,
        room: Room,
        sender: str,
        client_id: str | None,
        type: str,
        body: dict[str, Any],
        decoded: list[Event] | None = None,
    ) -> tuple[Record, bool]:
        """Store one message and have it delivered to the room; returns it and whether
        it was a duplicate (acknowledged, not resent)."""
        ...

    async def lease(self, room: Room) -> Lease | None:
        """The room's current lease (as fresh as the coordinator knows it)."""
        ...

    async def acquire(
        self, room: Room, peer: Peer, request_id: str, reason: str, ttl: float, wait: bool, ack: Ack
    ) -> None:
        """Take (or renew) the lease for ``peer``, or queue it if ``wait``."""
        ...

    async def heartbeat(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        """Extend ``peer``'s lease; ``lost`` if it no longer holds it."""
        ...

    async def release(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        """Give up ``peer``'s lease (and any queued request), serving the next waiter."""
        ...

    async def break_lease(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        """Free the lease whoever holds it (an admin's ``break``), stored as a ``lock``
        message ``broken`` sent by ``peer``, then serve the next waiter."""
        ...


class LocalCoordinator:
    """One relay node owns its rooms: it stores, fans out and keeps the lease itself."""

    unavailable: tuple[type[BaseException], ...] = ()

    def __init__(self, store: Store, hub: Hub) -> None:
        self.store = store
        self.hub = hub

    async def start(self) -> None:
        return None

    async def tick(self) -> None:
        return None

    async def attach(self, room: Room) -> None:
        state = await self.store.get_state(room.name, "lock")
        if state and state.get("session"):
            room.lock = Lease.from_state(state)
            self._arm_expiry(room)

    def detach(self, room: Room) -> None:
        if room.timer is not None:
            room.timer.cancel()
            room.timer = None

    async def head(self, room: Room, info: RoomInfo) -> int | None:
        return room.head  # this node wrote everything stored, and delivered it

    async def joined(self, room: Room, peer: Peer) -> None:
        if room.presence.get(peer.operator) == 1:
            self.hub.send_room(room, None, dumps(presence_frame(room, "join", peer)))

    async def left(self, room: Room, peer: Peer) -> None:
        if peer.operator not in room.presence:
            self.hub.send_room(room, None, dumps(presence_frame(room, "leave", peer)))

    async def publish(
        self,
        room: Room,
        sender: str,
        client_id: str | None,
        type: str,
        body: dict[str, Any],
        decoded: list[Event] | None = None,
    ) -> tuple[Record, bool]:
        async with room.mutex:
            rec, duplicate = await self.store.append(
                room.name, sender, client_id, type, body, now()
            )
            if duplicate:
                return rec, True
            room.head = rec.offset
            room.observe_safely(rec, decoded)
            self.hub.send_room(room, rec.offset, rec.text)
            return rec, False

    async def lease(self, room: Room) -> Lease | None:
        return room.lock

    # -- the lease --------------------------------------------------------------------

    async def acquire(
        self, room: Room, peer: Peer, request_id: str, reason: str, ttl: float, wait: bool, ack: Ack
    ) -> None:
        at = now()
        lease = room.lock
        if lease is not None and lease.held_by(peer):
            lease.ttl, lease.expires = ttl, at + ttl
            lease.reason = reason or lease.reason
            rec = await self._changed(room, peer.operator, "resumed" if lease.stale else None)
            await ack(rec, granted=True, lease=lease.public())
        elif lease is None or lease.stale or lease.expires <= at:
            room.lock = Lease(peer.operator, peer.session, reason, ttl, at, at + ttl)
            op = "acquired" if lease is None else "takeover"
            rec = await self._changed(room, peer.operator, op, previous=lease)
            await ack(rec, granted=True, lease=room.lock.public())
        else:
            if wait:
                room.queue(Waiter(peer, request_id, reason, ttl))
            await ack(None, granted=False, queued=wait, holder=lease.public())

    async def heartbeat(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        lease = room.lock
        if lease is None or not lease.held_by(peer):
            await ack(None, granted=False, lost=True, holder=lease.public() if lease else None)
            return
        lease.expires = now() + lease.ttl
        rec = await self._changed(room, peer.operator, "resumed" if lease.stale else None)
        await ack(rec, granted=True, lease=lease.public())

    async def release(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        room.unqueue(peer)
        lease = room.lock
        if lease is None or not lease.held_by(peer):
            await ack(None, released=False)
            return
        room.lock = None
        rec = await self._changed(room, peer.operator, "released", previous=lease)
        await ack(rec, released=True)
        await self._grant_next(room, None)

    async def break_lease(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        lease = room.lock
        if lease is None:
            await ack(None, released=False)
            return
        room.lock = None
        rec = await self._changed(room, peer.operator, "broken", previous=lease)
        await ack(rec, released=True)
        await self._grant_next(room, None)

    async def _changed(
        self, room: Room, sender: str, op: str | None, previous: Lease | None = None
    ) -> Record | None:
        """Persist the lease, re-arm its expiry, and (if ``op``) store a visible message."""
        lease = room.lock
        if lease is not None:
            lease.stale = False if op == "resumed" else lease.stale
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
        self.detach(room)
        lease = room.lock
        if lease is None or lease.stale:
            return
        delay = max(0.0, lease.expires - time.time())
        room.timer = asyncio.get_running_loop().call_later(
            delay + 0.01, lambda: self.hub.spawn(self._expire(room))
        )

    async def _expire(self, room: Room) -> None:
        lease = room.lock
        if lease is None or lease.stale:
            return
        if lease.expires > time.time():
            self._arm_expiry(room)
            return
        lease.stale = True
        log.warning(
            "lock in %s held by %s went stale (no heartbeat for %.0fs)",
            room.name,
            lease.operator,
            lease.ttl,
        )
        await self._changed(room, RELAY_SENDER, "stale")
        await self._grant_next(room, lease)

    async def _grant_next(self, room: Room, previous: Lease | None) -> None:
        while room.waiters and room.lease_free():
            waiter = room.waiters.popleft()
            peer = waiter.peer
            if peer not in room.subs:
                continue
            at = now()
            room.lock = Lease(
                peer.operator, peer.session, waiter.reason, waiter.ttl, at, at + waiter.ttl
            )
            op = "takeover" if previous else "acquired"
            rec = await self._changed(room, peer.operator, op, previous=previous)
            self.hub.granted(peer, waiter.request_id, rec, room.lock.public())
            return


__all__ = ["Ack", "Coordinator", "Hub", "LocalCoordinator"]

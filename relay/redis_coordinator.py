"""Rooms shared by several relay nodes through Redis (:class:`RedisCoordinator`).

Every node delivers a room by following the room's stored stream, so clients on
different nodes see the same messages in the same order (what a node stored itself
comes back the same way). The lease is one Redis key changed only by atomic scripts
(:meth:`relay.redis_store.RedisStore.lease`); presence is counted per node in Redis
and announced over pub/sub.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from engine.events import Event
from relay.coordinator import Ack, Coordinator, Hub, LocalCoordinator
from relay.protocol import CLOSE_RESTART, dumps
from relay.redis_store import RedisStore
from relay.rooms import Lease, Peer, Room, Waiter, now, presence_frame
from relay.store import Record, RoomInfo, Store

log = logging.getLogger("shipdeck.relay")


def lease_of(got: dict[str, Any]) -> Lease | None:
    """The store's view of a lease (:meth:`RedisStore.lease`) as a :class:`Lease`."""
    lease = got.get("lease")
    if not lease:
        return None
    return Lease.from_state(lease, got.get("session") or "")


class RedisCoordinator:
    """Rooms on a :class:`RedisStore` that other relay nodes share."""

    unavailable: tuple[type[BaseException], ...] = (OSError, RedisError)

    def __init__(self, store: RedisStore, hub: Hub) -> None:
        self.store = store
        self.hub = hub

    async def start(self) -> None:
        self.hub.spawn(self.store.listen(self._on_presence_frame))

    async def tick(self) -> None:
        """Refresh this node's presence in the rooms it has people in."""
        for room in list(self.hub.rooms.values()):
            if room.presence:
                await self.store.presence(room.name, "", 0)

    async def attach(self, room: Room) -> None:
        await self._refresh_lease(room)
        room.everyone = await self.store.who(room.name)
        room.follower = self.hub.spawn(self._follow(room))

    def detach(self, room: Room) -> None:
        if room.timer is not None:
            room.timer.cancel()
            room.timer = None
        if room.follower is not None and room.follower is not asyncio.current_task():
            room.follower.cancel()

    async def head(self, room: Room, info: RoomInfo) -> int | None:
        if info.epoch != room.epoch:
            self._epoch_changed(room, info.epoch)
            return None
        # This node may not have followed the store's newest messages yet (its reader
        # was reconnecting to Redis, say): the client is promised everything stored,
        # and the replay reads the store itself.
        return max(room.head, info.head)

    async def joined(self, room: Room, peer: Peer) -> None:
        await self._presence(room, peer, +1)

    async def left(self, room: Room, peer: Peer) -> None:
        await self._presence(room, peer, -1)

    async def publish(
        self,
        room: Room,
        sender: str,
        client_id: str | None,
        type: str,
        body: dict[str, Any],
        decoded: list[Event] | None = None,
    ) -> tuple[Record, bool]:
        # Stored atomically by the store; every node (this one included) delivers it
        # from the room's stream, in the stream's order (see _follow).
        return await self.store.append(room.name, sender, client_id, type, body, now())

    async def lease(self, room: Room) -> Lease | None:
        return await self._refresh_lease(room)

    # -- the lease --------------------------------------------------------------------

    @staticmethod
    def _who(peer: Peer) -> dict[str, str]:
        return {"operator": peer.operator, "session": peer.session, "client": peer.handle}

    async def acquire(
        self, room: Room, peer: Peer, request_id: str, reason: str, ttl: float, wait: bool, ack: Ack
    ) -> None:
        got = await self.store.lease(
            room.name, "acquire", reason=reason, ttl=ttl, **self._who(peer)
        )
        self._seen(room, got)
        if got["result"] == "granted":
            await ack(got.get("record"), granted=True, lease=got["lease"])
            return
        if wait:
            room.queue(Waiter(peer, request_id, reason, ttl))
        await ack(None, granted=False, queued=wait, holder=got["lease"])
        if wait and room.lease_free():  # released between the attempt and the queueing
            await self._grant_next(room)

    async def heartbeat(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        got = await self.store.lease(room.name, "heartbeat", **self._who(peer))
        self._seen(room, got)
        if got["result"] == "granted":
            await ack(got.get("record"), granted=True, lease=got["lease"])
        else:
            await ack(None, granted=False, lost=True, holder=got["lease"])

    async def release(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        room.unqueue(peer)
        got = await self.store.lease(room.name, "release", **self._who(peer))
        if got["result"] != "released":
            await ack(None, released=False)
            return
        room.lock = None
        self._arm_expiry(room)
        await ack(got.get("record"), released=True)
        await self._grant_next(room)

    async def break_lease(self, room: Room, peer: Peer, request_id: str, ack: Ack) -> None:
        lease = await self._refresh_lease(room)
        if lease is None:
            await ack(None, released=False)
            return
        holder = {"operator": lease.operator, "session": lease.session, "client": lease.client}
        got = await self.store.lease(room.name, "release", **holder)
        if got["result"] != "released":
            await ack(None, released=False)
            return
        room.lock = None
        self._arm_expiry(room)
        body = {"op": "broken", "holder": None, "previous": lease.public()}
        rec, _ = await self.publish(room, peer.operator, None, "lock", body)
        await ack(rec, released=True)
        await self._grant_next(room)

    def _seen(self, room: Room, got: dict[str, Any]) -> None:
        room.lock = lease_of(got)
        self._arm_expiry(room)

    async def _refresh_lease(self, room: Room) -> Lease | None:
        """Read the lease from the store into ``room.lock`` and re-arm its expiry."""
        self._seen(room, await self.store.lease(room.name, "get"))
        return room.lock

    def _arm_expiry(self, room: Room, delay: float | None = None) -> None:
        if room.timer is not None:
            room.timer.cancel()
            room.timer = None
        lease = room.lock
        if delay is None:
            if lease is None or lease.stale:
                return
            delay = max(0.0, lease.expires - time.time()) + 0.01
        room.timer = asyncio.get_running_loop().call_later(
            delay, lambda: self.hub.spawn(self._expire(room))
        )

    async def _expire(self, room: Room) -> None:
        try:
            lease = await self._refresh_lease(room)  # re-arms if it was extended
            if lease is None or lease.stale or lease.expires > time.time():
                return
            got = await self.store.lease(room.name, "stale", since=lease.since)
            if got["result"] == "stale":  # this node saw it first; others see the message
                log.warning(
                    "lock in %s held by %s went stale (no heartbeat for %.0fs)",
                    room.name,
                    lease.operator,
                    lease.ttl,
                )
            self._seen(room, got)
            await self._grant_next(room)
        except Exception as exc:
            log.warning("%s: lease expiry check failed: %s", room.name, exc)
            self._arm_expiry(room, delay=1.0)

    async def _grant_next(self, room: Room) -> None:
        """Offer a free or stale lease to this node's first waiter (atomically: a
        waiter on another node may win it instead)."""
        while room.waiters and room.lease_free():
            waiter = room.waiters[0]
            peer = waiter.peer
            if peer not in room.subs:
                room.waiters.popleft()
                continue
            got = await self.store.lease(
                room.name, "grant", reason=waiter.reason, ttl=waiter.ttl, **self._who(peer)
            )
            self._seen(room, got)
            if got["result"] == "granted":
                if room.waiters and room.waiters[0] is waiter:
                    room.waiters.popleft()
                self.hub.granted(peer, waiter.request_id, got.get("record"), got["lease"])
            return

    async def _lock_seen(self, room: Room, rec: Record) -> None:
        """A ``lock`` message came through the log: refresh the lease, serve waiters."""
        try:
            await self._refresh_lease(room)
            if rec.body.get("op") in ("released", "stale") and room.waiters:
                await self._grant_next(room)
        except Exception as exc:
            log.warning("%s: could not refresh the lease: %s", room.name, exc)

    # -- delivery ---------------------------------------------------------------------

    async def _follow(self, room: Room) -> None:
        """Deliver the room from its stored log, in the log's order, on this node."""
        failures = 0
        while not self.hub.closing:
            try:
                recs = await self.store.follow(room.name, room.head, block=5.0)
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
                await self._check_epoch(room)  # an idle moment: was the log reset?
            elif not await self._gap(room, recs[0].offset):
                self._deliver(room, recs)

    async def _gap(self, room: Room, first: int) -> bool:
        """Check what a read from the log says about the room: True if the room was
        reset (new epoch; nothing to deliver). On a gap (messages trimmed before this
        node delivered them) the clients here are closed to resume afresh."""
        if first <= room.head + 1 or room.head <= 0:
            return False
        if await self._check_epoch(room):
            return True
        log.warning(
            "%s: messages %d..%d were removed before this node delivered them",
            room.name,
            room.head + 1,
            first - 1,
        )
        for peer in list(room.subs):
            self.hub.drop_slow(room, peer)
        return False

    def _deliver(self, room: Room, recs: list[Record]) -> None:
        for rec in recs:
            if rec.offset <= room.head:
                continue
            room.head = rec.offset
            room.observe_safely(rec)
            self.hub.send_room(room, rec.offset, rec.text)
            if rec.type == "lock":
                self.hub.spawn(self._lock_seen(room, rec))

    async def _check_epoch(self, room: Room) -> bool:
        try:
            info = await self.store.info(room.name)
        except Exception:
            return False
        if info.epoch != room.epoch:
            self._epoch_changed(room, info.epoch)
            return True
        return False

    def _epoch_changed(self, room: Room, epoch: str) -> None:
        """The room's log was lost (new epoch): start over; clients resume afresh."""
        log.warning("%s: the stored log was lost (new epoch %s)", room.name, epoch)
        self.hub.rooms.pop(room.name, None)
        self.detach(room)
        room.head = 1 << 62  # stop the old follower delivering anything more
        for peer in list(room.subs):
            room.subs.discard(peer)
            peer.live = False
            peer.dropped = True
            self.hub.spawn(peer.ws.close(CLOSE_RESTART, "room log was reset; reconnect"))

    # -- presence ---------------------------------------------------------------------

    async def _presence(self, room: Room, peer: Peer, delta: int) -> None:
        await self.store.presence(room.name, peer.operator, delta)
        everyone = await self.store.who(room.name)
        total = everyone.get(peer.operator, 0)
        room.everyone = everyone
        if (delta > 0 and total == 1) or (delta < 0 and total == 0):
            frame = presence_frame(room, "join" if delta > 0 else "leave", peer)
            await self.store.announce(room.name, dumps(frame))

    async def _on_presence_frame(self, name: str, text: str) -> None:
        room = self.hub.rooms.get(name)
        if room is None:
            return
        try:
            room.everyone = {w["operator"]: w["connections"] for w in json.loads(text)["who"]}
        except Exception:
            return
        self.hub.send_room(room, None, text)


__all__ = ["RedisCoordinator", "coordinator_for", "lease_of"]


def coordinator_for(store: Store, hub: Hub) -> Coordinator:
    """The coordinator for ``store``: Redis-shared if other nodes write to it
    (``store.shared``), else local."""
    if getattr(store, "shared", False):
        from relay.redis_store import RedisStore

        assert isinstance(store, RedisStore)
        return RedisCoordinator(store, hub)
    return LocalCoordinator(store, hub)

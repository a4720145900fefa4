"""The rooms one relay node holds in memory.

A room is read back from the store when someone first joins it
(:func:`relay.rooms.load_room`, then its coordinator attaches the lease and
delivery), its deploy snapshot is flushed to the store now and then, and a room
nobody uses leaves memory again: after ``room_idle`` seconds, or at once beyond
``max_idle_rooms`` idle ones. Retention (old messages removed from the store) is
applied here too, so kept chats never outlive their messages.
"""

from __future__ import annotations

import asyncio
import logging
import time

from relay.coordinator import Coordinator
from relay.rooms import Limits, Room, load_room
from relay.store import Store

log = logging.getLogger("shipdeck.relay")


class RoomRegistry:
    """Rooms in memory by name, loaded on demand and evicted when idle."""

    def __init__(self, store: Store, limits: Limits, coordinator: Coordinator) -> None:
        self.store = store
        self.limits = limits
        self.coordinator = coordinator
        self.rooms: dict[str, Room] = {}
        self._loading = asyncio.Lock()

    async def get(self, name: str) -> Room:
        """The room ``name``, read back from the store if it is not in memory.
        Raises what the store raises."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        async with self._loading:
            room = self.rooms.get(name)
            if room is None:
                room = await load_room(self.store, name, self.limits)
                await self.coordinator.attach(room)
                self.rooms[name] = room
            return room

    def idle(self, room: Room, since: float | None = None) -> bool:
        """Nobody in the room, nobody waiting, no live lease, since ``since`` at least
        (default: for ``room_idle`` seconds)."""
        if since is None:
            since = time.monotonic() - self.limits.room_idle
        return (
            room.idle_since is not None
            and room.idle_since <= since
            and not room.subs
            and not room.waiters
            and room.lease_free()
            and not room.mutex.locked()
        )

    async def evict_idle(self) -> int:
        """Let idle rooms leave memory (their state is saved first); returns how many.

        The next join reads the room back from the store: chat, deploy snapshot and
        lease as they were."""
        now = time.monotonic()
        idle = sorted(
            (r for r in self.rooms.values() if self.idle(r, now)),
            key=lambda r: r.idle_since or 0.0,
        )
        excess = len(idle) - self.limits.max_idle_rooms
        evicted = 0
        for i, room in enumerate(idle):
            since = now if i < excess else now - self.limits.room_idle
            if not self.idle(room, since):
                continue
            await self._save(room)
            if not self.idle(room, since) or self.rooms.get(room.name) is not room:
                continue  # someone came in while the state was written
            del self.rooms[room.name]
            self.coordinator.detach(room)
            evicted += 1
        if evicted:
            log.info("%d idle rooms left memory (%d in memory)", evicted, len(self.rooms))
        return evicted

    async def _save(self, room: Room) -> None:
        """Save what a room leaving memory needs to be read back quickly."""
        if room.deploy is None:  # no deploy up to here: the next load starts here
            await self.store.put_state(
                room.name, "scanned", {"epoch": room.epoch, "head": room.head}
            )
        elif room.dirty:
            room.dirty = False
            await self.store.put_state(room.name, "deploy", room.saved_deploy())

    async def flush(self) -> None:
        """Write every changed deploy snapshot to the store."""
        for room in list(self.rooms.values()):
            if room.dirty and room.deploy is not None:
                room.dirty = False
                await self.store.put_state(room.name, "deploy", room.saved_deploy())

    async def retain(self) -> int:
        """Apply retention: remove old messages from the store, and removed chats from
        the rooms' snapshots. Returns how many messages were removed."""
        removed = await self.store.trim()
        if removed:
            log.info("retention removed %d old messages", removed)
            for room in list(self.rooms.values()):
                room.forget_chat_before((await self.store.info(room.name)).first)
        return removed


__all__ = ["RoomRegistry"]

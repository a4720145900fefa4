"""The coordinator on its own, both implementations against the same contract:
storing and delivering, the lease (acquire, queue, release, heartbeat, expiry),
presence, and a room read back with its lease. The Redis one runs on a real
``redis-server`` (skipped without it, except in CI)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from relay.coordinator import Coordinator, LocalCoordinator
from relay.limits import Limits
from relay.redis_coordinator import coordinator_for
from relay.rooms import Peer, Room, client_handle, load_room, session_hash
from relay.store import Record, SQLiteStore, Store
from tests.relay_redis.conftest import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(30)


class Conn:
    """Stands in for a peer's websocket: the coordinator only closes it."""

    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None
        self.was_closed = asyncio.Event()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.was_closed.set()


class Hub:
    """The server's side of the coordinator, recording what it is asked to do."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rooms: dict[str, Room] = {}
        self.closing = False
        self.sent: list[tuple[str, int | None, dict[str, Any]]] = []
        self.grants: list[tuple[Peer, str, Record | None, dict[str, Any]]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.changed = asyncio.Event()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def send_room(self, room: Room, offset: int | None, text: str) -> None:
        self.sent.append((room.name, offset, json.loads(text)))
        self.changed.set()

    def drop_slow(self, room: Room, peer: Peer) -> None:
        room.subs.discard(peer)

    def granted(
        self, peer: Peer, request_id: str, rec: Record | None, lease: dict[str, Any]
    ) -> None:
        self.grants.append((peer, request_id, rec, lease))
        self.changed.set()

    def frames(self, kind: str) -> list[dict[str, Any]]:
        return [f for _, _, f in self.sent if f["type"] == kind]

    async def wait(self, pred: Callable[[], Any], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()

    async def stop(self) -> None:
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class Node:
    """One relay node's coordinator on a store, with rooms loaded as the server does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.hub = Hub(store)
        self.coordinator: Coordinator = coordinator_for(store, self.hub)  # type: ignore[arg-type]

    async def room(self, name: str = "web") -> Room:
        room = await load_room(self.store, name, Limits())
        await self.coordinator.attach(room)
        self.hub.rooms[name] = room
        return room

    def peer(self, room: Room, operator: str, session: str = "s") -> Peer:
        peer = Peer(Conn(), operator)  # type: ignore[arg-type]
        peer.session = session_hash(f"{operator}-{session}")
        peer.handle = client_handle(operator, peer.session)
        peer.room = room
        room.subs.add(peer)
        return peer

    async def close(self) -> None:
        await self.hub.stop()
        for room in self.hub.rooms.values():
            self.coordinator.detach(room)


class Acks:
    """Collects the acks a coordinator sends for lease requests."""

    def __init__(self) -> None:
        self.got: list[tuple[Record | None, dict[str, Any]]] = []

    async def __call__(self, rec: Record | None, **fields: Any) -> None:
        self.got.append((rec, fields))

    @property
    def last(self) -> dict[str, Any]:
        return self.got[-1][1]


@pytest.fixture(params=["local", "redis"])
async def make_node(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    """A factory of nodes sharing one store: one SQLite file, or one Redis."""
    made: list[Node] = []
    stores: list[Store] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        from relay.redis_store import RedisStore

        def new_store() -> Store:
            return RedisStore(server.url)  # type: ignore[return-value]
    else:
        shared = SQLiteStore(tmp_path / "relay.db")

        def new_store() -> Store:
            return shared

    async def make() -> Node:
        store = new_store()
        if store not in stores:
            stores.append(store)
        node = Node(store)
        await node.coordinator.start()
        made.append(node)
        return node

    yield make
    for node in made:
        await node.close()
    for store in stores:
        await store.close()


async def test_the_store_picks_the_coordinator(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    assert isinstance(coordinator_for(store, Hub(store)), LocalCoordinator)  # type: ignore[arg-type]
    await store.close()


async def test_a_message_is_stored_once_and_delivered_once(make_node: Any) -> None:
    node = await make_node()
    room = await node.room()
    rec, dup = await node.coordinator.publish(room, "alice", "m1", "chat", {"text": "hi"})
    again, dup2 = await node.coordinator.publish(room, "alice", "m1", "chat", {"text": "hi"})
    assert (rec.offset, dup, again.offset, dup2) == (1, False, 1, True)
    await node.hub.wait(lambda: node.hub.frames("chat"))
    await node.coordinator.publish(room, "bob", "m2", "chat", {"text": "second"})
    await node.hub.wait(lambda: len(node.hub.frames("chat")) == 2)
    assert [(f["offset"], f["sender"], f["text"]) for f in node.hub.frames("chat")] == [
        (1, "alice", "hi"),
        (2, "bob", "second"),
    ]
    assert room.head == 2 and [r.body["text"] for r in room.chat] == ["hi", "second"]


async def test_lease_acquire_queue_release_hands_it_to_the_waiter(make_node: Any) -> None:
    node = await make_node()
    room = await node.room()
    alice, bob = node.peer(room, "alice"), node.peer(room, "bob")
    acks = Acks()
    await node.coordinator.acquire(room, alice, "a1", "deploy web", 30.0, False, acks)
    assert acks.last["granted"] is True and acks.last["lease"]["operator"] == "alice"
    assert acks.got[-1][0] is not None  # the "acquired" lock message it was stored with

    await node.coordinator.acquire(room, bob, "b1", "hotfix", 30.0, False, acks)
    assert acks.last == {
        "granted": False,
        "queued": False,
        "holder": acks.got[0][1]["lease"],
    }
    await node.coordinator.acquire(room, bob, "b2", "hotfix", 30.0, True, acks)
    assert acks.last["queued"] is True and [w.request_id for w in room.waiters] == ["b2"]

    await node.coordinator.heartbeat(room, bob, "b3", acks)
    assert acks.last["granted"] is False and acks.last["lost"] is True

    await node.coordinator.release(room, alice, "a2", acks)
    assert acks.last == {"released": True}
    await node.hub.wait(lambda: node.hub.grants)
    peer, request_id, _, lease = node.hub.grants[0]
    assert (peer, request_id, lease["operator"], lease["reason"]) == (bob, "b2", "bob", "hotfix")
    held = await node.coordinator.lease(room)
    assert held is not None and held.held_by(bob) and not room.waiters
    await node.hub.wait(lambda: len(node.hub.frames("lock")) == 3)
    assert [f["op"] for f in node.hub.frames("lock")] == ["acquired", "released", "acquired"]


async def test_a_lease_without_heartbeat_goes_stale_and_the_waiter_takes_over(
    make_node: Any,
) -> None:
    node = await make_node()
    room = await node.room()
    alice, bob = node.peer(room, "alice"), node.peer(room, "bob")
    acks = Acks()
    await node.coordinator.acquire(room, alice, "a1", "deploy", 0.3, False, acks)
    await node.coordinator.acquire(room, bob, "b1", "next", 30.0, True, acks)
    await node.hub.wait(lambda: node.hub.grants)
    await node.hub.wait(lambda: len(node.hub.frames("lock")) == 3)
    ops = [f["op"] for f in node.hub.frames("lock")]
    assert ops == ["acquired", "stale", "takeover"]
    takeover = node.hub.frames("lock")[-1]
    assert takeover["previous"]["operator"] == "alice" and takeover["holder"]["operator"] == "bob"
    assert node.hub.frames("lock")[1]["sender"] == "relay"


async def test_a_heartbeat_keeps_the_lease_and_resumes_a_stale_one(make_node: Any) -> None:
    node = await make_node()
    room = await node.room()
    alice = node.peer(room, "alice")
    acks = Acks()
    await node.coordinator.acquire(room, alice, "a1", "deploy", 30.0, False, acks)
    first = acks.last["lease"]["expires"]
    await asyncio.sleep(0.01)
    await node.coordinator.heartbeat(room, alice, "a2", acks)
    assert acks.last["granted"] is True and acks.last["lease"]["expires"] > first
    assert acks.got[-1][0] is None  # a plain heartbeat stores nothing


async def test_a_room_read_back_has_its_lease(make_node: Any) -> None:
    node = await make_node()
    room = await node.room()
    alice = node.peer(room, "alice")
    await node.coordinator.acquire(room, alice, "a1", "deploy web", 30.0, False, Acks())
    other = await make_node()  # a restarted relay, or a second node
    again = await other.room()
    lease = await other.coordinator.lease(again)
    assert lease is not None and lease.held_by(alice) and lease.reason == "deploy web"
    assert again.snapshot().lock == lease.public()


async def test_presence_is_announced_once_per_operator(make_node: Any) -> None:
    node = await make_node()
    room = await node.room()
    peers = [node.peer(room, "alice", session) for session in ("one", "two")]
    for peer in peers:  # counted as the server counts connections, then announced
        room.presence["alice"] = room.presence.get("alice", 0) + 1
        await node.coordinator.joined(room, peer)
    await node.hub.wait(lambda: node.hub.frames("presence"))
    joins = node.hub.frames("presence")
    assert [(f["op"], f["operator"]) for f in joins] == [("join", "alice")]
    assert joins[0]["who"] == [{"operator": "alice", "connections": 1}]
    for peer in peers:
        room.presence["alice"] -= 1
        if not room.presence["alice"]:
            del room.presence["alice"]
        await node.coordinator.left(room, peer)
    await node.hub.wait(lambda: len(node.hub.frames("presence")) == 2)
    leave = node.hub.frames("presence")[-1]
    assert (leave["op"], leave["operator"], leave["who"]) == ("leave", "alice", [])


async def test_local_rooms_promise_what_this_node_delivered(tmp_path: Path) -> None:
    node = Node(SQLiteStore(tmp_path / "r.db"))
    room = await node.room()
    await node.coordinator.publish(room, "alice", "m1", "chat", {"text": "hi"})
    assert await node.coordinator.head(room, await node.store.info("web")) == 1
    await node.close()
    await node.store.close()


async def test_redis_room_whose_log_was_lost_closes_its_clients(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    from relay.redis_store import RedisStore

    store = RedisStore(redis_server.url)
    node = Node(store)
    room = await node.room()
    alice = node.peer(room, "alice")
    await node.coordinator.publish(room, "alice", "m1", "chat", {"text": "hi"})
    await store.redis.flushdb()  # the stored log is gone: the next open starts a new epoch
    info = await store.info("web")
    assert info.epoch != room.epoch
    assert await node.coordinator.head(room, info) is None
    assert "web" not in node.hub.rooms and alice.dropped and not room.subs
    await asyncio.wait_for(alice.ws.was_closed.wait(), 10)  # type: ignore[attr-defined]
    assert alice.ws.closed[0] == 1012  # type: ignore[attr-defined]
    await node.close()
    await store.close()

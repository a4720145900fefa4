"""Several relay nodes on one Redis: same messages in the same order on every node,
resume on another node, a node SIGKILLed, Redis restarted (AOF), lock contention
across nodes, retention with ``recovered: false``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from engine.events import NodeStatus
from engine.plan import build_plan
from relay.client import LeaseHeld, RelayClient, RelayError
from tests.relay_redis.conftest import ROOT, TOKENS, Collector, Nodes, RedisServer

pytestmark = pytest.mark.timeout(40)

OPS = ["alice", "bob", "carol"]


class Pool:
    """Clients of a test, closed at the end."""

    def __init__(self) -> None:
        self.clients: list[RelayClient] = []

    async def client(
        self, url: str, operator: str = "alice", room: str = "web", **kw: Any
    ) -> tuple[RelayClient, Collector]:
        col = Collector()
        kw.setdefault("backoff", (0.05, 0.3))
        c = RelayClient(url, room, TOKENS[operator], on_message=col, **kw)
        self.clients.append(c)
        await c.start(timeout=10)
        return c, col

    async def close(self) -> None:
        await asyncio.gather(*(c.close(flush=0) for c in self.clients))


@pytest.fixture
async def pool():  # type: ignore[no-untyped-def]
    p = Pool()
    yield p
    await p.close()


def _seq(col: Collector) -> list[tuple[int, str, str]]:
    return [(f["offset"], f["sender"], f["text"]) for f in col.of("chat")]


@pytest.mark.parametrize("n_nodes", [2, 3])
async def test_clients_on_several_nodes_see_one_order(
    nodes: Nodes, pool: Pool, n_nodes: int
) -> None:
    relays = await asyncio.to_thread(nodes.start, n_nodes)
    clients = []
    for i in range(2 * n_nodes):
        clients.append(await pool.client(relays[i % n_nodes].url, OPS[i % 3]))
    per = 25
    total = per * len(clients)

    async def chat(k: int, c: RelayClient) -> None:
        for j in range(per):
            await c.chat(f"c{k} m{j}")

    await asyncio.gather(*(chat(k, c) for k, (c, _) in enumerate(clients)))
    for _, col in clients:
        await col.wait(lambda c: len(c.of("chat")) >= total, timeout=15)
    orders = [_seq(col) for _, col in clients]
    assert all(o == orders[0] for o in orders)  # same messages, same order, everywhere
    assert len(orders[0]) == total
    offsets = [o for o, _, _ in orders[0]]
    assert offsets == sorted(set(offsets))
    for k in range(len(clients)):  # each sender's messages in its order, once
        assert [t for _, _, t in orders[0] if t.startswith(f"c{k} ")] == [
            f"c{k} m{j}" for j in range(per)
        ]
    # presence spans the nodes: everyone sees all three operators
    _, last = clients[-1]
    await last.wait(lambda c: {w["operator"] for w in clients[-1][0].presence} == set(OPS))
    # a late joiner on any node gets the last chats in the same order
    late, _ = await pool.client(relays[-1].url, "bob")
    assert late.snapshot is not None
    assert [m["text"] for m in late.snapshot.chat] == [t for _, _, t in orders[0][-50:]]


async def test_client_resumes_on_another_node(nodes: Nodes, pool: Pool) -> None:
    a, b, c = await asyncio.to_thread(nodes.start, 3)
    reader, rcol = await pool.client(a.url, "bob")
    sender, _ = await pool.client(c.url, "alice")
    n = 200
    acks: list[asyncio.Future[Any]] = []

    async def keep_sending() -> None:
        for i in range(n):
            acks.append(sender.chat(f"msg {i}"))
            await asyncio.sleep(0.003)

    sending = asyncio.create_task(keep_sending())
    await rcol.wait(lambda col: len(col.of("chat")) >= 40, timeout=10)
    reader.url = b.url  # the load balancer sends it to another node
    assert reader._ws is not None
    reader._ws.transport.abort()
    await rcol.wait(lambda col: len(col.of("welcome")) == 2, timeout=10)
    await sending
    await asyncio.wait_for(asyncio.gather(*acks), 15)
    await rcol.wait(lambda col: len(col.of("chat")) >= n, timeout=15)
    assert rcol.chats() == [f"msg {i}" for i in range(n)]  # nothing lost or repeated
    assert rcol.of("welcome")[1]["recovered"] is True


async def test_node_sigkill_and_restart_loses_nothing(nodes: Nodes, pool: Pool) -> None:
    a, b = await asyncio.to_thread(nodes.start, 2)
    far, fcol = await pool.client(b.url, "bob")
    near, ncol = await pool.client(a.url, "carol")
    sender, _ = await pool.client(a.url, "alice")
    await sender.acquire_lock("deploy web", ttl=60)
    plan = build_plan("d1", [["web1", "web2"]])
    await sender.publish_event(plan.to_event())
    n = 300
    acks: list[asyncio.Future[Any]] = []

    async def keep_sending() -> None:
        for i in range(n):
            acks.append(sender.chat(f"msg {i}"))
            if i % 30 == 0:
                sender.publish_event(
                    NodeStatus("d1", key="release/wave-1/web1/connect", status="running")
                )
            await asyncio.sleep(0.003)

    sending = asyncio.create_task(keep_sending())
    await fcol.wait(lambda c: len(c.of("chat")) >= 60, timeout=10)
    await asyncio.to_thread(a.kill)  # mid-stream, no warning
    await ncol.wait(
        lambda c: any(f.get("state") == "reconnecting" for f in c.of("status")), timeout=10
    )
    await asyncio.to_thread(a.start)  # same port, same Redis
    await sending
    await asyncio.wait_for(asyncio.gather(*acks), 20)
    sender.flush()
    for col in (fcol, ncol):
        await col.wait(lambda c: len(c.of("chat")) >= n, timeout=20)
        assert col.chats() == [f"msg {i}" for i in range(n)]
    assert _seq(fcol) == _seq(ncol)
    assert ncol.of("welcome")[1]["recovered"] is True
    assert sender.holds_lock  # the lease is in Redis: it survived its node
    # the watcher on the surviving node never reconnected
    assert far.connects == 1


async def test_redis_restart_keeps_acknowledged_messages(
    nodes: Nodes, pool: Pool, redis_server: RedisServer
) -> None:
    a, b = await asyncio.to_thread(nodes.start, 2)
    reader, rcol = await pool.client(b.url, "bob")
    sender, _ = await pool.client(a.url, "alice")
    for i in range(50):
        await sender.chat(f"before {i}")  # each one acknowledged
    await asyncio.to_thread(redis_server.kill)  # SIGKILL: only the AOF is left
    await asyncio.to_thread(redis_server.start)
    acks = [sender.chat(f"after {i}") for i in range(50)]
    await asyncio.wait_for(asyncio.gather(*acks), 20)
    want = [f"before {i}" for i in range(50)] + [f"after {i}" for i in range(50)]
    await rcol.wait(lambda c: len(c.of("chat")) >= 100, timeout=20)
    assert rcol.chats() == want
    # a fresh reader sees the whole history once, on the other node
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHIPDECK_TOKEN": TOKENS["carol"]}
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tui.cli", "tail", "--relay", a.url, "--room", "web", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    history = [json.loads(line) for line in out.stdout.splitlines()]
    assert [h["text"] for h in history if h["type"] == "chat"] == want
    assert [h["offset"] for h in history] == list(range(1, len(history) + 1))


async def test_lock_lease_is_exclusive_across_nodes(nodes: Nodes, pool: Pool) -> None:
    a, b, c = await asyncio.to_thread(nodes.start, 3)
    for attempt in range(3):  # a few rounds of two deployers racing on two nodes
        room = f"race{attempt}"
        d1, _ = await pool.client(a.url, "alice", room=room)
        d2, _ = await pool.client(b.url, "bob", room=room)
        watcher, wcol = await pool.client(c.url, "carol", room=room)
        results = await asyncio.gather(
            d1.acquire_lock("deploy A", ttl=30),
            d2.acquire_lock("deploy B", ttl=30),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, dict)]
        losers = [r for r in results if isinstance(r, LeaseHeld)]
        assert len(winners) == 1 and len(losers) == 1, results
        holder, other = (d1, d2) if d1.holds_lock else (d2, d1)
        assert not other.holds_lock
        assert losers[0].holder is not None
        assert losers[0].holder["operator"] == holder.operator
        with pytest.raises(RelayError) as info:  # the loser may not publish events
            await other.publish_event(NodeStatus("d", key="fetch", status="running"))
        assert info.value.code == "not_lock_holder"
        # control from a third node reaches the holder
        await watcher.control("abort")
    # waiting on one node, released on another: the waiter gets it
    waiting = asyncio.create_task(other.acquire_lock("next", ttl=30, wait=True, timeout=10))
    await wcol.wait(lambda c: len(c.of("control")) >= 1)
    await asyncio.sleep(0.05)  # let the queued acquire reach its node
    assert await holder.release_lock() is True
    lease = await waiting
    assert lease["operator"] == other.operator and other.holds_lock
    ops = await wcol.wait(
        lambda c: [f["op"] for f in c.of("lock")] if len(c.of("lock")) >= 3 else None
    )
    assert ops == ["acquired", "released", "acquired"]


async def test_stale_lease_taken_over_across_nodes(nodes: Nodes, pool: Pool) -> None:
    a, b = await asyncio.to_thread(nodes.start, 2)
    d1, _ = await pool.client(a.url, "alice")
    d2, _ = await pool.client(b.url, "bob")
    watcher, wcol = await pool.client(b.url, "carol")
    await d1.acquire_lock("long deploy", ttl=1.0)
    d1._stop_heartbeat()  # alice's client freezes
    lease = await d2.acquire_lock("take over", ttl=5, wait=True, timeout=8)
    assert lease["operator"] == "bob"
    locks = await wcol.wait(lambda c: c.of("lock") if len(c.of("lock")) >= 3 else None)
    assert [f["op"] for f in locks] == ["acquired", "stale", "takeover"]
    assert locks[1]["sender"] == "relay"
    assert locks[2]["previous"]["operator"] == "alice"


async def test_retention_trims_and_stale_client_gets_snapshot(nodes: Nodes, pool: Pool) -> None:
    a, b = await asyncio.to_thread(nodes.start, 2, "--retain-count", "20")
    stale, scol = await pool.client(a.url, "bob")
    sender, _ = await pool.client(b.url, "alice")
    await sender.chat("first")
    await scol.wait(lambda c: c.chats() == ["first"])
    epoch, offset = stale.epoch, stale.offset
    await stale.close(flush=0)
    for i in range(60):
        await sender.chat(f"m{i}")
    back, bcol = await pool.client(b.url, "bob", session=stale.session)
    assert back.connects == 1
    # resume by hand from where the stale client stopped
    late = RelayClient(b.url, "web", TOKENS["bob"], backoff=(0.05, 0.3))
    late.epoch, late.offset = epoch, offset
    lcol = Collector()
    late.add_listener(lcol)
    pool.clients.append(late)
    await late.start(timeout=10)
    welcome = lcol.of("welcome")[0]
    assert welcome["recovered"] is False
    assert welcome["first"] > offset + 1  # trimmed past it
    assert welcome["head"] - welcome["first"] + 1 <= 20
    snap = welcome["snapshot"]
    assert [m["text"] for m in snap["chat"]][-3:] == ["m57", "m58", "m59"]
    # stored history starts at `first`: MAXLEN kept the newest 20
    assert bcol.of("welcome")[0]["first"] == welcome["first"]

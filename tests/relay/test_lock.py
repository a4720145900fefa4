"""The deploy lock lease: contention, waiting, heartbeat, visible stale takeover,
and abort/approve routed to the holder."""

from __future__ import annotations

import asyncio

import pytest

from engine.events import NodeStatus
from relay.client import LeaseHeld, RelayError
from tests.relay.conftest import InProcessRelay

pytestmark = pytest.mark.timeout(30)


async def test_two_deployers_contend(relay: InProcessRelay) -> None:
    a, acol = await relay.client("alice")
    b, bcol = await relay.client("bob")
    watcher, wcol = await relay.client("carol")
    results = await asyncio.gather(
        a.acquire_lock("deploy A", ttl=30),
        b.acquire_lock("deploy B", ttl=30),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, dict)]
    losers = [r for r in results if isinstance(r, LeaseHeld)]
    assert len(winners) == 1 and len(losers) == 1
    holder, other = (a, b) if a.holds_lock else (b, a)
    assert losers[0].holder is not None and losers[0].holder["operator"] == holder.operator
    # the loser may not publish engine events while the lease is held
    with pytest.raises(RelayError) as info:
        await other.publish_event(NodeStatus("d", key="fetch", status="running"))
    assert info.value.code == "not_lock_holder"
    # wait for it; the holder releases; the waiter gets it
    waiting = asyncio.create_task(other.acquire_lock("deploy 2", ttl=30, wait=True, timeout=10))
    await wcol.wait(lambda c: True)
    await asyncio.sleep(0)  # let the acquire frame go out before the release
    assert await holder.release_lock() is True
    lease = await waiting
    assert lease["operator"] == other.operator and other.holds_lock and not holder.holds_lock
    ops = await wcol.wait(
        lambda c: [f["op"] for f in c.of("lock")] if len(c.of("lock")) >= 3 else None
    )
    assert ops == ["acquired", "released", "acquired"]
    assert watcher.lock is not None and watcher.lock["operator"] == other.operator


async def test_heartbeat_keeps_lease_then_stale_lease_taken_over_visibly(
    relay: InProcessRelay,
) -> None:
    a, _ = await relay.client("alice")
    b, _ = await relay.client("bob")
    watcher, wcol = await relay.client("carol")
    await a.acquire_lock("long deploy", ttl=1.0)
    # heartbeats (every ttl/3) keep it past its ttl
    await asyncio.sleep(1.6)
    with pytest.raises(LeaseHeld):
        await b.acquire_lock("mine", ttl=5)
    # alice's client freezes: heartbeats stop, the lease goes stale, bob (waiting) takes over
    a._stop_heartbeat()
    lease = await b.acquire_lock("take over", ttl=5, wait=True, timeout=5)
    assert lease["operator"] == "bob"
    locks = await wcol.wait(lambda c: c.of("lock") if len(c.of("lock")) >= 3 else None)
    assert [f["op"] for f in locks] == ["acquired", "stale", "takeover"]
    assert locks[1]["sender"] == "relay" and locks[1]["holder"]["stale"] is True
    assert locks[2]["previous"]["operator"] == "alice" and locks[2]["holder"]["operator"] == "bob"
    # alice learns she lost it
    assert not a.holds_lock or await _eventually(lambda: not a.holds_lock)


async def _eventually(pred, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)
    return True


async def test_control_is_routed_to_the_lock_holder(relay: InProcessRelay) -> None:
    deployer, dcol = await relay.client("alice")
    watcher, _ = await relay.client("bob")
    with pytest.raises(RelayError) as info:
        await watcher.control("abort")
    assert info.value.code == "no_lock_holder"
    await deployer.acquire_lock("deploy", ttl=30)
    await watcher.control("approve", key="release/gate-1")
    await watcher.control("abort")
    controls = await dcol.wait(lambda c: c.of("control") if len(c.of("control")) == 2 else None)
    assert [(f["action"], f["key"], f["sender"]) for f in controls] == [
        ("approve", "release/gate-1", "bob"),
        ("abort", "", "bob"),
    ]
    assert all(f["to"] == "alice" and f["to_client"] == deployer.client for f in controls)


async def test_lease_survives_reconnect_of_its_holder(relay: InProcessRelay) -> None:
    a, acol = await relay.client("alice")
    await a.acquire_lock("deploy", ttl=30)
    assert a._ws is not None
    a._ws.transport.abort()
    await acol.wait(lambda c: len(c.of("welcome")) == 2)
    assert a.holds_lock
    await a.publish_event(NodeStatus("d", key="fetch", status="running"))  # still the holder
    b, _ = await relay.client("bob")
    with pytest.raises(LeaseHeld):
        await b.acquire_lock("no", ttl=5)

"""Idle rooms leave a node's memory and come back from Redis; events only from the
lease holder (a relay node on a shared store)."""

from __future__ import annotations

import asyncio

import pytest

from engine.events import NodeStatus
from engine.plan import build_plan
from relay.client import RelayClient, RelayError
from relay.redis_store import RedisStore
from relay.server import Limits, Relay
from relay.tokens import TokenTable
from tests.relay_redis.conftest import TOKENS, Collector, RedisServer

pytestmark = pytest.mark.timeout(40)


async def test_idle_room_leaves_a_nodes_memory_and_comes_back(redis_server: RedisServer) -> None:
    relay = Relay(
        RedisStore(redis_server.url), TokenTable(TOKENS), Limits(room_idle=0.3, state_flush=0.05)
    )
    await relay.start("127.0.0.1", 0)
    url = f"ws://127.0.0.1:{relay.port}"
    clients: list[RelayClient] = []
    try:
        alice = RelayClient(url, "web", TOKENS["alice"])
        clients.append(alice)
        await alice.start()
        bob_early = RelayClient(url, "web", TOKENS["bob"])
        clients.append(bob_early)
        await bob_early.start()
        with pytest.raises(RelayError) as refused:
            await bob_early.publish_event(NodeStatus("x", key="fetch", status="ok"))
        assert refused.value.code == "not_lock_holder"
        await alice.acquire_lock("deploy", ttl=30)
        plan = build_plan("d1", [["web1"]])
        alice.publish_event(plan.to_event())
        await alice.publish_event(NodeStatus("d1", key="fetch", status="ok", at=1.0))
        await alice.chat("fetched")
        await alice.release_lock()
        await alice.close(flush=1)
        await bob_early.close(flush=0)
        async with asyncio.timeout(10):
            while "web" in relay.rooms:
                await asyncio.sleep(0.02)
        col = Collector()
        bob = RelayClient(url, "web", TOKENS["bob"], on_message=col)
        clients.append(bob)
        await bob.start()
        tree = bob.snapshot.plan() if bob.snapshot else None
        assert tree is not None and tree["fetch"].status == "ok"
        assert [c["text"] for c in bob.snapshot.chat] == ["fetched"]
        await bob.chat("more")
        await col.wait(lambda c: c.of("chat"))
        assert col.of("chat")[0]["offset"] == bob.snapshot.head + 1
    finally:
        for c in clients:
            await c.close(flush=0)
        await relay.shutdown()

"""Relay roles on several nodes sharing Redis: an observer is refused on any node,
and an admin on one node breaks a lease held through another."""

from __future__ import annotations

import pytest

from relay.client import RelayClient, RelayError
from tests.relay_redis.conftest import TOKENS, Collector, Nodes

pytestmark = pytest.mark.timeout(40)


async def test_admin_breaks_a_lease_held_on_another_node(nodes: Nodes) -> None:
    nodes.tokens.write_text(
        '[operators]\nalice = "token-for-alice"\n'
        'bob = { token = "token-for-bob", role = "observer" }\n'
        'carol = { token = "token-for-carol", role = "admin" }\n'
    )
    one, two = nodes.start(2)
    cols = [Collector() for _ in range(3)]
    alice = RelayClient(one.url, "web", TOKENS["alice"], on_message=cols[0])
    bob = RelayClient(two.url, "web", TOKENS["bob"], on_message=cols[1])
    carol = RelayClient(two.url, "web", TOKENS["carol"], on_message=cols[2])
    try:
        for c in (alice, bob, carol):
            await c.start(timeout=10)
        # presence on node two shows the role of alice, connected to node one
        who = await cols[2].wait(
            lambda c: [f["who"] for f in c.of("presence") if f["operator"] == "carol"]
        )
        assert {"operator": "alice", "connections": 1, "role": "operator"} in who[-1]
        await alice.acquire_lock("deploy", ttl=30)
        for attempt in (
            bob.acquire_lock("mine", ttl=30),
            bob.release_lock(force=True),
            alice.release_lock(force=True),
        ):
            with pytest.raises(RelayError) as exc:
                await attempt
            assert exc.value.code == "forbidden"
        assert await carol.release_lock(force=True) is True
        broken = await cols[0].wait(lambda c: [f for f in c.of("lock") if f["op"] == "broken"])
        assert broken[0]["sender"] == "carol" and broken[0]["previous"]["operator"] == "alice"
        lease = await carol.acquire_lock("admin deploy", ttl=30)
        assert lease["operator"] == "carol"
    finally:
        for c in (alice, bob, carol):
            await c.close(flush=0)

"""Four eyes through a real relay: a deploy under ``deploy.approvers = 2`` (local
fleet, real SSH) opens its gate only after two other operators approve in the room.
The relay refuses the deploying operator's own approval and a second one by the same
operator (``not_approver``, nothing stored); the room keeps who approved and when."""

from __future__ import annotations

import asyncio

import pytest

from engine.deploy import Deployment
from relay.errors import RelayError
from relay.publish import link_deployment
from tests.relay.conftest import Collector, InProcessRelay

pytestmark = pytest.mark.timeout(60)


def _events(col: Collector, kind: str) -> list[dict]:
    return [e for f in col.of("event") for e in f["events"] if e.get("type") == kind]


async def test_the_room_refuses_self_and_repeated_approvals(
    relay: InProcessRelay, fleet, fleet_config
) -> None:  # type: ignore[no-untyped-def]
    config = fleet_config(batches=["1", "100%"], approve=True, approvers=2)
    deployer, _ = await relay.client("alice")
    alice_watching, acol = await relay.client("alice")  # her own second terminal
    bob, _ = await relay.client("bob")
    carol, ccol = await relay.client("carol")
    deployment = Deployment(config, operator="alice")
    await deployer.acquire_lock(f"deploy {deployment.deploy_id}", ttl=30)
    unlink = link_deployment(deployer, deployment)
    running = asyncio.ensure_future(deployment.run())

    await ccol.wait(lambda c: _events(c, "gate"), timeout=40)
    stored_before = len(ccol.stored())
    with pytest.raises(RelayError) as own:
        await alice_watching.control("approve", "release/gate-1")
    assert own.value.code == "not_approver"
    assert "alice cannot approve their own deploy" in own.value.message
    assert "deploy.approvers = 2" in own.value.message

    await bob.control("approve", "release/gate-1")
    await ccol.wait(lambda c: [e for e in _events(c, "control") if e["by"] == "bob"])
    with pytest.raises(RelayError) as again:
        await bob.control("approve", "release/gate-1")
    assert again.value.code == "not_approver" and "bob has already approved" in again.value.message
    # the gate still waits: one approval of two
    assert deployment.waiting_gate == "release/gate-1"
    # nothing of the refused requests was stored or sent to the room
    refused_controls = [
        f for f in ccol.stored()[stored_before:] if f["type"] == "control" and f["sender"] != "bob"
    ]
    assert refused_controls == []
    assert [f["sender"] for f in ccol.stored() if f["type"] == "control"] == ["bob"]

    await carol.control("approve", "release/gate-1")
    result = await running
    unlink()
    await deployer.release_lock()
    assert result.exit_code == 0, result.summary
    assert all((h.home / "app" / "current").exists() for h in fleet.hosts)

    # a late joiner sees who approved the gate, and when
    late, _ = await relay.client("bob")
    assert late.snapshot is not None and late.snapshot.deploy is not None
    approvals = late.snapshot.deploy["approvals"]["release/gate-1"]
    assert [a["by"] for a in approvals] == ["bob", "carol"] and all(a["at"] > 0 for a in approvals)
    assert late.snapshot.deploy["plan"]["meta"]["approvers"] == {"count": 2, "distinct": True}

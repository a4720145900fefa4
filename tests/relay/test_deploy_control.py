"""A watcher aborts or approves a real deploy (local fleet, real SSH) through the
relay; the deploying engine obeys and everyone sees who did it."""

from __future__ import annotations

import asyncio

import pytest

from engine.deploy import Deployment
from relay.publish import link_deployment
from tests.relay.conftest import InProcessRelay

pytestmark = pytest.mark.timeout(60)


async def _deploy_through_relay(relay: InProcessRelay, fleet_config, action: str):  # type: ignore[no-untyped-def]
    config = fleet_config(batches=["1", "100%"], approve=True)
    deployer, dcol = await relay.client("alice")
    watcher, wcol = await relay.client("bob")
    deployment = Deployment(config, operator="alice")
    await deployer.acquire_lock(f"deploy {deployment.deploy_id}", ttl=30)
    unlink = link_deployment(deployer, deployment)

    async def watch_and_act() -> None:
        # the watcher sees the gate waiting in the live tree, then acts on it
        await wcol.wait(
            lambda c: any(e.get("type") == "gate" for f in c.of("event") for e in f["events"]),
            timeout=40,
        )
        await watcher.control(action)

    acting = asyncio.create_task(watch_and_act())
    result = await deployment.run()
    await acting
    unlink()
    await deployer.release_lock()
    return result, deployment, dcol, wcol, watcher


async def test_abort_from_a_watcher_stops_the_deploy(
    relay: InProcessRelay, fleet, fleet_config
) -> None:  # type: ignore[no-untyped-def]
    result, deployment, dcol, wcol, watcher = await _deploy_through_relay(
        relay, fleet_config, "abort"
    )
    assert result.exit_code == 3
    assert deployment.aborted_by == "bob"
    # wave 2 never switched: only the canary host has a current release
    currents = [(h.home / "app" / "current").exists() for h in fleet.hosts]
    assert currents == [True, False, False]
    await wcol.wait(
        lambda c: any(e.get("type") == "finished" for f in c.of("event") for e in f["events"]),
        timeout=10,
    )
    controls = [e for f in wcol.of("event") for e in f["events"] if e["type"] == "control"]
    assert controls and controls[0]["action"] == "abort" and controls[0]["by"] == "bob"
    late_plan = (await relay.client("carol"))[0].snapshot.plan()  # type: ignore[union-attr]
    assert late_plan is not None and late_plan["release/gate-1"].status in (
        "cancelled",
        "skipped",
        "failed",
    )


async def test_approve_from_a_watcher_lets_the_deploy_finish(
    relay: InProcessRelay, fleet, fleet_config
) -> None:  # type: ignore[no-untyped-def]
    result, deployment, dcol, wcol, watcher = await _deploy_through_relay(
        relay, fleet_config, "approve"
    )
    assert result.exit_code == 0, result.summary
    assert all((h.home / "app" / "current").exists() for h in fleet.hosts)
    await wcol.wait(
        lambda c: any(
            e.get("type") == "finished" and e["status"] == "ok"
            for f in c.of("event")
            for e in f["events"]
        ),
        timeout=10,
    )
    approvals = [e for f in wcol.of("event") for e in f["events"] if e["type"] == "control"]
    assert approvals[0]["action"] == "approve" and approvals[0]["by"] == "bob"

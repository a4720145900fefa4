"""Four eyes on the local fleet (real SSH, real shell): a gate under
``deploy.approvers = 2`` opens only after two operators other than the deployer
approved; the deployer's own approval and a second one by the same operator are
refused with the rule's name; every approval is in the transcript and the history."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.approvals import ApprovalRefused
from engine.deploy import Deployment
from engine.events import GateWaiting
from engine.history import History
from tests.helpers import Recorder

pytestmark = pytest.mark.timeout(60)


async def _at_gate(d: Deployment, rec: Recorder) -> str:
    seen = asyncio.Event()
    d.subscribe(lambda e: seen.set() if isinstance(e, GateWaiting) else None)
    d.subscribe(rec)
    task = asyncio.ensure_future(d.run())
    d._task = task  # type: ignore[attr-defined]
    await seen.wait()
    assert d.waiting_gate == "release/gate-1"
    return "release/gate-1"


async def test_two_distinct_approvers_none_of_them_the_deployer(fleet, fleet_config) -> None:
    config = fleet_config(batches=["1", "100%"], approve=True, approvers=2)
    history = History()
    d = Deployment(config, operator="alice", history=history)
    rec = Recorder()
    gate = await _at_gate(d, rec)
    with pytest.raises(ApprovalRefused) as own:
        d.approve(by="alice", key=gate)
    text = str(own.value)
    assert "alice cannot approve their own deploy" in text and "deploy.approvers = 2" in text
    assert "no relay" in text  # this run has none: nobody else could approve here
    with pytest.raises(ApprovalRefused):
        d.approve(key=gate)  # no name given: the deploying operator's
    assert d.approve(by="carol", key=gate) is True
    assert d.waiting_gate == gate and d.state.waiting_gate == gate  # one more needed
    with pytest.raises(ApprovalRefused) as again:
        d.approve(by="carol", key=gate)
    assert "carol has already approved" in str(again.value)
    assert d.approve(by="dave", key=gate) is True
    result = await d._task  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.summary
    assert all((h.home / "app" / "current").exists() for h in fleet.hosts)

    approvals = [e for e in rec.of("control") if e.action == "approve"]
    assert [(e.by, e.key) for e in approvals] == [("carol", gate), ("dave", gate)]
    refusals = [e.text for e in rec.of("log") if "approval refused" in e.text]
    assert len(refusals) == 3 and "alice cannot approve" in refusals[0]
    # the transcript and the history say who approved, and when
    lines = history.transcript(d.deploy_id).read_text().splitlines()  # type: ignore[union-attr]
    controls = [json.loads(x) for x in lines if '"type":"control"' in x]
    assert [(c["by"], c["at"] > 0) for c in controls] == [("carol", True), ("dave", True)]
    record = history.get(d.deploy_id)
    assert record is not None
    recorded = record["summary"]["approvals"][gate]
    assert [a["by"] for a in recorded] == ["carol", "dave"] and all(a["at"] > 0 for a in recorded)


async def test_distinct_approver_one_other_operator_opens_it(fleet, fleet_config) -> None:
    config = fleet_config(batches=["1", "100%"], approve=True, require_distinct_approver=True)
    d = Deployment(config, operator="alice")
    rec = Recorder()
    gate = await _at_gate(d, rec)
    with pytest.raises(ApprovalRefused) as own:
        d.approve(by="alice")
    assert "deploy.require_distinct_approver = true" in str(own.value)
    assert d.approve(by="carol") is True
    result = await d._task  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.summary
    assert [e.by for e in rec.of("control")] == ["carol"]
    assert d.plan[gate].status == "ok"


def test_yes_cannot_approve_a_four_eyes_gate(fleet, fleet_config) -> None:
    config = fleet_config(batches=["1", "100%"], approve=True, approvers=2)
    with pytest.raises(ApprovalRefused) as exc:
        Deployment(config, operator="alice", auto_approve=True)
    assert "--yes cannot approve" in str(exc.value) and "deploy.approvers = 2" in str(exc.value)

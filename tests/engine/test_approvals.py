"""The four-eyes rule, pure: what it refuses and why, how it rides in a plan's meta,
and the one reducer keeping a gate waiting until enough distinct approvals came."""

from __future__ import annotations

from types import SimpleNamespace

from engine.approvals import ApprovalRule
from engine.events import Control, GateWaiting, NodeStatus
from engine.plan import build_plan
from engine.state import RunState


def test_the_rule_from_the_config() -> None:
    of = lambda n, d=False: ApprovalRule.of(  # noqa: E731
        SimpleNamespace(approvers=n, require_distinct_approver=d)
    )
    assert of(1) == ApprovalRule() and not of(1).distinct
    assert of(2) == ApprovalRule(2, True)
    assert of(1, True) == ApprovalRule(1, True)
    assert of(1).to_meta() is None
    assert ApprovalRule.from_meta({"approvers": of(2).to_meta()}) == of(2)
    for broken in (None, {}, {"approvers": "2"}, {"approvers": {"count": True}}):
        assert ApprovalRule.from_meta(broken) == ApprovalRule()


def test_self_approval_and_a_second_approval_are_refused_with_the_rule() -> None:
    two = ApprovalRule(2, True)
    why = two.refusal("alice", "alice", [])
    assert why is not None
    assert "alice cannot approve their own deploy" in why and "deploy.approvers = 2" in why
    assert two.refusal("alice", "carol", []) is None
    again = two.refusal("alice", "carol", ["carol"])
    assert again is not None and "carol has already approved" in again
    assert two.refusal("alice", "bob", ["carol"]) is None
    distinct = ApprovalRule(1, True)
    refused = distinct.refusal("alice", "alice", [])
    assert refused is not None and "deploy.require_distinct_approver = true" in refused
    assert ApprovalRule().refusal("alice", "alice", []) is None  # no rule: anyone's counts


def _state(rule: ApprovalRule) -> RunState:
    plan = build_plan("d1", [["h1"], ["h2"]], meta={"approvers": rule.to_meta()}, gates={1})
    state = RunState(plan)
    state.apply(GateWaiting("d1", key="release/gate-1", at=1.0))
    return state


def test_the_gate_waits_until_enough_distinct_approvals() -> None:
    state = _state(ApprovalRule(2, True))
    state.apply(Control("d1", action="approve", by="carol", key="release/gate-1", at=2.0))
    assert state.waiting_gate == "release/gate-1"
    state.apply(Control("d1", action="approve", by="dave", key="release/gate-1", at=3.0))
    assert state.waiting_gate is None
    assert state.approvals["release/gate-1"] == [
        {"by": "carol", "at": 2.0},
        {"by": "dave", "at": 3.0},
    ]
    back = RunState.from_json(state.to_json())
    assert back.approvals == state.approvals
    state.apply(NodeStatus("d1", key="release/gate-1", status="ok", at=3.0))
    assert state.waiting_gate is None


def test_one_approval_opens_a_gate_without_the_rule() -> None:
    state = _state(ApprovalRule())
    state.apply(Control("d1", action="approve", by="alice", key="release/gate-1", at=2.0))
    assert state.waiting_gate is None

"""The one reducer: plain event sequences in, state out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.events import (
    Control,
    DeployFinished,
    DeployMeta,
    EventDecodeError,
    GateWaiting,
    LogLine,
    MaintenanceChanged,
    NodeStatus,
    Progress,
    Summary,
    Transfer,
)
from engine.plan import build_plan
from engine.state import Bounds, RunState

D = "d1"


def plan_event(deploy_id: str = D, gates=(1,)):
    return build_plan(
        deploy_id, [["web1"], ["web2", "web3"]], gates=gates, meta={"project": "web"}
    ).to_event()


def status(key: str, st: str, at: float = 1.0, detail: str = "") -> NodeStatus:
    return NodeStatus(D, key=key, status=st, at=at, detail=detail)


def started_state() -> RunState:
    state = RunState()
    state.apply(plan_event())
    return state


def test_plan_event_builds_the_tree_and_counts_every_host_pending():
    state = RunState()
    touched = state.apply(plan_event())
    assert state.deploy_id == D and state.meta["project"] == "web"
    assert "release/wave-2/web3/upload" in touched
    assert state.host_counts().pending == 3 and state.host_counts().total == 3
    assert state.host_counts("release/wave-2").pending == 2
    assert state.generation == 1


def test_host_status_moves_its_wave_and_release_counts_and_reports_them_touched():
    state = started_state()
    touched = state.apply(status("release/wave-2/web2", "running"))
    assert set(touched) == {"release/wave-2/web2", "release/wave-2", "release"}
    state.apply(status("release/wave-2/web2", "ok", at=3.0))
    state.apply(status("release/wave-2/web3", "failed", at=4.0, detail="unhealthy"))
    wave = state.host_counts("release/wave-2")
    assert (wave.ok, wave.failed, wave.running, wave.pending) == (1, 1, 0, 0)
    assert state.host_counts().as_dict() == {"pending": 1, "ok": 1, "failed": 1}
    node = state.plan["release/wave-2/web3"]
    assert node.detail == "unhealthy" and node.ended == 4.0 and node.started == 4.0


def test_same_status_twice_counts_once():
    state = started_state()
    state.apply(status("release/wave-1/web1", "ok"))
    state.apply(status("release/wave-1/web1", "ok"))
    assert state.host_counts().ok == 1 and state.host_counts().total == 3


def test_a_running_step_is_its_hosts_current_step_and_touches_the_host():
    state = started_state()
    touched = state.apply(status("release/wave-1/web1/upload", "running"))
    assert touched == ("release/wave-1/web1/upload", "release/wave-1/web1")
    assert state.current_step["release/wave-1/web1"] == "release/wave-1/web1/upload"
    assert state.latest_running == "release/wave-1/web1/upload"
    touched = state.apply(Progress(D, key="release/wave-1/web1/upload", done=5, total=10))
    assert touched == ("release/wave-1/web1/upload", "release/wave-1/web1")
    assert (
        state.plan["release/wave-1/web1/upload"].done,
        state.plan["release/wave-1/web1/upload"].total,
    ) == (5, 10)


def test_gate_waits_then_is_approved():
    state = started_state()
    state.apply(GateWaiting(D, key="release/gate-1", at=2.0))
    assert state.waiting_gate == "release/gate-1"
    assert state.plan["release/gate-1"].status == "waiting"
    state.apply(Control(D, action="approve", by="alice", key="release/gate-1"))
    assert state.waiting_gate is None
    state.apply(status("release/gate-1", "waiting"))
    assert state.gates == {"release/gate-1": None}
    state.apply(status("release/gate-1", "ok", detail="approved"))
    assert state.waiting_gate is None


def test_a_gate_not_in_the_plan_is_not_kept():
    state = started_state()
    assert state.apply(GateWaiting(D, key="release/gate-9")) == ()
    assert state.waiting_gate is None


def test_unknown_nodes_and_other_deploys_change_nothing():
    state = started_state()
    assert state.apply(status("release/wave-9/x", "ok")) == ()
    assert state.apply(NodeStatus("other", key="release/wave-1/web1", status="ok")) == ()
    assert state.host_counts().ok == 0


def test_meta_merges():
    state = started_state()
    state.apply(DeployMeta(D, meta={"sha": "abc", "release_id": "r1"}))
    assert state.meta["sha"] == "abc" and state.meta["project"] == "web"


def test_finished_gives_a_typed_summary_and_clears_gates():
    state = started_state()
    state.apply(GateWaiting(D, key="release/gate-1"))
    summary = Summary(
        hosts=3, ok=2, failed=1, failures={"web3": "unhealthy"}, exit_code=1, duration=4.2
    )
    state.apply(DeployFinished(D, status="failed", summary=summary.to_json(), at=5.0))
    assert state.summary == summary
    assert state.summary.failures == {"web3": "unhealthy"}
    assert state.waiting_gate is None


def test_summary_wire_json_is_what_the_engine_always_wrote():
    wire = {
        "hosts": 3,
        "ok": 2,
        "failed": 1,
        "skipped": 0,
        "cancelled": 0,
        "failures": {"web3": "unhealthy"},
        "reason": "",
        "release_id": "r1",
        "exit_code": 1,
        "duration": 4.2,
    }
    assert list(Summary.from_json(wire).to_json().items()) == list(wire.items())
    with_relay = {**wire, "relay": "skipped (--without-relay)", "future": [1]}
    assert Summary.from_json(with_relay).to_json() == with_relay
    assert Summary.from_json("garbage") == Summary()
    assert Summary.from_json({"ok": "3", "failures": None}).ok == 0


def test_a_second_plan_for_the_same_deploy_only_merges_meta():
    state = started_state()
    state.apply(status("release/wave-1/web1", "ok"))
    again = plan_event()
    assert state.apply(again) == ()
    assert state.generation == 1 and state.host_counts().ok == 1


def test_a_plan_for_a_new_deploy_starts_over():
    state = started_state()
    state.apply(status("release/wave-1/web1", "ok"))
    state.apply(DeployFinished(D, status="ok", summary={}))
    new = build_plan("d2", [["a"]]).to_event()
    state.apply(new)
    assert state.deploy_id == "d2" and state.generation == 2
    assert state.finished is None and state.host_counts().as_dict() == {"pending": 1}


def test_snapshot_round_trip_keeps_statuses_counts_gates_logs_and_summary():
    state = RunState(log_lines=10)
    state.apply(plan_event())
    state.apply(status("release/wave-1/web1", "ok", at=2.0))
    state.apply(status("release/wave-2/web2/upload", "running"))
    state.apply(LogLine(D, key="release/wave-2/web2/upload", text="sent 1 MB", at=3.0))
    state.apply(GateWaiting(D, key="release/gate-1"))
    sent = Transfer(D, key="release/wave-1/web1/upload", mode="delta", sent=5, total=100, jump=True)
    state.apply(sent)
    snap = json.loads(json.dumps(state.to_json()))
    assert set(snap) == {
        "deploy_id",
        "plan",
        "finished",
        "gates",
        "logs",
        "maintenance",
        "outgoing",
        "transfers",
    }
    back = RunState.from_json(snap)
    assert back.deploy_id == D
    assert back.host_counts().as_dict() == {"ok": 1, "pending": 2}
    assert back.waiting_gate == "release/gate-1"
    assert back.current_step["release/wave-2/web2"] == "release/wave-2/web2/upload"
    assert [e.text for e in back.log_events()] == ["sent 1 MB"]
    assert back.transfer_totals() == {"hosts": 1, "sent": 5, "jump": 5, "peer": 0, "artifact": 100}
    summary = Summary(hosts=3, ok=3, exit_code=0)
    back.apply(DeployFinished(D, status="ok", summary=summary.to_json()))
    again = RunState.from_json(back.to_json())
    assert again.summary == summary and again.finished.status == "ok"
    assert again.to_json() == back.to_json()


def test_transfers_sum_into_the_summary_per_fleet():
    state = started_state()
    up = "release/wave-2/web2/upload"
    state.apply(
        Transfer(D, key="release/wave-1/web1/upload", mode="full", sent=90, total=100, jump=True)
    )
    state.apply(Transfer(D, key=up, mode="peer", sent=0, total=100, source="web1"))
    state.apply(Transfer(D, key="nowhere/upload", mode="full", sent=7, total=100))  # not a host
    _, summary = state.summarize()
    assert summary.extra["transfer"] == {
        "hosts": 2,
        "sent": 90,
        "jump": 90,
        "peer": 1,
        "artifact": 100,
    }
    assert state.transfers["release/wave-2/web2"]["source"] == "web1"


def test_maintenance_is_the_rooms_it_outlives_a_new_plan_and_snapshots():
    state = RunState()
    on = MaintenanceChanged("m1", on=True, by="alice", message="db upgrade", at=5.0)
    state.apply(on)  # before any deploy, under its own id
    assert state.maintenance_on == on and state.deploy_id == ""
    state.apply(plan_event())  # a deploy starts: maintenance is still on
    assert state.maintenance_on == on
    back = RunState.from_json(json.loads(json.dumps(state.to_json())))
    assert back.maintenance_on == on and back.deploy_id == D
    back.apply(MaintenanceChanged("m2", on=False, by="bob", at=9.0))  # another id: still applied
    assert back.maintenance_on is None and back.maintenance.by == "bob"
    assert RunState.from_json(back.to_json()).maintenance_on is None
    assert state.apply(MaintenanceChanged("m3", on="yes")) == ()  # only True is on
    assert state.maintenance_on is None


def test_bounds_cut_a_maintenance_message():
    state = RunState(bounds=Bounds())
    state.apply(MaintenanceChanged("m1", on=True, by="a" * 999, message="x" * 5000))
    kept = state.maintenance_on
    assert kept is not None and len(kept.message) < 1100 and len(kept.by) < 300


def test_a_snapshot_without_a_plan_is_refused():
    with pytest.raises(EventDecodeError):
        RunState.from_json({"plan": {"type": "log", "deploy_id": "x"}})


def test_logs_are_bounded_in_lines_and_bytes():
    state = RunState(log_lines=5, log_bytes=600)
    state.apply(plan_event())
    for i in range(20):
        state.apply(LogLine(D, key="fetch", text=f"line {i} " + "x" * 50))
    texts = [d["text"] for d in state.logs]
    assert len(texts) <= 5 and texts[-1].startswith("line 19 ")
    assert sum(len(json.dumps(d, separators=(",", ":"))) for d in state.logs) <= 600
    no_logs = started_state()
    no_logs.apply(LogLine(D, key="fetch", text="x"))
    assert not no_logs.logs


def test_bounds_cut_long_text_as_the_relay_does():
    state = RunState(log_lines=5, bounds=Bounds.relay())
    state.apply(plan_event())
    state.apply(status("release/wave-1/web1", "failed", detail="y" * 5000))
    state.apply(LogLine(D, key="fetch", text="z" * 3000))
    assert len(state.plan["release/wave-1/web1"].detail) < 1100
    line = state.logs[-1]
    assert len(line["text"]) < 2100 and line["cut"] == 1000
    state.apply(DeployMeta(D, meta={"big": "m" * 40_000}))
    assert len(json.dumps(state.meta)) <= 16 * 1024


def test_the_reducer_imports_only_the_standard_library():
    code = (
        "import sys, engine.state; "
        "bad = [m for m in ('asyncssh', 'textual', 'websockets', 'rich', 'git') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_event_type_the_reducer_does_not_keep_changes_nothing():
    from engine.events import Event

    state = started_state()
    before = state.to_json()
    assert state.apply(Event(D)) == ()
    assert state.to_json() == before


def test_progress_of_a_stage_touches_only_the_stage():
    state = started_state()
    assert state.apply(Progress(D, key="fetch", done=1, total=4)) == ("fetch",)
    assert state.apply(Progress(D, key="nowhere", done=1, total=4)) == ()


def test_an_approval_without_a_key_approves_the_waiting_gate():
    state = started_state()
    state.apply(GateWaiting(D, key="release/gate-1"))
    state.apply(Control(D, action="approve", by="bob"))
    assert state.waiting_gate is None
    state.apply(GateWaiting(D, key="release/gate-1"))
    state.apply(Control(D, action="abort", by="bob"))
    assert state.waiting_gate == "release/gate-1"


def test_a_snapshot_drops_what_does_not_read():
    state = RunState(log_lines=10)
    state.apply(plan_event())
    state.apply(LogLine(D, key="fetch", text="kept"))
    snap = state.to_json()
    snap["logs"] = [*snap["logs"], "not a dict", {"type": "status", "deploy_id": D}]
    snap["gates"] = ["release/gate-1", "release/gate-9", 7]
    snap["finished"] = {"type": "finished", "deploy_id": 5}
    back = RunState.from_json(snap)
    assert [e.text for e in back.log_events()] == ["kept"]
    assert back.gates == {"release/gate-1": None}
    assert back.finished is None and back.to_json()["finished"] is None


def test_a_bounded_snapshot_cuts_a_huge_finished_event():
    state = started_state()
    summary = Summary(hosts=3, failed=3, failures={f"web{i}": "x" * 5000 for i in range(40)})
    state.apply(DeployFinished(D, status="failed", summary=summary.to_json()))
    snap = state.to_json()
    back = RunState.from_json(snap, bounds=Bounds.relay())
    assert back.finished.status == "failed"
    assert len(json.dumps(back.to_json()["finished"])) <= 64 * 1024
    bounded = RunState(bounds=Bounds.relay())
    bounded.apply(plan_event())
    bounded.apply(DeployFinished(D, status="failed", summary=summary.to_json()))
    assert len(json.dumps(bounded.to_json()["finished"])) <= 64 * 1024

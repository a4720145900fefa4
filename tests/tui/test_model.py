"""The TUI's data model without the app: counts on a shared plan, log rings, memory bound."""

from __future__ import annotations

from engine.events import LogLine, NodeStatus
from engine.plan import build_plan
from engine.state import RunState
from tui import model as model_mod
from tui.model import DeckModel


def _plan(hosts: int = 3):
    return build_plan("d1", [[f"web{i}" for i in range(hosts)]])


def _status(key: str, status: str) -> NodeStatus:
    return NodeStatus("d1", key=key, status=status, at=1.0)


def test_counts_stay_right_when_the_runner_applies_events_first() -> None:
    """The model shares the runner's plan (no copy); the engine updates a node
    before the model sees the event, and the wave counts must still add up."""
    plan = _plan()
    engine_state = RunState(plan)  # the runner's own state, on the same plan
    model = DeckModel(plan)
    assert model.plan is plan
    host = "release/wave-1/web0"
    for status in ("running", "ok"):
        event = _status(host, status)
        engine_state.apply(event)  # what the engine does before publishing
        model.push(event)
    model.apply_pending()
    wave = model.counts["release/wave-1"]
    assert (wave.pending, wave.running, wave.ok) == (2, 0, 1)
    assert model.host_totals().ok == 1 and engine_state.host_counts().ok == 1


def test_step_log_is_its_lines_host_log_has_all_its_steps() -> None:
    model = DeckModel(_plan())
    host = "release/wave-1/web1"
    model.push(LogLine("d1", key=f"{host}/upload", stream="stdout", text="sent", at=1.0))
    model.push(LogLine("d1", key=f"{host}/restart", stream="stdout", text="restarted", at=1.0))
    model.push(LogLine("d1", key="build", stream="stdout", text="compiling", at=1.0))
    model.apply_pending()
    assert [e.text for e in model.log_for(f"{host}/restart")] == ["restarted"]
    assert [e.text for e in model.log_for(host)] == ["sent", "restarted"]
    assert [e.text for e in model.log_for("release")] == ["sent", "restarted"]
    assert [e.text for e in model.log_for("build")] == ["compiling"]
    assert model.log_for("release/wave-1/web2") == []


def test_log_memory_is_bounded_over_the_whole_fleet(monkeypatch) -> None:
    monkeypatch.setattr(model_mod, "LOG_BUDGET", 1000)
    model = DeckModel(_plan(hosts=50))
    for n in range(100):
        for i in range(50):
            key = f"release/wave-1/web{i}/health"
            model.push(LogLine("d1", key=key, stream="stdout", text=f"line {n}", at=1.0))
        model.apply_pending()
    kept = sum(len(ring) for ring in model.logs.values())
    assert kept <= 1000
    # the newest lines survive the trim
    assert model.log_for("release/wave-1/web7/health")[-1].text == "line 99"


def test_a_late_joiners_snapshot_is_shown_as_one_state() -> None:
    """What the relay's welcome carries (RunState.to_json) becomes the model's state
    directly: statuses, counts, the waiting gate, the kept log lines, the summary."""
    from engine.events import DeployFinished, GateWaiting, Summary

    plan = build_plan("d1", [["web0"], ["web1", "web2"]], gates=(1,))
    room = RunState(log_lines=10)
    room.apply(plan.to_event())
    room.apply(_status("release/wave-1/web0", "ok"))
    room.apply(LogLine("d1", key="release/wave-1/web0/health", text="healthy", at=1.0))
    room.apply(GateWaiting("d1", key="release/gate-1", at=2.0))
    snapshot = RunState.from_json(room.to_json())

    model = DeckModel()
    model.push(snapshot)
    batch = model.apply_pending()
    assert batch.plan_changed and batch.gates == ["release/gate-1"]
    assert model.deploy_id == "d1" and model.waiting_gate == "release/gate-1"
    assert model.host_totals().ok == 1 and model.counts["release/wave-2"].pending == 2
    assert [e.text for e in model.log_for("release/wave-1/web0")] == ["healthy"]
    assert model.label_for("release/wave-1").plain == "○ 1/1 ✓  wave 1"
    # the deploy goes on from there, event by event
    model.push(_status("release/gate-1", "ok"))
    model.push(
        DeployFinished("d1", status="ok", summary=Summary(hosts=3, ok=3, exit_code=0).to_json())
    )
    model.apply_pending()
    assert model.waiting_gate is None and model.finished.report.exit_code == 0

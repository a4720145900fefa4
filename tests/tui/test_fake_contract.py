"""The TUI tests' scripted runner (tests/tui/fake.py) against the real engine over the
local fleet: same tree, same wave split and labels, same event types, same summary
shape. If the engine changes what it says, this fails until the fake says it too."""

from __future__ import annotations

import pytest

from engine.deploy import Deployment
from engine.events import DeployFinished, Summary
from engine.state import RunState
from tests.helpers import Recorder
from tests.tui.fake import FakeRunner

pytestmark = pytest.mark.timeout(60)


def waves(plan) -> list[tuple[str, list[str]]]:
    return [(w.label, [h.label for h in plan.kids(w.key)]) for w in plan.waves()]


async def both(fleet, fleet_config, *, failing: set[str] = frozenset(), **deploy):
    config = fleet_config(**deploy)
    engine = Deployment(config, operator="tester", auto_approve=True)
    rec = Recorder()
    engine.subscribe(rec)
    result = await engine.run()
    fake = FakeRunner(
        [h.name for h in fleet.hosts],
        failing=set(failing),
        batches=tuple(config.deploy.batches),
    )
    fake_events: list = []
    fake.subscribe(fake_events.append)
    fake_result = await fake.run()
    return (engine, rec.events, result), (fake, fake_events, fake_result)


def summary_of(events) -> tuple[str, Summary, dict]:
    finished = [e for e in events if isinstance(e, DeployFinished)]
    assert len(finished) == 1 and finished[0] is events[-1]
    return finished[0].status, finished[0].report, finished[0].summary


async def test_a_clean_deploy_reads_the_same_from_the_fake_and_the_engine(
    fleet, fleet_config
) -> None:
    (engine, events, result), (fake, fake_events, fake_result) = await both(
        fleet, fleet_config, batches=["1", "50%", "100%"]
    )
    assert result.exit_code == fake_result.exit_code == 0
    assert list(fake.plan.nodes) == list(engine.plan.nodes)
    assert waves(fake.plan) == waves(engine.plan)
    assert {e.type for e in fake_events} == {e.type for e in events}
    status, report, wire = summary_of(events)
    fake_status, fake_report, fake_wire = summary_of(fake_events)
    assert status == fake_status == "ok"
    assert list(fake_wire) == list(wire)  # the same keys, in the same order
    assert (fake_report.hosts, fake_report.ok, fake_report.failed) == (report.hosts, report.ok, 0)
    assert fake_report.failures == report.failures == {}


async def test_a_failed_host_reads_the_same_from_the_fake_and_the_engine(
    fleet, fleet_config
) -> None:
    bad = fleet.hosts[2].name
    fleet.fail_health(bad)
    (engine, events, result), (fake, fake_events, fake_result) = await both(
        fleet, fleet_config, failing={bad}, batches=["1", "100%"], health_timeout=1
    )
    assert result.exit_code == fake_result.exit_code == 1
    status, report, wire = summary_of(events)
    fake_status, fake_report, fake_wire = summary_of(fake_events)
    assert status == fake_status == "failed"
    assert list(fake_wire) == list(wire)
    assert set(fake_report.failures) == set(report.failures) == {bad}
    assert (fake_report.ok, fake_report.failed) == (report.ok, report.failed) == (2, 1)
    # either summary, rebuilt from its own events by the one reducer, is what it sent
    for evs, sent in ((events, report), (fake_events, fake_report)):
        state = RunState()
        state.apply_all(evs)
        assert state.summary == sent
        assert state.host_counts().failed == 1

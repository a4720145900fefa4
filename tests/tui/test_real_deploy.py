"""One real deploy to the in-process SSH fleet, driven from the TUI to the end."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from textual.widgets import OptionList

from engine.config import load_config
from engine.localfleet import commit_version
from tests.tui.conftest import label, screen_lines, until
from tui.app import ShipdeckApp
from tui.backend import EngineBackend
from tui.screens.modals import ConfirmScreen, RollbackScreen

pytestmark = pytest.mark.timeout(60)


async def test_deploy_then_rollback_on_local_fleet(
    fleet, sample_repo: Path, tmp_path: Path
) -> None:
    config = load_config(fleet.write_config(tmp_path / "shipdeck.toml", repo=sample_repo))
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "history.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.painted)
        n = len(fleet.hosts)
        assert f"0/{n} ✓" in label(app, "release")
        released = []
        for version in ("2.0.0", "3.0.0", "4.0.0"):  # three releases
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("enter")
            await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
            assert app.last_exit == 0, app.model.finished
            assert label(app, "release").startswith(f"✓ {n}/{n} ✓  release")
            assert len(str(app.model.meta.get("sha"))) >= 7
            if not released:  # the first deploy sends the package: its size shows
                host = next(h.key for h in app.model.plan.hosts() if h.label == "host1")
                assert label(app, host).startswith("✓ host1")
                upload = label(app, f"{host}/upload")
                assert re.fullmatch(r"✓ upload  [\d.]+(B|KB|MB)  [\dms.]+", upload), upload
            released.append(app.model.meta["release_id"])
            commit_version(sample_repo, version)
        # cleanup on one host removed the oldest release: it is greyed, not offered
        oldest = fleet.hosts[1].home / "app" / "releases" / released[0]
        shutil.rmtree(oldest)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RollbackScreen))
        options = app.screen.query_one(OptionList)
        await until(pilot, lambda: options.option_count == 3, timeout=20, what="releases")
        newest, middle, first = (options.get_option_at_index(i) for i in range(3))
        assert [o.id for o in (newest, middle, first)] == released[::-1]
        assert "◀ current" in newest.prompt.plain and newest.disabled
        assert "by tester" in middle.prompt.plain and not middle.disabled
        assert first.disabled and f"on {n - 1}/{n} hosts only" in first.prompt.plain
        assert options.highlighted == 1
        await pilot.press("enter")  # the default: the one before current, on every host
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.model.meta["kind"] == "rollback"
        assert app.last_exit == 0, app.model.finished
        assert app.model.meta["release_id"] == released[1]


async def test_unhealthy_host_shows_its_rollback_in_the_tree(
    fleet, sample_repo: Path, tmp_path: Path
) -> None:
    """The engine's own events: a host that fails its health check after activate
    shows a ``rollback`` step (status, target, duration) and "rolled back to <id>"."""
    config = load_config(
        fleet.write_config(tmp_path / "shipdeck.toml", repo=sample_repo, health_timeout=1)
    )
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "history.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.painted)
        released = []
        for version in (None, "2.0.0"):
            if version:
                commit_version(sample_repo, version)
                fleet.fail_health("host2", version)
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("enter")
            await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
            released.append(app.model.meta["release_id"])
        assert app.last_exit == 1, app.model.finished
        n = len(fleet.hosts)
        assert label(app, "release").startswith(f"✗ 1 ✗ {n - 1}/{n} ✓  release")
        host = next(h.key for h in app.model.plan.hosts() if h.label == "host2")
        line = label(app, host)
        assert line.startswith("✗ host2") and line.endswith(f"rolled back to {released[0]}"), line
        step = app.model.plan[f"{host}/rollback"]
        assert step.status == "ok" and step.detail == f"to {released[0]}"
        assert step.ended is not None and step.started is not None and step.ended >= step.started
        rollback = label(app, f"{host}/rollback")
        assert re.fullmatch(rf"✓ rollback  [\dms.]+  to {released[0]}", rollback), rollback
        assert label(app, f"{host}/health").startswith("✗ health")
        assert label(app, f"{host}/cleanup").startswith("– cleanup")
        ok_host = next(h.key for h in app.model.plan.hosts() if h.label == "host1")
        assert app.model.plan[f"{ok_host}/rollback"].status == "skipped"
        assert any("rolling back to" in e.text for e in app.model.log_for(f"{host}/rollback"))


@pytest.mark.parametrize("key, code", [("g", 0), ("a", 3)])
async def test_gate_on_the_real_engine_waits_then_approve_or_abort(
    fleet, sample_repo: Path, tmp_path: Path, key: str, code: int
) -> None:
    """``approve = true``: the engine stops after the canary; the tree shows the gate
    waiting and the next wave pending; g (confirmed) lets it go on, a (confirmed) stops it."""
    config = load_config(
        fleet.write_config(
            tmp_path / "shipdeck.toml", repo=sample_repo, batches=["1", "100%"], approve=True
        )
    )
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "history.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(
            pilot, lambda: app.model.waiting_gate == "release/gate-1", timeout=40, what="gate"
        )
        assert app.deploying and app.last_exit is None
        assert label(app, "release/wave-1").startswith("✓ 1/1 ✓")
        assert label(app, "release/wave-2").startswith("○")
        assert "press g to approve" in label(app, "release/gate-1")
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))  # g: the gate dialog
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.last_exit == code, app.model.finished
        n = len(fleet.hosts)
        summary = app.model.state.summary
        assert summary is not None and summary.exit_code == code
        if key == "g":
            assert app.model.plan["release/gate-1"].status == "ok"
            assert (summary.ok, summary.hosts) == (n, n)
        else:
            assert app.model.plan["release/gate-1"].status == "cancelled"
            assert label(app, "release/wave-2").startswith("–")
            assert (summary.ok, summary.cancelled) == (1, n - 1)


async def test_a_deploy_during_maintenance_says_so_in_the_header(
    fleet, sample_repo: Path, tmp_path: Path
) -> None:
    """Maintenance switched with hooks (the latest record says on): the deploy goes
    ahead, and its header and a notice say maintenance is on, who and why."""
    import time

    from engine.events import MaintenanceChanged
    from engine.history import History

    config = load_config(
        fleet.write_config(tmp_path / "shipdeck.toml", repo=sample_repo, maintenance_on=["true"])
    )
    on = MaintenanceChanged("m1", on=True, by="alice", message="db upgrade", at=time.time())
    History(tmp_path / "history.db").record_maintenance(on, project="demo", config="x")
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "history.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.last_exit == 0, app.model.finished  # not refused
        header = app.main.query_one("DeckHeader").render().plain
        assert header.splitlines()[1].startswith("⚠ MAINTENANCE by alice: db upgrade  ✓ deploy ok")
        notices = [n.message for n in app._notifications]
        assert any(m.startswith("maintenance on since") and "alice" in m for m in notices), notices


async def test_status_shows_the_drifted_host_and_exec_runs_on_every_host(
    fleet, sample_repo: Path, tmp_path: Path
) -> None:
    """A host whose health check failed is rolled back, so it drifts: the status
    screen (v) says so; an exec from the dialog (x) runs on every host, drawn as a
    tree with each host's exit status, output in the merged log."""
    from tui.screens.exec import ExecScreen
    from tui.screens.status import StatusScreen

    config = load_config(
        fleet.write_config(tmp_path / "shipdeck.toml", repo=sample_repo, health_timeout=1)
    )
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "history.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.painted)
        for version in (None, "2.0.0"):
            if version:
                commit_version(sample_repo, version)
                fleet.fail_health("host2", version)
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("enter")
            await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        shown = lambda: "\n".join(screen_lines(app))  # noqa: E731
        await until(pilot, lambda: "1 drifted: host2" in shown(), timeout=20, what="drift")
        row = next(r for r in screen_lines(app)[2:] if " host2 " in r)
        assert "! drift" in row
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ExecScreen))
        await pilot.press(*"echo up from $(hostname)", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        n = len(fleet.hosts)
        assert f"Run on {n} host(s)?" in shown()
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.last_exit == 0 and app.model.meta["kind"] == "exec"
        for h in app.model.plan.hosts():
            assert label(app, h.key).startswith(f"✓ {h.label}") and "exit 0 in" in label(app, h.key)
        await pilot.press("L")
        await until(pilot, lambda: app.fleet_shown)
        lines = [line for line in app.fleet_lines.shown if "up from" in line.text]
        assert {line.host for line in lines} == {h.label for h in app.model.plan.hosts()}
        row = backend.history().list(1)[0]
        assert row["kind"] == "exec" and row["status"] == "ok"

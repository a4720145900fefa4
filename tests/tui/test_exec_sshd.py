"""The TUI's exec on real OpenSSH hosts: the typed confirmation of a dangerous
environment, the tree of hosts with their exit status, output in the fleet log,
history and revisions.log."""

from __future__ import annotations

import pytest

from engine.config import load_config
from engine.deploy import Deployment
from tests.engine.test_deploy_sshd import write_config
from tests.helpers import revisions
from tests.tui.conftest import label, screen_lines, until
from tui.app import ShipdeckApp
from tui.backend import EngineBackend
from tui.screens.exec import ExecScreen, TypedConfirmScreen
from tui.screens.modals import ConfirmScreen

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]


async def test_exec_from_the_dialog_on_real_hosts(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(3)
    h1, h2, h3 = fleet.hosts
    path = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo, confirm_exec='"typed"')
    config = load_config(path)
    assert (await Deployment(config).run()).exit_code == 0
    (h2.home / "FAIL").write_text("x")
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "history.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    shown = lambda: "\n".join(screen_lines(app))  # noqa: E731
    async with app.run_test(size=(140, 40)) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ExecScreen))
        await pilot.press(*"echo up; test ! -f ~/FAIL || exit 4", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await until(pilot, lambda: "Run on 3 host(s)?" in shown())
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TypedConfirmScreen))
        await until(pilot, lambda: "type 3 to run it" in shown())
        await pilot.press("3", "enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=60)
        assert app.last_exit == 1 and app.model.meta["kind"] == "exec"
        by_name = {h.label: h.key for h in app.model.plan.hosts()}
        assert label(app, by_name[h2.spec]).startswith(f"✗ {h2.spec}")
        assert "exit 4 in" in label(app, by_name[h2.spec])
        assert "exit 0 in" in label(app, by_name[h1.spec])
        assert {line.host for line in app.fleet_lines.lines if line.text == "up"} == {
            h.spec for h in fleet.hosts
        }
        row = backend.history().list(1)[0]
        assert row["kind"] == "exec" and row["status"] == "failed" and row["exit_code"] == 1
    assert "outcome=exit-4" in revisions(h2.home / "app")[-1]
    assert "outcome=ok" in revisions(h3.home / "app")[-1]

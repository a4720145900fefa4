"""What goes out, in the TUI: the deploy confirmation and the gate dialog show the
commits and files between what the hosts run and the target, and warn of a no-op
(the real engine, the in-process SSH fleet, real git history)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from engine.deploy import Deployment
from engine.history import History
from engine.localfleet import _git, commit_version
from tests.tui.conftest import until
from tui.app import ShipdeckApp
from tui.backend import EngineBackend
from tui.screens.modals import ConfirmScreen, OutgoingCard

pytestmark = pytest.mark.timeout(90)


def commit_notes(repo: Path, text: str, message: str) -> str:
    (repo / "NOTES").write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--author", "Grace Hopper <grace@example.com>", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


async def first_release(config, tmp_path: Path) -> None:
    result = await Deployment(config, operator="tester", history=History(tmp_path / "h.db")).run()
    assert result.exit_code == 0, result.summary


def card_lines(app: ShipdeckApp) -> list[str]:
    return app.screen.query_one(OutgoingCard).lines


def card_shown(app: ShipdeckApp) -> bool:
    return isinstance(app.screen, ConfirmScreen) and app.screen.query_one(
        OutgoingCard
    ).shown not in (
        (),
        None,
    )


async def test_deploy_confirm_shows_what_goes_out_then_a_no_op(
    fleet, sample_repo: Path, tmp_path: Path
) -> None:
    config = load_config(fleet.write_config(tmp_path / "shipdeck.toml", repo=sample_repo))
    await first_release(config, tmp_path)
    v2 = commit_version(sample_repo, "2.0.0", "Bump to 2.0.0")
    notes = commit_notes(sample_repo, "a\nb\n", "Write the release notes")
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "h.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("d")
        await until(pilot, lambda: card_shown(app), timeout=30, what="the card")
        lines = card_lines(app)
        assert lines[0] == f"what goes out to 3 hosts: {notes[:7]} Write the release notes"
        assert lines[1].startswith("── 3 hosts on ") and lines[1].endswith(
            "2 commits going out, 2 files +3 −1"
        )
        assert lines[3].startswith(f"   {notes[:7]}") and lines[3].endswith(
            "Grace Hopper  Write the release notes"
        )
        assert lines[4].startswith(f"   {v2[:7]}") and lines[4].endswith("Bump to 2.0.0")
        assert lines[5:7] == ["   +2 −0  NOTES", "   +1 −1  VERSION"]
        assert not any("no-op" in line for line in lines)
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.last_exit == 0
        # the run announced it too, against what the locks read (the same hosts, commits)
        assert app.model.state.outgoing["release"]["groups"][0]["commits_total"] == 2

        # nothing new: the same ref again is a no-op, and the confirmation says so
        await pilot.press("d")
        await until(pilot, lambda: card_shown(app), timeout=30, what="the no-op card")
        assert card_lines(app)[1] == (
            f"⚠ no-op: all 3 hosts already run {notes[:7]}; nothing new goes out"
        )
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert not app.deploying


async def test_gate_dialog_shows_what_its_approval_lets_go(
    fleet, sample_repo: Path, tmp_path: Path
) -> None:
    config = load_config(fleet.write_config(tmp_path / "shipdeck.toml", repo=sample_repo))
    await first_release(config, tmp_path)
    sha = commit_notes(sample_repo, "gate\n", "Gate me")
    config = load_config(
        fleet.write_config(
            tmp_path / "gated.toml", repo=sample_repo, batches=["1", "100%"], approve=True
        )
    )
    backend = EngineBackend(config, operator="tester", history_path=tmp_path / "h.db")
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.model.waiting_gate == "release/gate-1", timeout=40)
        await pilot.press("g")
        await until(pilot, lambda: card_shown(app), what="the gate's card")
        body = str(app.screen.query_one(".dialog-body").render())
        assert "approving starts" in body and "host2, host3" in body
        lines = card_lines(app)
        assert lines[0] == f"what goes out at gate-1 to 2 hosts: {sha[:7]} Gate me"
        assert lines[1].endswith("1 commit going out, 1 file +1 −0")
        assert lines[2] == "   host2, host3"
        assert app.model.state.waiting_gate == "release/gate-1"  # not approved yet
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.last_exit == 0
        assert app.model.plan["release/gate-1"].status == "ok"

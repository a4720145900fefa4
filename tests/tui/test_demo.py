"""``shipdeck demo`` keeps everything it writes under its own directory."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.tui.conftest import until
from tui.demo import _demo, own_state
from tui.screens.modals import ConfirmScreen, RollbackScreen

pytestmark = pytest.mark.timeout(90)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


async def test_demo_deploy_and_rollback_leave_nothing_in_the_operators_state(
    tmp_path: Path,
) -> None:
    operator_state = Path(os.environ["XDG_STATE_HOME"])  # the operator's (isolated per test)
    operator_cache = Path(os.environ["XDG_CACHE_HOME"])
    before = files_under(operator_state), files_under(operator_cache)
    root = tmp_path / "demo"
    root.mkdir()

    async def drive(app, pilot) -> None:
        await until(pilot, lambda: app.painted)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "2 hosts in 1 wave\n" in str(app.screen.body)  # not "1 waves"
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RollbackScreen))
        options = app.screen.query_one("#releases")
        await until(pilot, lambda: options.option_count >= 2, timeout=20)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        app.last_exit = None
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.model.meta["kind"] == "rollback" and app.last_exit == 0
        await pilot.press("q")

    with own_state(root):
        await _demo(2, root, True, False, False, drive=drive)

    assert (files_under(operator_state), files_under(operator_cache)) == before
    db = root / "state" / "shipdeck" / "history.db"
    with sqlite3.connect(db) as conn:
        kinds = [r[0] for r in conn.execute("SELECT kind FROM deploys ORDER BY started")]
    assert kinds == ["deploy", "deploy", "rollback"]
    assert list((root / "state" / "shipdeck" / "transcripts").glob("*.jsonl"))
    assert (root / "cache" / "shipdeck").exists()  # git mirror and packages: the demo's own
    assert os.environ["XDG_STATE_HOME"] == str(operator_state)  # restored

"""Exec in the TUI (x, and the palette): the command dialog, a confirmation naming
the host count, the typed one when deploy.confirm_exec = "typed", and the exec drawn
as a tree (host, exit status, duration; output in the log panes)."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette

from tests.tui.conftest import make_app, screen_lines, until
from tui.screens.exec import ExecScreen, TypedConfirmScreen
from tui.screens.modals import ConfirmScreen

pytestmark = pytest.mark.timeout(30)

SIZE = (120, 40)


def text(app) -> str:
    return "\n".join(screen_lines(app))


async def test_exec_dialog_names_the_host_count_and_draws_a_tree() -> None:
    app = make_app(hosts=5, failing={"web4"})
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ExecScreen))
        assert "Run a command on 5 host(s)" in text(app)
        await pilot.press(*"uptime", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Run on 5 host(s)?" in text(app) and "web1, web2, web3, web4, web5" in text(app)
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None, what="the exec's end")
        assert app.last_exit == 1 and app.model.meta["kind"] == "exec"
        app.flush()
        app.tree.relabel_visible()
        await until(pilot, lambda: "exec: uptime" in text(app))
        web4 = next(h for h in app.model.plan.hosts() if h.label == "web4")
        app.tree.select_key(web4.key)
        await until(pilot, lambda: "web4: up 3 days" in text(app))
        rows = screen_lines(app)
        assert any("web4" in r and "exit 1" in r for r in rows)
        assert any("✓ web1" in r and "exit 0" in r for r in rows)
        # the merged log has every host's output, tagged
        await pilot.press("L")
        await until(pilot, lambda: app.fleet_shown)
        assert all(f"web{i}: up 3 days" in text(app) for i in range(1, 6))


async def test_typed_confirmation_asks_for_the_host_count() -> None:
    app = make_app(hosts=3, confirm_exec="typed")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"exec")
        await until(pilot, lambda: "Exec" in text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ExecScreen))
        await pilot.press(*"uptime", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TypedConfirmScreen))
        assert "type 3 to run it" in text(app)
        await pilot.press("2", "enter")  # a wrong count runs nothing
        await until(pilot, lambda: any("type 3" in n.message for n in app._notifications))
        assert isinstance(app.screen, TypedConfirmScreen) and not app.backend.execs
        await pilot.press("backspace", "3", "enter")
        await until(pilot, lambda: app.last_exit == 0, what="the exec's end")
        assert app.backend.execs and app.model.meta["kind"] == "exec"


async def test_escape_at_the_typed_confirmation_runs_nothing() -> None:
    app = make_app(hosts=2, confirm_exec="typed")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("x", *"reboot", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TypedConfirmScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)
        assert not app.backend.execs and app.model.meta.get("kind") != "exec"

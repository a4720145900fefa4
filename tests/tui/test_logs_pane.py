"""Logs in the TUI: a tail (from the palette, or shipdeck logs at a terminal)
follows into the fleet log; a host that disconnects is marked until it is back;
q stops the tail (and quits when the app was opened for it)."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette

from tests.tui.conftest import screen_lines, until
from tests.tui.fake import FakeBackend, FakeClock
from tui.app import ShipdeckApp
from tui.screens.exec import LogsScreen

pytestmark = pytest.mark.timeout(30)

SIZE = (120, 40)


def text(app) -> str:
    return "\n".join(screen_lines(app))


def row_with(app, host: str, words: str) -> bool:
    """A row of the screen shows ``host`` then ``words``."""
    return any(host in r and words in r.partition(host)[2] for r in screen_lines(app))


def app_for(tail=None, hosts=3) -> ShipdeckApp:
    clock = FakeClock()
    return ShipdeckApp(
        FakeBackend(hosts, clock=clock), operator="alice", clock=clock, cursor_blink=False,
        flush_interval=0.05, tail=tail,
    )  # fmt: skip


async def test_tail_from_the_palette_marks_a_disconnect_and_q_stops_it() -> None:
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"tail a log")
        await until(pilot, lambda: "Tail a log file" in text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen))
        await pilot.press(*"shared/log/app.log", "enter")
        await until(pilot, lambda: app.tailing and app.fleet_shown)
        await until(pilot, lambda: row_with(app, "web3", "line 9"))
        # the first host dropped: its line says so and the title names it
        await until(pilot, lambda: "disconnected: web1" in text(app), what="marked")
        assert any("~ disconnected (connection lost); reconnecting" in r for r in screen_lines(app))
        app.backend.tail_gate.set()
        await until(pilot, lambda: row_with(app, "web1", "after the reconnect"))
        assert "disconnected: web1" not in text(app)
        assert any("~ reconnected" in r for r in screen_lines(app))
        await pilot.press("q")  # stops the tail, not the app
        await until(pilot, lambda: not app.tailing, what="the tail stopped")
        assert app.is_running
        await until(pilot, lambda: any("stopped: logs" in n.message for n in app._notifications))


async def test_shipdeck_logs_opens_on_the_fleet_log_and_q_quits() -> None:
    app = app_for(tail={"path": "shared/log/app.log", "lines": 2, "follow": True, "grep": "line 1"})
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted and app.tailing)
        await until(pilot, lambda: row_with(app, "web2", "line 1"))
        assert "line 0" not in text(app)  # --grep
        assert "fleet · logs shared/log/app.log /line 1/" in text(app)
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="quit")


async def test_a_file_that_cannot_be_read_says_so_per_host() -> None:
    app = app_for()
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        app.start_tail("missing.log", follow=False)
        await until(pilot, lambda: "3 host(s) could not read missing.log" in
                    " ".join(n.message for n in app._notifications))  # fmt: skip
        await until(pilot, lambda: "cannot read missing.log" in text(app))

"""The fleet status screen (v): the version map, drift highlighted; the rollback
picker reads the same map."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable

from tests.tui.conftest import make_app, screen_lines, until
from tui.screens.status import StatusScreen

pytestmark = pytest.mark.timeout(30)

SIZE = (140, 40)


async def test_status_screen_shows_one_drifted_host() -> None:
    app = make_app(hosts=4, drifted={"web3"})
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("v")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        await until(pilot, lambda: "1 drifted: web3" in "\n".join(screen_lines(app)))
        rows = screen_lines(app)
        web3 = next(r for r in rows[2:] if " web3 " in r)
        web1 = next(r for r in rows[2:] if " web1 " in r)
        assert "! drift" in web3 and "20261121T120000Z-77d0e3b" in web3
        assert "✓" in web1 and "20261123T101500Z-1b7e0d4" in web1 and "Release 3" in web1
        assert "majority 20261123T101500Z-1b7e0d4" in "\n".join(rows)
        table = app.screen.query_one(DataTable)
        assert table.row_count == 4
        # the drifted row is drawn in the drift style
        y = rows.index(web3)
        strip = app.screen._compositor.render_strips()[y]
        assert any(seg.text.strip() == "web3" and seg.style.color for seg in strip)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)


async def test_status_from_the_palette_without_drift() -> None:
    app = make_app(hosts=3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"fleet status")
        await until(pilot, lambda: "Fleet status" in "\n".join(screen_lines(app)))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        await until(pilot, lambda: "no drift" in "\n".join(screen_lines(app)))

"""TUI test helpers: the app driven by the scripted fake engine, frozen clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.tui.fake import FakeBackend, FakeClock
from tui.app import ShipdeckApp


def make_app(clock: FakeClock | None = None, chat=None, **backend) -> ShipdeckApp:
    clock = clock or FakeClock()
    return ShipdeckApp(
        FakeBackend(clock=clock, **backend),
        chat=chat,
        operator="alice",
        clock=clock,
        cursor_blink=False,
        flush_interval=0.05,
    )


async def until(pilot, cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Pump the app until ``cond()`` holds (synchronise on state, not on sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await pilot.pause(0.02)


def screen_lines(app: ShipdeckApp) -> list[str]:
    """The terminal as a person sees it: the composed screen, one string per row."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def label(app: ShipdeckApp, key: str) -> str:
    app.flush()
    app.tree.relabel_visible()
    return app.model.label_for(key).plain


@pytest.fixture(autouse=True)
def _fake_history_in_tmp(tmp_path, monkeypatch) -> None:
    """The scripted engine's transcripts go to the test's temp dir (removed with it)."""
    import tests.tui.fake

    monkeypatch.setattr(tests.tui.fake, "HISTORY_ROOT", str(tmp_path))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()

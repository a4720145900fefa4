"""Snapshots of the main screen, driven by the scripted engine with a frozen clock
and no cursor blink, at a fixed size so they are stable.

Update with ``pytest tests/tui/test_snapshots.py --snapshot-update`` after checking
the new SVGs by eye.
"""

from __future__ import annotations

import pytest

from tests.tui.conftest import make_app, until
from tui.screens.modals import ConfirmScreen

pytestmark = pytest.mark.timeout(60)


async def _deploy(pilot, wait) -> None:
    app = pilot.app
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
    await pilot.press("enter")
    await until(pilot, wait)
    app.clear_notifications()
    app.flush()
    app.tick()
    await pilot.wait_for_scheduled_animations()


def test_pending(snap_compare) -> None:
    assert snap_compare(make_app(hosts=8), terminal_size=(120, 36))


def test_running_at_gate(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _deploy(pilot, lambda: pilot.app.model.waiting_gate is not None)
        pilot.app.tree.select_key("release/wave-1/web1")
        await until(pilot, lambda: pilot.app.log_pane.key == "release/wave-1/web1")

    assert snap_compare(
        make_app(hosts=8, gates=(1,)), terminal_size=(120, 36), run_before=run_before
    )


def test_failed_and_rolled_back(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _deploy(pilot, lambda: pilot.app.last_exit is not None)
        pilot.app.tree.select_key("release/wave-2/web3/health")
        await until(pilot, lambda: pilot.app.log_pane.key == "release/wave-2/web3/health")
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(
        make_app(hosts=8, failing={"web3"}), terminal_size=(120, 36), run_before=run_before
    )


def test_done(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _deploy(pilot, lambda: pilot.app.last_exit is not None)

    assert snap_compare(make_app(hosts=8), terminal_size=(120, 36), run_before=run_before)


def test_80x24_running(snap_compare) -> None:
    async def run_before(pilot) -> None:
        await _deploy(pilot, lambda: pilot.app.model.waiting_gate is not None)

    assert snap_compare(
        make_app(hosts=8, gates=(1,)), terminal_size=(80, 24), run_before=run_before
    )


def test_chat_typing_80x24(snap_compare) -> None:
    """The chat input shows the text being typed (before Enter) at 80x24."""
    from tui.chat import LocalEcho

    async def run_before(pilot) -> None:
        await until(pilot, lambda: pilot.app.painted)
        await pilot.press("c", *"rolling back web3?")
        await until(pilot, lambda: pilot.app.chat_pane.query_one("#chat-input").value.endswith("?"))

    app = make_app(hosts=8, chat=LocalEcho("alice"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_80x24_pending(snap_compare) -> None:
    assert snap_compare(make_app(hosts=8), terminal_size=(80, 24))


def test_80x24_failed_and_rolled_back(snap_compare) -> None:
    """The failed host selected: its rollback step in the tree, the whole reason in
    the log pane's header, the ✗ counts first."""

    async def run_before(pilot) -> None:
        await _deploy(pilot, lambda: pilot.app.last_exit is not None)
        pilot.app.tree.select_key("release/wave-2/web3/rollback")
        await until(pilot, lambda: pilot.app.log_pane.key == "release/wave-2/web3/rollback")
        pilot.app.tree.select_key("release/wave-2/web3")
        await until(pilot, lambda: pilot.app.log_pane.key == "release/wave-2/web3")

    assert snap_compare(
        make_app(hosts=8, failing={"web3"}), terminal_size=(80, 24), run_before=run_before
    )


def test_80x24_help(snap_compare) -> None:
    async def run_before(pilot) -> None:
        from tui.screens.help import HelpScreen

        await until(pilot, lambda: pilot.app.painted)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))

    assert snap_compare(make_app(hosts=8), terminal_size=(80, 24), run_before=run_before)

"""The relay connected to the places operators use it: a headless deploy publishing
to the room, the deploying TUI, and a spectator TUI (`shipdeck watch`)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from engine.deploy import Deployment
from relay.publish import attach
from tests.relay.conftest import TOKENS, InProcessRelay
from tests.tui.conftest import label, until
from tui.app import ShipdeckApp
from tui.backend import EngineBackend
from tui.screens.modals import ConfirmScreen

pytestmark = pytest.mark.timeout(90)


def relay_config(fleet_config, relay: InProcessRelay, **kw):
    config = fleet_config(relay_url=relay.url, relay_room="web", **kw)
    assert config.relay is not None
    return config


async def test_headless_deploy_publishes_to_the_room(relay, fleet, fleet_config) -> None:
    config = relay_config(fleet_config, relay)
    bob, col = await relay.client("bob")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        "deploy",
        "-c",
        str(config.path),
        "--headless",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SHIPDECK_TOKEN": TOKENS["alice"], "SHIPDECK_OPERATOR": "alice"},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, out.decode() + err.decode()
    events = await col.wait(
        lambda c: (
            (evs := [e for f in c.of("event") for e in f["events"]])
            and evs[-1]["type"] == "finished"
            and evs
        ),
        timeout=10,
    )
    assert events[0]["type"] == "plan"
    assert events[-1]["status"] == "ok"
    ops = [f["op"] for f in col.of("lock")]
    assert ops[:1] == ["acquired"] and ops[-1] == "released"
    assert all(f["sender"] == "alice" for f in col.of("event"))
    # a late joiner gets the finished tree as a snapshot
    carol, ccol = await relay.client("carol")
    snap = ccol.of("welcome")[0]["snapshot"]
    assert snap["deploy"]["finished"]["status"] == "ok"
    assert "token-for" not in str(col.frames) + str(ccol.frames)


async def test_headless_deploy_refused_while_someone_holds_the_room_lock(
    relay, fleet, fleet_config
) -> None:
    config = relay_config(fleet_config, relay)
    bob, _ = await relay.client("bob")
    await bob.acquire_lock("deploy web@hotfix", ttl=60)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        "deploy",
        "-c",
        str(config.path),
        "--headless",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SHIPDECK_TOKEN": TOKENS["alice"]},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 3
    assert "lock is held by bob: deploy web@hotfix" in err.decode()
    assert not (fleet.hosts[0].home / "app" / "current").exists()


async def test_deploying_tui_publishes_and_chats(relay, fleet, fleet_config, tmp_path) -> None:
    from relay.publish import tui_chat_backend

    config = relay_config(fleet_config, relay)
    chat = tui_chat_backend(relay.url, "web", token=TOKENS["alice"], operator="alice")
    backend = EngineBackend(config, operator="alice", history_path=tmp_path / "h.db")
    app = ShipdeckApp(backend, chat=chat, operator="alice", cursor_blink=False)
    bob, col = await relay.client("bob")
    async with app.run_test(size=(120, 40)) as pilot:
        await until(
            pilot, lambda: app.relay_status == "connected", timeout=10, what="relay connected"
        )
        await until(pilot, lambda: "bob" in app.presence, timeout=10, what="bob in presence")
        await bob.chat("canary looks fine")
        await until(
            pilot,
            lambda: any(m.text == "canary looks fine" for m in app.chat_pane.messages),
            timeout=10,
        )
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.last_exit == 0
        # chat from the TUI reaches bob
        await pilot.press("c")
        await pilot.press(*"ship it")
        await pilot.press("enter")
        await col.wait(lambda c: "ship it" in c.chats(), timeout=10)
    events = [e for f in col.of("event") for e in f["events"]]
    assert events[0]["type"] == "plan" and events[-1]["type"] == "finished"


async def test_watch_tui_sees_the_tree_and_aborts_the_deploy(relay, fleet, fleet_config) -> None:
    from relay.publish import tui_watch

    config = relay_config(fleet_config, relay, batches=["1", "100%"], approve=True)
    chat, watcher = tui_watch(relay.url, "web", token=TOKENS["bob"], operator="bob")
    app = ShipdeckApp(None, chat=chat, operator="bob", watch="web", cursor_blink=False)
    app.watcher = watcher
    async with app.run_test(size=(120, 40)) as pilot:
        await until(
            pilot, lambda: app.relay_status == "connected", timeout=10, what="watcher connected"
        )
        os.environ["SHIPDECK_TOKEN"] = TOKENS["alice"]
        try:
            deployment = Deployment(config, operator="alice")
            close = await attach(config, deployment)
        finally:
            del os.environ["SHIPDECK_TOKEN"]
        run = asyncio.create_task(deployment.run())
        # the spectator's tree shows the canary done and the gate waiting
        await until(
            pilot,
            lambda: app.model.waiting_gate == "release/gate-1",
            timeout=30,
            what="gate in watcher",
        )
        assert label(app, "release/wave-1").startswith("✓")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        result = await asyncio.wait_for(run, 30)
        await close()
        assert result.exit_code == 3
        assert deployment.aborted_by == "bob"
        await until(
            pilot, lambda: app.model.finished is not None, timeout=10, what="finished in watcher"
        )
        assert label(app, "release/wave-2").startswith("–")
        assert any("bob asked to abort" in m.text for m in app.chat_pane.messages)


async def test_watchers_header_shows_maintenance_set_in_the_room(relay) -> None:
    """A maintenance change published in a room (before any deploy) is in a late
    joiner's snapshot and in a live watcher's header; off clears it."""
    from engine.events import MaintenanceChanged
    from relay.publish import tui_watch

    alice, _ = await relay.client("alice", "web")
    await alice.acquire_lock("maintenance on", ttl=30)
    on = MaintenanceChanged("m1", on=True, by="alice", message="db upgrade", at=1.0)
    await alice.publish_event(on)
    chat, watcher = tui_watch(relay.url, "web", token=TOKENS["bob"], operator="bob")
    app = ShipdeckApp(None, chat=chat, operator="bob", watch="web", cursor_blink=False)
    app.watcher = watcher
    async with app.run_test(size=(100, 30)) as pilot:

        def header() -> str:
            return app.main.query_one("DeckHeader").render().plain

        await until(
            pilot, lambda: "MAINTENANCE by alice: db upgrade" in header(), timeout=10, what="on"
        )
        await alice.publish_event(MaintenanceChanged("m2", on=False, by="alice", at=2.0))
        await until(pilot, lambda: "MAINTENANCE" not in header(), timeout=10, what="off")
        assert "waiting for a deploy" in header()
    await alice.release_lock()


async def test_an_idle_operators_header_follows_maintenance_set_in_the_room(
    relay, fleet, fleet_config, tmp_path
) -> None:
    """The deploying operator's app, waiting between deploys, learns of maintenance
    switched on and off in its room (as a watcher does), without deploying; the
    room's own deploys do not replace its tree."""
    from engine.events import MaintenanceChanged
    from relay.publish import tui_chat_backend

    config = relay_config(fleet_config, relay)
    chat = tui_chat_backend(relay.url, "web", token=TOKENS["alice"], operator="alice")
    backend = EngineBackend(config, operator="alice", history_path=tmp_path / "h.db")
    app = ShipdeckApp(backend, chat=chat, operator="alice", cursor_blink=False)
    bob, _ = await relay.client("bob", "web")
    async with app.run_test(size=(120, 40)) as pilot:

        def header() -> str:
            return app.main.query_one("DeckHeader").render().plain

        await until(pilot, lambda: app.relay_status == "connected", timeout=10, what="relay")
        tree = list(app.model.plan.nodes)
        await bob.acquire_lock("maintenance on", ttl=30)
        await bob.publish_event(
            MaintenanceChanged("m1", on=True, by="bob", message="db upgrade", at=1.0)
        )
        await until(
            pilot, lambda: "MAINTENANCE by bob: db upgrade" in header(), timeout=10, what="on"
        )
        assert list(app.model.plan.nodes) == tree  # still this operator's deploy, ready
        await bob.publish_event(MaintenanceChanged("m2", on=False, by="bob", at=2.0))
        await until(pilot, lambda: "MAINTENANCE" not in header(), timeout=10, what="off")
        await bob.release_lock()

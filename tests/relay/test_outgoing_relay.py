"""What goes out, carried by the relay: a spectator (`shipdeck watch`) sees the gate's
card in its gate dialog and approves through the room; a late joiner's snapshot
carries the cards. A real relay, the real engine, the in-process SSH fleet."""

from __future__ import annotations

import asyncio
import os

import pytest

from engine.deploy import Deployment
from engine.history import History
from engine.localfleet import commit_version
from relay.publish import attach
from tests.relay.conftest import TOKENS
from tests.relay.test_tui_relay import relay_config
from tests.tui.conftest import until
from tui.app import ShipdeckApp
from tui.screens.modals import ConfirmScreen, OutgoingCard

pytestmark = pytest.mark.timeout(90)


async def test_watcher_approves_a_gate_seeing_what_goes_out(
    relay, fleet, fleet_config, sample_repo, tmp_path
) -> None:
    from relay.publish import tui_watch

    first = await Deployment(
        fleet_config(), operator="alice", history=History(tmp_path / "h.db")
    ).run()
    assert first.exit_code == 0
    sha = commit_version(sample_repo, "2.0.0", "Bump to 2.0.0")
    config = relay_config(fleet_config, relay, batches=["1", "100%"], approve=True)
    chat, watcher = tui_watch(relay.url, "web", token=TOKENS["bob"], operator="bob")
    app = ShipdeckApp(None, chat=chat, operator="bob", watch="web", cursor_blink=False)
    app.watcher = watcher
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.relay_status == "connected", timeout=10, what="watcher")
        os.environ["SHIPDECK_TOKEN"] = TOKENS["alice"]
        try:
            deployment = Deployment(config, operator="alice", history=History(tmp_path / "h.db"))
            close = await attach(config, deployment)
        finally:
            del os.environ["SHIPDECK_TOKEN"]
        run = asyncio.create_task(deployment.run())
        await until(
            pilot, lambda: app.model.waiting_gate == "release/gate-1", timeout=30, what="gate"
        )
        assert app.model.state.outgoing["release"]["hosts"] == 3
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        card = app.screen.query_one(OutgoingCard)
        await until(pilot, lambda: card.shown not in ((), None), what="the card drawn")
        lines = card.lines
        assert lines[0] == f"what goes out at gate-1 to 2 hosts: {sha[:7]} Bump to 2.0.0"
        assert lines[1].endswith("1 commit going out, 1 file +1 −1")
        assert lines[2] == "   host2, host3"
        assert lines[4] == "   +1 −1  VERSION"
        await pilot.press("enter")  # approve: sent to alice's engine through the room
        result = await asyncio.wait_for(run, 40)
        assert result.exit_code == 0, result.summary
        assert deployment.plan["release/gate-1"].status == "ok"
        # a late joiner's snapshot carries both cards
        carol, col = await relay.client("carol")
        snap = col.of("welcome")[0]["snapshot"]["deploy"]
        assert set(snap["outgoing"]) == {"release", "release/gate-1"}
        assert snap["outgoing"]["release/gate-1"]["groups"][0]["hosts"] == ["host2", "host3"]
        await close()


def test_the_event_matches_the_published_schema(sample_repo) -> None:
    import json

    import jsonschema

    from engine.events import ChangesOutgoing
    from engine.localfleet import _git
    from engine.outgoing import Running, compute
    from relay import schema
    from relay.protocol import check_event

    first = _git(sample_repo, "rev-parse", "HEAD")
    commit_version(sample_repo, "2.0.0")
    card = compute(sample_repo, "main", [Running("web1", "r", first), Running("web2")])
    event = ChangesOutgoing("d1", key="release", changes=card.to_json(), at=1.0)
    validator = jsonschema.Draft202012Validator(json.loads(schema.SCHEMA_PATH.read_text()))
    validator.validate(event.to_json())
    assert check_event(event.to_json()) == event  # what the relay accepts from a client
    bad = {**event.to_json(), "changes": {"groups": [{"state": "sideways"}]}}
    assert not validator.is_valid(bad)

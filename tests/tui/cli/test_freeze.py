"""Deploy freezes as a team meets them: a deploy or rollback inside a [[freeze]] window
is refused (exit 3, naming the window) unless `--override-freeze --reason TEXT` by an
admin (the role the relay confirms) or, without a relay, by any operator; the override
is recorded in history, revisions.log and the transcript, and announced in the room."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.history import History
from relay.server import Limits, Relay
from relay.store import SQLiteStore
from relay.tokens import load_tokens
from tests.helpers import current, revisions
from tests.relay.conftest import TOKENS, Collector
from tests.tui.cli.helpers import shipdeck

pytestmark = pytest.mark.timeout(120)

ALWAYS = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
FREEZE = f"""
[env.staging]
default = true

[env.production]
ssh.connect_timeout = 5

[[env.production.freeze]]
name = "quarter-close"
days = {ALWAYS}
tz = "Europe/Berlin"
reason = "books are closing"
"""


def _config(fleet, sample_repo, tmp_path: Path, **kw) -> Path:
    path = fleet.write_config(tmp_path / "shipdeck.toml", sample_repo, **kw)
    path.write_text(path.read_text() + FREEZE)
    return path


def _events(frames: Collector) -> list[dict]:
    return [
        e
        for f in frames.of("event")
        for e in f.get("events", [f.get("event")])
        if isinstance(e, dict)
    ]


async def test_without_a_relay_a_freeze_refuses_and_any_operator_overrides(fleet, sample_repo, tmp_path) -> None:
    config = str(_config(fleet, sample_repo, tmp_path))
    apps = [h.home / "app" for h in fleet.hosts]

    code, out, err = await shipdeck("deploy", "-c", config, "-e", "production", "--headless")
    assert code == 3, out + err
    assert err.strip() == (
        "shipdeck: deploy refused: freeze window 'quarter-close' (mon,tue,wed,thu,fri,sat,sun "
        "00:00-24:00 Europe/Berlin): books are closing; frozen until the window is removed "
        "from the config. To go ahead anyway, the operator passes --override-freeze --reason TEXT"
    )
    assert not any(current(a) for a in apps)
    assert History().list(5) == []

    code, out, _ = await shipdeck("deploy", "-c", config, "-e", "production", "--dry-run", "--no-connect")
    assert code == 0 and "frozen: a deploy now is refused (freeze window 'quarter-close'" in out

    # the staging environment has no freeze
    code, out, err = await shipdeck("deploy", "-c", config, "--headless")
    assert code == 0, out + err

    code, _, err = await shipdeck("deploy", "-c", config, "-e", "production", "--headless", "--override-freeze")
    assert code == 2 and "--override-freeze needs --reason TEXT" in err
    code, out, err = await shipdeck(
        "deploy", "-c", config, "-e", "production", "--headless", "--override-freeze", "--reason", "fix  the\nlogin page"
    )
    assert code == 0, out + err
    assert "freeze window 'quarter-close'" in out and "overridden by tester: fix the login page" in out
    row = History().list(1)[0]
    assert row["env"] == "production"
    assert row["freeze_override"]["window"] == "quarter-close"
    assert (row["freeze_override"]["override_reason"], row["freeze_override"]["by"]) == ("fix the login page", "tester")
    assert revisions(apps[0])[-1].endswith(" env=production freeze_override=fix%20the%20login%20page")
    controls = [
        json.loads(line)
        for line in History().transcript(row["id"]).read_text().splitlines()
        if '"type":"control"' in line
    ]
    assert [(c["action"], c["key"], c["reason"]) for c in controls] == [
        ("freeze_override", "quarter-close", "fix the login page")
    ]

    code, shown, _ = await shipdeck("show", row["id"])
    assert code == 0 and "  project   demo  env production" in shown
    assert "  freeze    'quarter-close' overridden by tester: fix the login page" in shown

    code, _, err = await shipdeck("rollback", "-c", config, "-e", "production", "--headless")
    assert code == 3 and err.startswith("shipdeck: rollback refused: freeze window 'quarter-close'")


@pytest.fixture
async def relay_url(tmp_path: Path):
    """A relay where alice is an admin, bob an operator and carol an observer."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(
        "[operators]\n"
        f'alice = {{ token = "{TOKENS["alice"]}", role = "admin" }}\n'
        f'bob = "{TOKENS["bob"]}"\n'
        f'carol = {{ token = "{TOKENS["carol"]}", role = "observer" }}\n'
    )
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), load_tokens(tokens), Limits())
    await relay.start("127.0.0.1", 0)
    yield f"ws://127.0.0.1:{relay.port}"
    await relay.shutdown()


@pytest.fixture
async def watcher(relay_url: str):
    """carol, an observer watching the room."""
    from relay.client import RelayClient

    frames = Collector()
    client = RelayClient(relay_url, "demo", TOKENS["carol"], on_message=frames)
    await client.start(timeout=10)
    yield frames
    await client.close(flush=0)


async def test_with_a_relay_only_an_admin_overrides_and_the_room_hears_it(
    fleet, sample_repo, tmp_path, relay_url, watcher, monkeypatch
) -> None:
    monkeypatch.delenv("SHIPDECK_OPERATOR")
    config = str(_config(fleet, sample_repo, tmp_path, relay_url=relay_url, relay_room="demo"))
    alice, bob = ({"SHIPDECK_TOKEN": TOKENS[n]} for n in ("alice", "bob"))
    prod = ("deploy", "-c", config, "-e", "production", "--headless")
    override = ("--override-freeze", "--reason", "hotfix for the outage")

    code, _, err = await shipdeck(*prod, env=alice)
    assert code == 3 and "freeze window 'quarter-close'" in err
    assert "an admin (with the relay) passes --override-freeze --reason TEXT" in err
    code, _, err = await shipdeck(*prod, *override, env=bob)
    assert code == 3
    assert "needs the admin role: the relay knows bob as operator, not admin" in err
    code, _, err = await shipdeck(*prod, *override, "--without-relay", env=alice)
    assert code == 3 and "the relay must confirm an admin role (not with --without-relay)" in err
    assert not any(current(h.home / "app") for h in fleet.hosts)
    assert [e for e in _events(watcher) if e.get("type") == "plan"] == []  # the room saw no deploy

    code, out, err = await shipdeck(*prod, *override, env=alice)
    assert code == 0, out + err
    events = await watcher.wait(
        lambda w: (evs := _events(w)) and any(e["type"] == "finished" for e in evs) and evs
    )
    plans = [e for e in events if e["type"] == "plan"]  # live, and again in a snapshot
    assert plans and {(p["meta"]["env"], p["meta"]["operator"]) for p in plans} == {("production", "alice")}
    (announced,) = {json.dumps(e, sort_keys=True): e for e in events if e["type"] == "control"}.values()
    assert (announced["action"], announced["by"], announced["key"], announced["reason"]) == (
        "freeze_override", "alice", "quarter-close", "hotfix for the outage"
    )
    row = History().list(1)[0]
    assert row["freeze_override"]["by"] == "alice" and row["freeze_override"]["role"] == "admin"
    last = revisions(fleet.hosts[0].home / "app")[-1]
    assert " operator=alice " in last and last.endswith("freeze_override=hotfix%20for%20the%20outage")


async def test_the_tui_shows_the_environment_and_refuses_inside_a_window(fleet, sample_repo, tmp_path) -> None:
    import argparse

    from engine.config import load_config
    from tests.tui.conftest import until
    from tui.cli.deploy import deploy_app
    from tui.screens.modals import ConfirmScreen

    config = load_config(_config(fleet, sample_repo, tmp_path), "production")
    args = argparse.Namespace(ref=None, hosts=None, force_unlock=False)
    app = deploy_app(config, args, "tester")
    async with app.run_test(size=(120, 40)) as pilot:
        header = app.main.query_one("#header")
        await until(pilot, lambda: "[production]" in str(header.render()), what="the environment")
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=20)
        assert app.last_exit == 3
        notices = [n.message for n in app._notifications]
        assert any("deploy refused: freeze window 'quarter-close'" in m for m in notices), notices
    assert not any(current(h.home / "app") for h in fleet.hosts)

"""`shipdeck maintenance on|off` as an operator runs it (a subprocess), with hooks run
on this machine and a real relay room: who and why in history and in the room, the
room's lock respected, and a config with nothing to switch refused. (The HAProxy
adapter's part runs on a real HAProxy in tests/engine/test_maintenance_sshd.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.relay.conftest import TOKENS, start_relay
from tests.tui.cli.helpers import shipdeck

pytestmark = pytest.mark.timeout(60)


def write_config(tmp_path: Path, relay_url: str | None = None, hooks: bool = True) -> Path:
    lines = [
        "[project]",
        'name = "web"',
        'repo = "."',
        "[deploy]",
        'path = "/srv/web"',
    ]
    if hooks:
        lines += [
            """maintenance_on = ['echo "on $SHIPDECK_OPERATOR $SHIPDECK_MAINTENANCE_MESSAGE" >> marks']""",
            """maintenance_off = ['echo "off $SHIPDECK_OPERATOR" >> marks']""",
        ]
    lines += ["[hosts]", 'web = ["web1.example.com"]']
    if relay_url:
        lines += ["[relay]", f'url = "{relay_url}"', 'room = "web"', "connect_timeout = 3"]
    path = tmp_path / "shipdeck.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def relay(tmp_path: Path):
    r = await start_relay(tmp_path)
    yield r
    for c in r.clients:
        await c.close(flush=0)
    await r.relay.shutdown()


async def test_on_and_off_are_recorded_in_history_and_the_room(relay, tmp_path, monkeypatch):
    monkeypatch.delenv("SHIPDECK_OPERATOR")  # the relay names the operator: alice
    config = write_config(tmp_path, relay.url)
    env = {"SHIPDECK_TOKEN": TOKENS["alice"]}
    code, out, err = await shipdeck(
        "maintenance", "on", "-m", "db upgrade", "-c", str(config), env=env
    )
    assert code == 0, err
    assert "maintenance on since " in out and "by alice: db upgrade (1 hook(s))" in out
    assert (tmp_path / "marks").read_text() == "on alice db upgrade\n"

    # the room recorded it: a late joiner's snapshot carries it, the lease is free again
    bob, _ = await relay.client("bob", "web")
    snap = bob.snapshot
    assert snap is not None and snap.lock is None
    assert snap.deploy is not None and snap.deploy["maintenance"]["by"] == "alice"
    assert snap.deploy["maintenance"]["message"] == "db upgrade"

    code, out, err = await shipdeck("maintenance", "off", "-c", str(config), env=env)
    assert code == 0, err
    assert "maintenance off since" in out
    assert (tmp_path / "marks").read_text().splitlines()[-1] == "off alice"

    code, out, _ = await shipdeck("history", "--json")
    rows = json.loads(out)
    assert [(r["kind"], r["ref"], r["operator"], r["status"]) for r in rows] == [
        ("maintenance", "off", "alice", "ok"),
        ("maintenance", "on", "alice", "ok"),
    ]
    assert rows[1]["summary"]["message"] == "db upgrade"
    code, out, _ = await shipdeck("show", rows[1]["id"], "--transcript")
    assert "reason    db upgrade" in out
    assert "⚠ maintenance on since" in out and "by alice: db upgrade" in out


async def test_the_rooms_lock_held_by_a_deploy_stops_it(relay, tmp_path):
    bob, _ = await relay.client("bob", "web")
    await bob.acquire_lock("deploy web@main", ttl=30)
    config = write_config(tmp_path, relay.url)
    code, out, err = await shipdeck(
        "maintenance", "on", "-c", str(config), env={"SHIPDECK_TOKEN": TOKENS["alice"]}
    )
    assert code == 3 and out == ""
    assert "the room's deploy lock is held by bob: deploy web@main" in err
    assert "maintenance on not switched" in err
    assert not (tmp_path / "marks").exists()  # nothing ran


async def test_a_relay_that_is_down_stops_it_unless_without_relay(tmp_path):
    config = write_config(tmp_path, "ws://127.0.0.1:9")
    code, _, err = await shipdeck("maintenance", "on", "-c", str(config))
    assert code == 3 and "--without-relay" in err
    assert not (tmp_path / "marks").exists()
    code, out, err = await shipdeck("maintenance", "on", "--without-relay", "-c", str(config))
    assert code == 0, err
    assert "by tester" in out and (tmp_path / "marks").exists()
    _, out, _ = await shipdeck("history", "--json")
    assert json.loads(out)[0]["summary"]["relay"] == "skipped (--without-relay)"


async def test_nothing_to_switch_is_a_usage_error_naming_the_file(tmp_path):
    config = write_config(tmp_path, hooks=False)
    code, out, err = await shipdeck("maintenance", "on", "-c", str(config))
    assert code == 2 and out == ""
    assert f"{config}: balancer: maintenance needs the HAProxy adapter" in err
    assert "deploy.maintenance_on" in err

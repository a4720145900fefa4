"""One operator identity: `SHIPDECK_OPERATOR`, else the operator the relay confirmed for
the token, else `user@hostname` — the same name in history, revisions.log, the host
lock, the TUI header, the chat and the relay room."""

from __future__ import annotations

import argparse
import getpass
import json
import socket
from pathlib import Path

import pytest

from engine.config import load_config
from engine.history import History
from relay.server import Limits, Relay
from relay.store import SQLiteStore
from relay.tokens import load_tokens
from tests.helpers import revisions
from tests.relay.conftest import TOKENS, Collector, write_tokens
from tests.tui.cli.helpers import shipdeck

pytestmark = pytest.mark.timeout(90)

COPY_LOCK_OWNER = 'cp "$SHIPDECK_DEPLOY_PATH/.shipdeck.lock/owner" "$HOME/lock-owner.json"'


@pytest.fixture
async def relay_url(tmp_path: Path):
    """A relay whose operators come from a tokens file (alice, bob, carol)."""
    tokens = load_tokens(write_tokens(tmp_path / "tokens.toml"))
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), tokens, Limits())
    await relay.start("127.0.0.1", 0)
    yield f"ws://127.0.0.1:{relay.port}"
    await relay.shutdown()


@pytest.fixture
async def watcher(relay_url: str):
    """bob, watching the room: what the relay shows everyone else."""
    from relay.client import RelayClient

    frames = Collector()
    client = RelayClient(relay_url, "demo", TOKENS["bob"], on_message=frames)
    await client.start(timeout=10)
    yield frames
    await client.close(flush=0)


def _config(fleet, sample_repo, tmp_path: Path, relay_url: str):
    return load_config(
        fleet.write_config(
            tmp_path / "shipdeck.toml",
            sample_repo,
            relay_url=relay_url,
            relay_room="demo",
            before_activate=[COPY_LOCK_OWNER],
        )
    )


def _recorded(fleet, deploy_id: str) -> dict[str, object]:
    """Where the operator is written down: history, each host's revisions.log and lock."""
    return {
        "history": History().find(deploy_id)["operator"],
        "revisions.log": {
            line.split(" operator=")[1].split()[0]
            for h in fleet.hosts
            for line in revisions(h.home / "app")
            if f"deploy={deploy_id}" in line
        },
        "lock": {
            json.loads((h.home / "lock-owner.json").read_text())["operator"] for h in fleet.hosts
        },
    }


async def test_headless_deploy_records_the_relay_operator_everywhere(
    fleet, sample_repo, tmp_path, relay_url, watcher, monkeypatch
) -> None:
    monkeypatch.delenv("SHIPDECK_OPERATOR")
    config = _config(fleet, sample_repo, tmp_path, relay_url)
    code, out, err = await shipdeck(
        "deploy", "-c", str(config.path), "--headless", env={"SHIPDECK_TOKEN": TOKENS["alice"]}
    )
    assert code == 0, out + err
    assert " as alice " in out.splitlines()[0]
    (row,) = History().list(1)
    assert _recorded(fleet, row["id"]) == {
        "history": "alice",
        "revisions.log": {"alice"},
        "lock": {"alice"},
    }
    # the relay: the room's lock holder, and the deploy tree spectators see
    locks = [f for f in watcher.of("lock") if f.get("op") == "acquired"]
    assert locks and locks[0]["holder"]["operator"] == "alice"
    plans = [
        e
        for f in watcher.of("event")
        for e in f.get("events", [f.get("event")])
        if isinstance(e, dict) and e.get("type") == "plan"
    ]
    assert plans and {p["meta"]["operator"] for p in plans} == {"alice"}


async def test_tui_header_chat_and_deploy_use_the_relay_operator(
    fleet, sample_repo, tmp_path, relay_url, watcher, monkeypatch
) -> None:
    """The deploying TUI as `shipdeck deploy` builds it: the header says @alice, a chat
    line reaches the room as alice, and the deploy records alice."""
    from textual.widgets import Input

    from tests.tui.conftest import until
    from tui.cli.deploy import deploy_app
    from tui.cli.operator import config_operator
    from tui.screens.modals import ConfirmScreen

    monkeypatch.delenv("SHIPDECK_OPERATOR")
    monkeypatch.setenv("SHIPDECK_TOKEN", TOKENS["alice"])
    config = _config(fleet, sample_repo, tmp_path, relay_url)
    args = argparse.Namespace(ref=None, hosts=None, force_unlock=False)
    app = deploy_app(config, args, await config_operator(config, args))
    async with app.run_test(size=(120, 40)) as pilot:
        header = app.main.query_one("#header")
        await until(pilot, lambda: "relay ◉ connected" in str(header.render()), timeout=10)
        assert "@alice" in str(header.render())
        await pilot.pause()
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.focused, Input), what="chat input")
        await pilot.press(*"canary next", "enter")
        await watcher.wait(lambda w: "canary next" in w.chats())
        assert [f["sender"] for f in watcher.of("chat")] == ["alice"]
        await pilot.press("escape", "d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None and not app.deploying, timeout=40)
        assert app.last_exit == 0, app.model.finished
        assert "@alice" in str(header.render())
        deploy_id = app.model.meta.get("deploy_id") or History().list(1)[0]["id"]
    assert _recorded(fleet, deploy_id) == {
        "history": "alice",
        "revisions.log": {"alice"},
        "lock": {"alice"},
    }
    locks = [f for f in watcher.of("lock") if f.get("op") == "acquired"]
    assert locks and locks[-1]["holder"]["operator"] == "alice"


async def test_shipdeck_operator_wins_and_says_so(
    fleet, sample_repo, tmp_path, relay_url, monkeypatch
) -> None:
    monkeypatch.setenv("SHIPDECK_OPERATOR", "release-bot")
    config = _config(fleet, sample_repo, tmp_path, relay_url)
    code, out, err = await shipdeck(
        "deploy", "-c", str(config.path), "--headless", env={"SHIPDECK_TOKEN": TOKENS["alice"]}
    )
    assert code == 0, out + err
    assert "'release-bot' (SHIPDECK_OPERATOR)" in err and "'alice'" in err
    (row,) = History().list(1)
    assert _recorded(fleet, row["id"])["history"] == "release-bot"


async def test_without_relay_or_env_it_is_user_at_hostname(
    fleet, fleet_config, monkeypatch
) -> None:
    monkeypatch.delenv("SHIPDECK_OPERATOR")
    config = fleet_config(before_activate=[COPY_LOCK_OWNER])
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    (row,) = History().list(1)
    assert _recorded(fleet, row["id"]) == {
        "history": me,
        "revisions.log": {me},
        "lock": {me},
    }


async def test_headless_rollback_records_the_relay_operator(
    fleet, sample_repo, tmp_path, relay_url, monkeypatch
) -> None:
    from engine.localfleet import commit_version

    monkeypatch.delenv("SHIPDECK_OPERATOR")
    monkeypatch.setenv("SHIPDECK_TOKEN", TOKENS["carol"])
    config = _config(fleet, sample_repo, tmp_path, relay_url)
    for version in ("1.0.0", "2.0.0"):
        if version != "1.0.0":
            commit_version(sample_repo, version)
        code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
        assert code == 0, out + err
    code, out, err = await shipdeck("rollback", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    row = History().list(1)[0]
    assert (row["kind"], row["operator"]) == ("rollback", "carol")
    for h in fleet.hosts:
        last = revisions(h.home / "app")[-1]
        assert f"deploy={row['id']}" in last and " operator=carol " in last


async def test_relay_operator_asks_once_and_never_hangs(relay_url, monkeypatch) -> None:
    """What `shipdeck watch`, rollback and the deploying TUI ask before they start."""
    from tui.cli.operator import relay_operator, resolve_operator

    monkeypatch.delenv("SHIPDECK_OPERATOR")
    assert await relay_operator(relay_url, "demo", TOKENS["carol"]) == "carol"
    assert await relay_operator(relay_url, "demo", "not-a-token-of-anyone") is None
    assert await relay_operator(relay_url, "demo", None) is None
    # nothing listens there: refused at once (the client does not retry for an answer)
    assert await relay_operator("ws://127.0.0.1:9", "demo", TOKENS["carol"], timeout=30) is None
    assert resolve_operator("carol") == "carol"
    assert resolve_operator(None) == f"{getpass.getuser()}@{socket.gethostname()}"
    monkeypatch.setenv("SHIPDECK_OPERATOR", "release-bot")
    assert resolve_operator("carol") == "release-bot"

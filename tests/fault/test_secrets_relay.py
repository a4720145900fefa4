"""Secrets around the relay: with a unique canary as the SSH password and another as
the deploying operator's relay token, a full session (headless deploys publishing to
the relay, a watcher, ``shipdeck say``/``tail``, the deploying TUI with the relay chat
and its screen capture) leaves neither canary in any output, JSON event stream,
transcript, history database, relay database (and its WAL), relay log or screenshot.

``pytest -m fault tests/fault/test_secrets_relay.py -s`` prints what was searched.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.history import History
from engine.localfleet import LocalFleet, commit_version
from relay.client import RelayClient
from tests.relay.conftest import ROOT, RelayProcess
from tests.tui.conftest import until
from tui.app import ShipdeckApp
from tui.backend import EngineBackend
from tui.screens.modals import ConfirmScreen

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

ROOM = "web"
WATCHER_TOKEN = "token-for-bob-watching"


class LoggedRelay(RelayProcess):
    """The relay process with its own tokens file, stderr kept in a file."""

    def __init__(self, tmp_path: Path, operators: dict[str, str], log_level: str) -> None:
        super().__init__(tmp_path)
        self.tokens.write_text(
            "[operators]\n" + "".join(f'{k} = "{v}"\n' for k, v in operators.items())
        )
        self.tokens.chmod(0o600)
        self.log = tmp_path / "relay-stderr.log"
        self.log_level = log_level


def grep_tree(root: Path, needles: list[bytes], skip: set[Path]) -> tuple[list[str], int]:
    """(files holding any needle, files searched) under ``root``."""
    hits, searched = [], 0
    for p in sorted(root.rglob("*")):
        if p in skip or not p.is_file() or p.is_symlink():
            continue
        try:
            data = p.read_bytes()
        except OSError:
            continue
        searched += 1
        if any(n in data for n in needles):
            hits.append(str(p))
    return hits, searched


async def _run(*args: str, env: dict[str, str]) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_canaries_never_leave_their_owners(
    tmp_path: Path, sample_repo: Path, _isolated_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary_pw = f"canary-PW-{secrets.token_hex(8)}"
    canary_token = f"canary-TOKEN-{secrets.token_hex(8)}"
    needles = [canary_pw.encode(), canary_token.encode()]
    relay = LoggedRelay(tmp_path, {"alice": canary_token, "bob": WATCHER_TOKEN}, "info")
    outputs: dict[str, bytes] = {}
    watcher: RelayClient | None = None
    try:
        url = await asyncio.to_thread(relay.start)
        frames: list[dict[str, Any]] = []
        finished = asyncio.Event()

        def watch(frame: dict[str, Any]) -> None:
            frames.append(frame)
            if frame.get("type") == "event" and any(
                e.get("type") == "finished" for e in frame["events"]
            ):
                finished.set()

        watcher = RelayClient(url, ROOM, WATCHER_TOKEN, on_message=watch)
        await watcher.start(timeout=10)

        async with LocalFleet(tmp_path / "fleet", 2, password=canary_pw) as fleet:
            fleet.client_key_path.unlink()  # the password is the only way in
            config_path = fleet.write_config(
                tmp_path / "shipdeck.toml",
                sample_repo,
                ssh_extra={"password_env": "SD_CANARY_PW"},
                relay_url=url,
                relay_room=ROOM,
            )
            monkeypatch.setenv("SD_CANARY_PW", canary_pw)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "SHIPDECK_TOKEN": canary_token,
                "SHIPDECK_OPERATOR": "alice",
            }

            # two headless deploys publishing to the room: human output, then JSON events
            for n, mode in enumerate((["--headless", "--verbose"], ["--json"])):
                finished.clear()
                code, out, err = await _run(
                    "-m", "tui.cli", "deploy", "-c", str(config_path), *mode, env=env
                )
                assert code == 0, (out + err).decode()
                outputs[f"deploy {mode[0]} stdout"], outputs[f"deploy {mode[0]} stderr"] = out, err
                await asyncio.wait_for(finished.wait(), 10)
                commit_version(sample_repo, f"2.0.{n}")
            assert b'"type": "finished"' in outputs["deploy --json stdout"] or (
                b'"type":"finished"' in outputs["deploy --json stdout"]
            )

            # say and tail through the shipdeck command, token from the environment
            code, out, err = await _run(
                "-m", "tui.cli", "say", "--relay", url, "--room", ROOM, "tail", "next", env=env
            )
            assert code == 0, err.decode()
            outputs["say"] = out + err
            for extra in ([], ["--json"]):
                code, out, err = await _run(
                    "-m", "tui.cli", "tail", "--relay", url, "--room", ROOM, *extra, env=env
                )
                assert code == 0, err.decode()
                outputs[f"tail {extra}"] = out + err
            tail_json = [json.loads(line) for line in outputs["tail ['--json']"].splitlines()]
            assert {f["sender"] for f in tail_json if f["type"] == "event"} == {"alice"}

            # the deploying TUI on the relay chat, with the canary token; deploy from it
            monkeypatch.setenv("SHIPDECK_TOKEN", canary_token)
            from relay.publish import tui_chat_backend

            config = load_config(config_path)
            chat = tui_chat_backend(url, ROOM, token=canary_token, operator="alice")
            backend = EngineBackend(config, operator="alice")
            app = ShipdeckApp(backend, chat=chat, operator="alice", cursor_blink=False)
            marker = f"marker-{secrets.token_hex(6)}"
            screenshots = tmp_path / "screens"
            screenshots.mkdir()
            async with app.run_test(size=(140, 45)) as pilot:
                await until(pilot, lambda: app.relay_status == "connected", 10, "relay")
                await watcher.chat(marker)
                await until(
                    pilot, lambda: any(m.text == marker for m in app.chat_pane.messages), 10
                )
                finished.clear()
                await pilot.press("d")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press("enter")
                await until(
                    pilot, lambda: app.last_exit is not None and not app.deploying, 40, "deploy"
                )
                assert app.last_exit == 0
                await asyncio.wait_for(finished.wait(), 10)
                app.save_screenshot("tui.svg", path=str(screenshots))
                (screenshots / "tui-export.svg").write_text(app.export_screenshot())
            svg = (screenshots / "tui.svg").read_text()
            assert marker in svg, "the screen capture does not show text as it was written"

        # the relay's database and WAL while it runs, then after a clean stop
        live_db = {p.name: p.read_bytes() for p in tmp_path.glob("relay.db*")}
        assert "relay.db-wal" in live_db
        (tmp_path / "frames.json").write_text(json.dumps(frames))  # the watcher's stream
        await watcher.close()
        watcher = None
        assert await asyncio.to_thread(relay.terminate) == 0
    finally:
        if watcher is not None:
            await watcher.close(flush=0)
        relay.stop()

    # -- and now look everywhere ----------------------------------------------------
    assert len(History().list()) >= 3, "the deploys were not recorded"
    event_senders = {f["sender"] for f in frames if f.get("type") == "event"}
    assert event_senders == {"alice"}, "the canary token was not the one publishing"
    leaks = [name for name, data in outputs.items() if any(n in data for n in needles)]
    leaks += [name for name, data in live_db.items() if any(n in data for n in needles)]
    skip = {relay.tokens}  # the relay's tokens file holds the token by design
    tree_hits, searched = grep_tree(tmp_path, needles, skip)
    state_hits, state_searched = grep_tree(_isolated_state, needles, skip)
    print(
        f"\nsecrets: searched {len(outputs)} outputs, {len(live_db)} live relay db files, "
        f"{searched} files under the test dir (relay db+wal, relay log, watcher stream, "
        f"screenshots, hosts) and {state_searched} under XDG state/cache (history, "
        f"transcripts): {len(leaks) + len(tree_hits) + len(state_hits)} hits"
    )
    assert leaks == []
    assert tree_hits == []
    assert state_hits == []


async def test_relay_debug_log_has_no_token(tmp_path: Path) -> None:
    token = f"canary-TOKEN-{secrets.token_hex(8)}"
    relay = LoggedRelay(tmp_path, {"alice": token}, "debug")
    try:
        url = await asyncio.to_thread(relay.start)
        client = RelayClient(url, ROOM, token)
        await client.start(timeout=10)
        await client.chat("hello")
        await client.close()
        assert await asyncio.to_thread(relay.terminate) == 0
    finally:
        relay.stop()
    log = relay.log.read_text()
    assert "joined" in log  # debug logging was on
    assert token not in log

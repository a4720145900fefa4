"""`shipdeck ... | head -1`: a command whose stdout is closed early exits quietly with
status 141 (128 + SIGPIPE, what a shell reports for `yes | head`), never a traceback.

Each test gives the command a real pipe, reads exactly one line from it and closes the
read end. The pipe's buffer is shrunk to one page so that the command is still writing
when the reader goes away: the broken pipe is certain, not a matter of timing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from engine.history import History
from tests.helpers import current, releases

pytestmark = pytest.mark.timeout(90)

EXIT_PIPE = 141
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _read_line(fd: int) -> bytes:
    """Exactly one line (byte by byte: nothing after it is consumed)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


async def closed_after_one_line(
    *args: str, env: dict[str, str] | None = None, block: bool = False
) -> tuple[int | None, bytes, str]:
    """Run ``shipdeck ARGS`` with stdout to a pipe that is closed after its first line.

    ``block``: read that line without yielding to the event loop, so that whatever
    this test serves in process (the local fleet) waits until the pipe is closed.
    """
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tui.cli",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=w,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
    finally:
        os.close(w)
    try:
        first = _read_line(r) if block else await asyncio.to_thread(_read_line, r)
    finally:
        os.close(r)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, first, err.decode()


def _quiet(err: str) -> None:
    assert "Traceback" not in err, err
    assert "Error" not in err, err


def _fill_history(n: int, hosts: int = 2) -> list[str]:
    """``n`` finished deploys of ``hosts`` hosts each, written as the engine writes them."""
    h = History()
    ids = []
    for i in range(n):
        deploy_id = f"20261201T{i:06d}Z-{i:06x}"
        h.start(deploy_id, "deploy", "web", "main", "alice", "shipdeck.toml")
        ids.append(deploy_id)
    with sqlite3.connect(h.path) as db:
        db.execute("UPDATE deploys SET status = 'ok', exit_code = 0, ended = ?", (time.time(),))
        db.executemany(
            "INSERT INTO deploy_hosts (deploy_id, host, status, detail, release_id, previous)"
            " VALUES (?, ?, 'ok', '', '', '')",
            [(d, f"web{j:03d}.example.com") for d in ids for j in range(hosts)],
        )
    return ids


async def test_history_into_a_closed_pipe() -> None:
    _fill_history(300)
    code, first, err = await closed_after_one_line("history", "-n", "300")
    assert first.startswith(b"ID ")
    _quiet(err)
    assert code == EXIT_PIPE


async def test_history_json_into_a_closed_pipe() -> None:
    _fill_history(300)
    code, first, err = await closed_after_one_line("history", "-n", "300", "--json")
    assert first == b"[\n"
    _quiet(err)
    assert code == EXIT_PIPE


async def test_show_into_a_closed_pipe() -> None:
    (deploy_id,) = _fill_history(1, hosts=400)
    code, first, err = await closed_after_one_line("show", deploy_id)
    assert first == f"deploy {deploy_id}\n".encode()
    _quiet(err)
    assert code == EXIT_PIPE


async def test_tail_into_a_closed_pipe(tmp_path: Path) -> None:
    from tests.relay.conftest import TOKENS, start_relay

    relay = await start_relay(tmp_path)
    try:
        client, _ = await relay.client("alice", room="web")
        for i in range(200):
            await client.chat(f"message {i:03d} " + "x" * 60)
        for follow in ((), ("--follow",)):
            code, first, err = await closed_after_one_line(
                "tail", "--relay", relay.url, "--room", "web", *follow,
                env={"SHIPDECK_TOKEN": TOKENS["bob"]},
            )  # fmt: skip
            assert b"message 000" in first
            _quiet(err)
            assert code == EXIT_PIPE, follow
    finally:
        for c in relay.clients:
            await c.close(flush=0)
        await relay.relay.shutdown()


async def test_download_into_a_closed_pipe(fleet, fleet_config, tmp_path) -> None:
    config = fleet_config()
    for h in fleet.hosts:
        (h.home / "app" / "shared" / "log").mkdir(parents=True)
        (h.home / "app" / "shared" / "log" / "app.log").write_text(f"log of {h.name}\n")
    # the fleet serves from this event loop: reading the first line without yielding
    # holds every host until the pipe is closed, so the per-host lines come after it
    code, first, err = await closed_after_one_line(
        "download", "-c", str(config.path), "shared/log/app.log", "--dest", str(tmp_path / "logs"),
        block=True,
    )  # fmt: skip
    assert first.startswith(b"download ")
    _quiet(err)
    assert code == EXIT_PIPE
    assert (tmp_path / "logs" / "host2" / "app.log").read_text() == "log of host2\n"


async def test_deploy_json_into_a_closed_pipe_stops_safely(fleet, fleet_config) -> None:
    """Nobody reads the deploy any more: it stops at a safe point like an abort, releases
    every lock, records why, and exits 141."""
    config = fleet_config()
    code, first, err = await closed_after_one_line("deploy", "-c", str(config.path), "--json")
    assert first.startswith(b'{"type": "plan"') or first.startswith(b'{"type":"plan"'), first
    _quiet(err)
    assert "stdout closed" in err
    assert code == EXIT_PIPE
    (row,) = History().list(1)
    assert row["status"] in ("stopped", "ok"), row
    for h in fleet.hosts:
        app = h.home / "app"
        assert not (app / ".shipdeck.lock").exists()
        # never half-done: current is absent or the complete new release
        assert current(app) in (None, *releases(app))


async def test_headless_deploy_into_a_closed_pipe(fleet, fleet_config) -> None:
    config = fleet_config()
    code, first, err = await closed_after_one_line(
        "deploy", "-c", str(config.path), "--headless", "--verbose"
    )
    assert first.startswith(b"deploy demo@main")
    _quiet(err)
    assert code == EXIT_PIPE
    for h in fleet.hosts:
        assert not (h.home / "app" / ".shipdeck.lock").exists()

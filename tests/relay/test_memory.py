"""The relay's memory is bounded in bytes: what waits for one connection, what a room
keeps for its snapshot, and rooms nobody is in (they leave memory and come back from
the store). The figures (RSS) are in bench/relay_memory.py; these tests check the
behaviour: close 4000, resume, eviction and restore."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from engine.events import LogLine, NodeStatus
from engine.plan import build_plan
from relay.protocol import CLOSE_SLOW, HARD_MAX_BYTES, WELCOME_MAX_BYTES
from relay.server import Limits
from relay.store import SQLiteStore
from tests.relay.conftest import TOKENS, InProcessRelay, start_relay

pytestmark = pytest.mark.timeout(60)

AUTH = {"Authorization": f"Bearer {TOKENS['carol']}"}


async def _stop(r: InProcessRelay) -> None:
    for c in r.clients:
        await c.close(flush=0)
    await r.relay.shutdown()


async def _until(pred: Any, timeout: float = 10.0) -> None:
    """Wait for a condition of the relay's state (checked every 20 ms)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


async def test_client_stuck_during_a_replay_is_closed_with_4000_and_resumes(
    tmp_path: Path,
) -> None:
    bound = 256 * 1024
    r = await start_relay(
        tmp_path,
        Limits(max_pending_bytes=bound, max_buffer_bytes=bound, rate=10**5, burst=10**5),
    )
    try:
        history = 1000  # 8 MB: more than the socket buffers hold
        for i in range(history):
            await r.relay.store.append("web", "alice", f"h{i}", "chat", {"text": "h" * 8000}, 0.0)
        sender, _ = await r.client("alice", snapshot=False)
        fast, fcol = await r.client("bob", snapshot=False)
        offsets: list[int] = []
        async with connect(r.url, additional_headers=AUTH, max_size=HARD_MAX_BYTES) as ws:
            ws.transport.pause_reading()  # asks for the whole history, reads nothing
            await ws.send(json.dumps({"type": "hello", "room": "web", "since": 0}))
            sent = 0
            while r.relay.dropped_slow == 0 and sent < 400:
                await sender.chat(f"live {sent} " + "l" * 7900)
                sent += 1
            assert r.relay.dropped_slow == 1, "the stuck client was never closed"
            # others were not held up: the fast client has every live message
            await fcol.wait(lambda c: len(c.of("chat")) == sent)
            ws.transport.resume_reading()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "welcome":
                        epoch = frame["epoch"]
                    elif isinstance(frame.get("offset"), int):
                        offsets.append(frame["offset"])
            assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_SLOW
        assert offsets == list(range(1, len(offsets) + 1))
        # resume from the last offset it got: exactly the rest, in order
        total = history + sent
        async with connect(r.url, additional_headers=AUTH, max_size=HARD_MAX_BYTES) as ws:
            resume = {"epoch": epoch, "offset": offsets[-1] if offsets else 0}
            await ws.send(json.dumps({"type": "hello", "room": "web", "resume": resume}))
            welcome = json.loads(await ws.recv())
            assert welcome["recovered"] is True and welcome["head"] == total
            while offsets[-1] < total:
                frame = json.loads(await ws.recv())
                if isinstance(frame.get("offset"), int):
                    offsets.append(frame["offset"])
        assert offsets == list(range(1, total + 1))
    finally:
        await _stop(r)


async def test_idle_room_leaves_memory_and_comes_back_from_the_store(tmp_path: Path) -> None:
    r = await start_relay(tmp_path, Limits(room_idle=0.3, state_flush=0.05))
    try:
        # a room whose holder went away without releasing: kept until the lease is stale
        holder, _ = await r.client("carol", room="held")
        await holder.acquire_lock("deploy api@main", ttl=1.5)
        await holder.close(flush=0)

        alice, _ = await r.client("alice")
        await alice.acquire_lock("deploy web@main", ttl=30)
        plan = build_plan("d1", [["web1", "web2"]], meta={"project": "web"})
        alice.publish_event(plan.to_event())
        alice.publish_event(NodeStatus("d1", key="release/wave-1/web1", status="ok", at=1.0))
        await alice.publish_event(LogLine("d1", key="release/wave-1/web1", text="restarted"))
        await alice.chat("web1 is done")
        before = r.relay.rooms["web"].snapshot().to_json()
        await alice.release_lock()
        await alice.close(flush=1)

        await _until(lambda: "web" not in r.relay.rooms)
        assert "held" in r.relay.rooms  # its lease is still live
        await _until(lambda: "held" not in r.relay.rooms)  # stale after 1.5 s, then idle
        stale = [rec.body["op"] for rec in await r.relay.store.read("held", 0, 10)]
        assert stale == ["acquired", "stale"]

        bob, col = await r.client("bob")
        snap = col.of("welcome")[0]["snapshot"]
        assert snap["deploy"] == before["deploy"]
        assert [c["text"] for c in snap["chat"]] == ["web1 is done"]
        tree = bob.snapshot.plan() if bob.snapshot else None
        assert tree is not None and tree["release/wave-1/web1"].status == "ok"
        assert "web" in r.relay.rooms
        # and the room goes on where it was
        await bob.chat("next")
        await col.wait(lambda c: c.of("chat"))
        assert col.of("chat")[0]["offset"] == snap["head"] + 1
    finally:
        await _stop(r)


async def test_room_caches_are_bounded_in_bytes(relay: InProcessRelay) -> None:
    alice, _ = await relay.client("alice")
    await alice.acquire_lock("deploy", ttl=30)
    await alice.publish_event(build_plan("d1", [["web1"]]).to_event())
    for i in range(60):
        alice.chat(f"{i} " + "€" * 7990)  # 24 KB each
        alice.publish_event(LogLine("d1", key="fetch", text=f"{i} " + "€" * 100_000))
    alice.flush()
    await alice.chat("last")
    room = relay.relay.rooms["web"]
    lim = relay.relay.limits
    assert room.chat_bytes <= lim.snapshot_chat_bytes and room.chat[-1].body["text"] == "last"
    assert room.deploy is not None
    logs = room.deploy.to_json()["logs"]
    assert sum(len(json.dumps(x, ensure_ascii=False).encode()) for x in logs) <= (
        lim.snapshot_log_bytes
    )
    assert logs[-1]["text"].startswith("59 ")
    _, col = await relay.client("bob")
    welcome = col.of("welcome")[0]
    assert len(json.dumps(welcome, ensure_ascii=False).encode()) <= WELCOME_MAX_BYTES


async def test_retention_removes_chats_from_the_snapshot_of_a_room_in_memory(
    tmp_path: Path,
) -> None:
    r = await start_relay(tmp_path, Limits(trim_interval=0.1, state_flush=0.05), max_count=2)
    try:
        alice, _ = await r.client("alice")  # keeps the room in memory
        for i in range(5):
            await alice.chat(f"m{i}")
        async with asyncio.timeout(10):  # the relay's retention ran
            while (await r.relay.store.info("web")).first != 4:
                await asyncio.sleep(0.02)
        _, col = await r.client("bob")
        welcome = col.of("welcome")[0]
        assert welcome["first"] == 4
        assert [c["offset"] for c in welcome["snapshot"]["chat"]] == [4, 5]
    finally:
        await _stop(r)


async def test_a_room_restored_after_a_deploy_started_while_it_was_away(tmp_path: Path) -> None:
    """A room that left memory with chat only is read back from where it left (not
    from its first message), and a deploy published since then is in the snapshot even
    when the relay died before it saved the deploy's state."""
    r = await start_relay(tmp_path, Limits(room_idle=0.2, state_flush=0.05))
    try:
        alice, _ = await r.client("alice")
        for i in range(3):
            await alice.chat(f"m{i}")
        await alice.close(flush=1)
        await _until(lambda: "web" not in r.relay.rooms)
        info = await r.relay.store.info("web")
        scanned = await r.relay.store.get_state("web", "scanned")
        assert scanned == {"epoch": info.epoch, "head": 3}
        deployer, _ = await r.client("carol")
        await deployer.acquire_lock("deploy", ttl=30)
        await deployer.publish_event(build_plan("d2", [["web1"]]).to_event())
        await deployer.chat("deploying")
    finally:
        await _stop(r)
    # as if killed before its state flush: the deploy's saved state is not there
    store = SQLiteStore(tmp_path / "relay.db")
    await store.put_state("web", "deploy", None)
    await store.close()
    r = await start_relay(tmp_path)  # a new relay on the same db reads it back
    try:
        bob, col = await r.client("bob")
        snap = col.of("welcome")[0]["snapshot"]
        assert snap["deploy"]["deploy_id"] == "d2"
        assert [c["text"] for c in snap["chat"]] == ["m0", "m1", "m2", "deploying"]
    finally:
        await _stop(r)

"""The server over real websockets on loopback: chat, presence, snapshots, resume,
dedupe, and `python -m relay`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from engine.events import DeployFinished, GateWaiting, LogLine, NodeStatus
from engine.plan import build_plan
from relay.protocol import Snapshot
from tests.relay.conftest import ROOT, TOKENS, InProcessRelay, RelayProcess

pytestmark = pytest.mark.timeout(30)


async def test_several_clients_chat_in_one_order(relay: InProcessRelay) -> None:
    clients = [await relay.client(op) for op in ("alice", "bob", "carol")]
    other, other_col = await relay.client("alice", room="other-room")
    for i in range(10):
        for client, _ in clients:
            client.chat(f"{client.operator} {i}")
    for _, col in clients:
        await col.wait(lambda c: len(c.of("chat")) == 30)
    orders = [[(f["offset"], f["sender"], f["text"]) for f in col.of("chat")] for _, col in clients]
    assert orders[0] == orders[1] == orders[2]
    assert [o for o, _, _ in orders[0]] == list(range(1, 31))
    # sender comes from the token, and each sender's messages keep their order
    for op in ("alice", "bob", "carol"):
        assert [t for _, s, t in orders[0] if s == op] == [f"{op} {i}" for i in range(10)]
    assert other_col.of("chat") == []  # nothing leaks into another room
    assert all(
        isinstance(f["time"], float) and f["room"] == "web" for f in clients[0][1].of("chat")
    )


async def test_presence_join_and_leave(relay: InProcessRelay) -> None:
    alice, acol = await relay.client("alice")
    bob, _ = await relay.client("bob")
    await acol.wait(
        lambda c: any(f["op"] == "join" and f["operator"] == "bob" for f in c.of("presence"))
    )
    assert [w["operator"] for w in alice.presence] == ["alice", "bob"]
    await bob.close()
    await acol.wait(
        lambda c: any(f["op"] == "leave" and f["operator"] == "bob" for f in c.of("presence"))
    )
    assert [w["operator"] for w in alice.presence] == ["alice"]


async def test_sender_claim_is_ignored_and_duplicates_dropped(relay: InProcessRelay) -> None:
    watcher, col = await relay.client("bob")
    async with connect(
        relay.url, additional_headers={"Authorization": f"Bearer {TOKENS['alice']}"}
    ) as ws:
        await ws.send(json.dumps({"type": "hello", "room": "web", "snapshot": False}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        frame = {"type": "chat", "id": "m-1", "text": "hi", "sender": "mallory", "offset": 99}
        await ws.send(json.dumps(frame))
        await ws.send(json.dumps(frame))
        acks = []
        while len(acks) < 2:
            got = json.loads(await ws.recv())
            if got["type"] == "ack":
                acks.append(got)
        assert [(a["offset"], a["duplicate"]) for a in acks] == [(1, False), (1, True)]
    await col.wait(lambda c: c.of("chat"))
    await watcher.chat("after")
    await col.wait(lambda c: len(c.of("chat")) == 2)
    chats = col.of("chat")
    assert [(f["sender"], f["offset"], f["text"]) for f in chats] == [
        ("alice", 1, "hi"),
        ("bob", 2, "after"),
    ]


async def test_late_joiner_gets_plan_node_states_lock_and_chat(relay: InProcessRelay) -> None:
    deployer, _ = await relay.client("alice")
    await deployer.acquire_lock("deploy web@main", ttl=30)
    plan = build_plan("d1", [["web1"], ["web2", "web3"]], gates=[1], meta={"project": "web"})
    deployer.publish_event(plan.to_event())
    deployer.publish_event(NodeStatus("d1", key="fetch", status="ok", at=1.0))
    deployer.publish_event(
        NodeStatus("d1", key="release/wave-1/web1/upload", status="running", at=2.0)
    )
    deployer.publish_event(
        LogLine("d1", key="release/wave-1/web1/upload", text="sent 3 MB", at=2.5)
    )
    deployer.publish_event(GateWaiting("d1", key="release/gate-1", at=3.0))
    await deployer.publish_event(NodeStatus("d1", key="release/gate-1", status="waiting", at=3.0))
    for i in range(60):
        deployer.chat(f"chat {i}")
    await deployer.chat("last words")

    late, col = await relay.client("bob")
    welcome = col.of("welcome")[0]
    snap = Snapshot.from_json(welcome["snapshot"])
    assert late.snapshot is not None and late.snapshot.head == snap.head == welcome["head"]
    tree = snap.plan()
    assert tree is not None and tree.deploy_id == "d1" and len(tree) == len(plan)
    assert tree["fetch"].status == "ok"
    assert tree["release/wave-1/web1/upload"].status == "running"
    assert tree["release/gate-1"].status == "waiting"
    assert (
        snap.deploy is not None
        and snap.deploy["gates"] == ["release/gate-1"]
        and snap.deploy["finished"] is None
    )
    assert snap.deploy["logs"][-1]["text"] == "sent 3 MB"
    assert (
        snap.lock is not None
        and snap.lock["operator"] == "alice"
        and snap.lock["reason"] == "deploy web@main"
    )
    assert len(snap.chat) == 50 and snap.chat[-1]["text"] == "last words"
    assert {w["operator"] for w in snap.presence} == {"alice", "bob"}

    await deployer.publish_event(DeployFinished("d1", status="ok", summary={"exit_code": 0}))
    later, col2 = await relay.client("carol")
    assert later.snapshot is not None and later.snapshot.deploy is not None
    assert later.snapshot.deploy["finished"]["status"] == "ok"


async def test_reconnect_replays_exactly_the_gap(relay: InProcessRelay) -> None:
    sender, _ = await relay.client("alice")
    reader, col = await relay.client("bob")
    for i in range(5):
        sender.chat(f"before {i}")
    await col.wait(lambda c: len(c.of("chat")) == 5)
    # Cut the reader's TCP connection under it (no close handshake).
    assert reader._ws is not None
    reader._ws.transport.abort()
    await col.wait(lambda c: any(f.get("state") == "reconnecting" for f in c.of("status")))
    for i in range(20):
        sender.chat(f"gap {i}")
    await col.wait(lambda c: len(c.of("chat")) == 25)
    welcomes = col.of("welcome")
    assert len(welcomes) == 2 and welcomes[1]["recovered"] is True and "snapshot" not in welcomes[1]
    assert col.chats() == [f"before {i}" for i in range(5)] + [f"gap {i}" for i in range(20)]
    assert [f["offset"] for f in col.of("chat")] == list(range(1, 26))


async def test_resume_with_unknown_epoch_gets_snapshot_not_a_gap(relay: InProcessRelay) -> None:
    sender, _ = await relay.client("alice")
    await sender.chat("one")
    reader, col = await relay.client("bob")
    reader.epoch = "not-this-epoch"
    reader.offset = 0
    assert reader._ws is not None
    reader._ws.transport.abort()
    await col.wait(lambda c: len(c.of("welcome")) == 2)
    second = col.of("welcome")[1]
    assert second["recovered"] is False and second["snapshot"]["chat"][0]["text"] == "one"
    assert reader.offset == second["head"] == 1


async def test_outbox_survives_a_dropped_connection(relay: InProcessRelay) -> None:
    sender, scol = await relay.client("alice")
    reader, col = await relay.client("bob")
    assert sender._ws is not None
    sender._ws.transport.abort()
    futures = [sender.chat(f"queued {i}") for i in range(10)]  # sent or queued while down
    acks = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert sorted(a["offset"] for a in acks) == list(range(1, 11))
    await col.wait(lambda c: len(c.of("chat")) == 10)
    assert col.chats() == [f"queued {i}" for i in range(10)]


async def test_messages_iterator(relay: InProcessRelay) -> None:
    from relay.client import RelayClient

    client = RelayClient(relay.url, "web", TOKENS["alice"])
    await client.start()
    await client.chat("via iterator")
    seen = []
    async for frame in client.messages():
        seen.append(frame["type"])
        if frame["type"] == "chat":
            assert frame["text"] == "via iterator"
            break
    assert seen[:3] == ["status", "status", "welcome"]
    await client.close()


async def test_tail_style_history_from_offset(relay: InProcessRelay) -> None:
    sender, _ = await relay.client("alice")
    for i in range(7):
        sender.chat(f"m{i}")
    await sender.chat("m7")
    reader, col = await relay.client("bob", since=3, snapshot=False)
    await col.wait(lambda c: len(c.of("chat")) == 5)
    assert [f["offset"] for f in col.of("chat")] == [4, 5, 6, 7, 8]
    assert "snapshot" not in col.of("welcome")[0]


def test_python_m_relay_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = RelayProcess(tmp_path)
    url = proc.start()
    try:
        assert url.startswith("ws://127.0.0.1:") and (tmp_path / "relay.db").exists()
    finally:
        assert proc.terminate() == 0


def test_python_m_relay_refuses_a_bad_tokens_file(tmp_path: Path) -> None:
    bad = tmp_path / "tokens.toml"
    bad.write_text("[operators\n")
    done = subprocess.run(
        [sys.executable, "-m", "relay", "--port", "0", "--tokens", str(bad)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "tokens.toml" in done.stderr

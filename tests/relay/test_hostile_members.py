"""Members of a room who try to spoil it for the others: events from a connection
that does not hold the lease, log lines and plans too big for a welcome frame.

Each test reproduces what a hostile member could once do to a real relay: forge a
plan that became every late joiner's snapshot, or post three 1 MB log lines after
which every join failed with close 1009 (before and after a relay restart)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from engine.events import LogLine, NodeStatus, PlanReady
from engine.plan import build_plan
from relay.client import RelayClient
from relay.protocol import HARD_MAX_BYTES, WELCOME_MAX_BYTES
from tests.relay.conftest import TOKENS, InProcessRelay, RelayProcess, start_relay

pytestmark = pytest.mark.timeout(60)


class Raw:
    """A bare websocket client speaking the protocol's JSON, with the frame limit of
    the shipped client (2 MiB): what a third-party client would see."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sizes: list[int] = []

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        text = await self.ws.recv()
        self.sizes.append(len(text.encode()))
        return json.loads(text)

    async def until(self, pred: Any) -> dict[str, Any]:
        while True:
            frame = await self.recv()
            if pred(frame):
                return frame


def _auth(op: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[op]}"}


async def _stop(r: InProcessRelay) -> None:
    for c in r.clients:
        await c.close(flush=0)
    await r.relay.shutdown()


async def test_events_from_a_connection_without_the_lease_are_refused_and_not_stored(
    relay: InProcessRelay,
) -> None:
    forged = build_plan("forged", [["web1"]], meta={"operator": "alice", "ref": "evil"})
    async with connect(relay.url, additional_headers=_auth("bob")) as ws:
        bob = Raw(ws)
        await bob.send({"type": "hello", "room": "web", "snapshot": False})
        assert (await bob.recv())["type"] == "welcome"
        # nobody holds the lease: still refused
        await bob.send({"type": "event", "id": "f1", "events": [forged.to_event().to_json()]})
        reply = await bob.until(lambda f: f.get("id") == "f1")
        assert reply["type"] == "error" and reply["code"] == "not_lock_holder", reply
        # alice takes the lease: bob (another connection) still cannot publish
        alice, _ = await relay.client("alice")
        await alice.acquire_lock("deploy web@main", ttl=30)
        await bob.send({"type": "event", "id": "f2", "events": [forged.to_event().to_json()]})
        reply = await bob.until(lambda f: f.get("id") == "f2")
        assert reply["type"] == "error" and reply["code"] == "not_lock_holder", reply
        # a control record's routing is written by the relay, never by the client
        await bob.send({"type": "control", "id": "c1", "action": "abort", "to": "bob"})
        ctl = await bob.until(lambda f: f.get("type") == "control")
        assert ctl["to"] == "alice" and ctl["sender"] == "bob" and ctl["to_client"] == alice.client
        assert (await bob.until(lambda f: f.get("id") == "c1"))["type"] == "ack"
    stored = await relay.relay.store.read("web", 0, 100)
    assert [r.type for r in stored] == ["lock", "control"]  # no event stored
    late, col = await relay.client("carol")
    assert col.of("welcome")[0]["snapshot"]["deploy"] is None
    # the holder itself publishes fine
    plan = build_plan("d1", [["web1"]], meta={"operator": "alice"})
    await alice.publish_event(plan.to_event())
    await col.wait(lambda c: c.of("event"))


async def test_three_one_megabyte_log_lines_do_not_stop_anyone_joining(tmp_path: Path) -> None:
    r = await start_relay(tmp_path)
    plan = build_plan("d1", [["web1"]], meta={"project": "web"})
    key = "release/wave-1/web1/before"
    try:
        alice, _ = await r.client("alice")
        await alice.acquire_lock("deploy web@main", ttl=60)
        await alice.publish_event(plan.to_event())
        for i in range(3):
            await alice.publish_event(LogLine("d1", key=key, text=f"{i}" + "x" * 1_000_000))
        await alice.publish_event(LogLine("d1", key=key, text="the last line"))
        await _join_and_check(r.url)
    finally:
        await _stop(r)
    # the same after a restart: the stored snapshot state is bounded too
    r = await start_relay(tmp_path)
    try:
        await _join_and_check(r.url)
        # and a replay of the history itself (frames up to the 2 MiB limit) works
        async with connect(r.url, additional_headers=_auth("carol"), max_size=HARD_MAX_BYTES) as ws:
            raw = Raw(ws)
            await raw.send({"type": "hello", "room": "web", "since": 0, "snapshot": False})
            welcome = await raw.recv()
            events = [await raw.recv() for _ in range(welcome["head"] - welcome["replay_from"])]
            texts = [
                e["text"]
                for f in events
                if f["type"] == "event"
                for e in f["events"]
                if e["type"] == "log"
            ]
            assert [len(t) for t in texts[:3]] == [1_000_001] * 3
    finally:
        await _stop(r)


async def _join_and_check(url: str) -> None:
    async with connect(url, additional_headers=_auth("bob"), max_size=HARD_MAX_BYTES) as ws:
        raw = Raw(ws)
        await raw.send({"type": "hello", "room": "web"})
        welcome = await raw.recv()
        assert welcome["type"] == "welcome"
        assert raw.sizes[0] <= WELCOME_MAX_BYTES
        logs = welcome["snapshot"]["deploy"]["logs"]
        assert logs[-1]["text"] == "the last line"
        cut = [line for line in logs if line["text"].startswith(("0", "1", "2"))]
        assert cut, "the long lines are in the snapshot, cut"
        for line in cut:
            assert len(line["text"].encode()) < 10_000 and line.get("cut", 0) > 990_000


async def test_a_plan_of_twelve_thousand_nodes_reaches_a_late_joiner_in_parts(
    relay: InProcessRelay,
) -> None:
    hosts = [f"host-{i:05d}.example.internal" for i in range(12_000)]
    nodes = [{"key": "release", "label": "release", "kind": "stage"}]
    nodes += [{"key": f"release/{h}", "label": h, "kind": "host"} for h in hosts]
    plan = PlanReady("big", nodes=nodes, meta={"project": "web"})
    alice, _ = await relay.client("alice")
    await alice.acquire_lock("deploy web@main", ttl=60)
    await alice.publish_event(plan)
    for h in hosts:  # every node gets a long detail: the snapshot is far over a frame
        alice.publish_event(NodeStatus("big", key=f"release/{h}", status="ok", detail="d" * 300))
    alice.flush()
    await alice.chat("done")
    # a bare client: the welcome and every part fit the frame limit
    async with connect(relay.url, additional_headers=_auth("bob"), max_size=HARD_MAX_BYTES) as ws:
        raw = Raw(ws)
        await raw.send({"type": "hello", "room": "web"})
        welcome = await raw.recv()
        deploy = welcome["snapshot"]["deploy"]
        got = list(deploy["plan"]["nodes"])
        assert deploy["parts"] >= 2
        for i in range(deploy["parts"]):
            part = await raw.recv()
            assert part["type"] == "snapshot_part" and part["part"] == i + 1
            got += part["nodes"]
        assert max(raw.sizes) <= WELCOME_MAX_BYTES
        assert [n["key"] for n in got] == [n["key"] for n in nodes]
        assert all(n.get("status") == "ok" for n in got[1:])
    # the shipped client puts the parts together before it hands over the welcome
    late, col = await relay.client("carol")
    tree = late.snapshot.plan() if late.snapshot else None
    assert tree is not None and len(tree) == len(nodes)
    assert tree["release/" + hosts[-1]].status == "ok"
    assert "parts" not in col.of("welcome")[0]["snapshot"]["deploy"]


async def test_big_log_lines_still_let_everyone_join_after_a_sigkill(
    relay_process: RelayProcess,
) -> None:
    """The relay process killed right after three 1 MB lines (its saved snapshot state
    may predate them): the restarted relay rebuilds the snapshot, bounded too."""
    url = await asyncio.to_thread(relay_process.start)
    alice = RelayClient(url, "web", TOKENS["alice"], reconnect=False)
    await alice.start()
    try:
        await alice.acquire_lock("deploy web@main", ttl=60)
        await alice.publish_event(build_plan("d1", [["web1"]]).to_event())
        for i in range(3):
            await alice.publish_event(LogLine("d1", key="fetch", text=f"{i}" + "x" * 1_000_000))
        await alice.publish_event(LogLine("d1", key="fetch", text="the last line"))
        await asyncio.to_thread(relay_process.kill)
    finally:
        await alice.close(flush=0)
    url = await asyncio.to_thread(relay_process.start)
    await _join_and_check(url)

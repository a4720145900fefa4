"""A room's own logic, without a network: the lease and its queue, where a joiner's
replay starts, the kept chat and deploy snapshot, and a room read back from its store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.events import DeployFinished, GateWaiting, LogLine, MaintenanceChanged, NodeStatus
from engine.plan import build_plan
from relay.limits import Limits
from relay.protocol import SNAPSHOT_LOG_CHARS
from relay.rooms import (
    Lease,
    Peer,
    Room,
    Waiter,
    client_handle,
    deploy_state,
    load_room,
    resume_point,
    session_hash,
)
from relay.store import Record, RoomInfo, SQLiteStore

pytestmark = pytest.mark.timeout(30)


def _peer(operator: str, session: str = "s") -> Peer:
    peer = Peer(None, operator)  # type: ignore[arg-type]
    peer.session = session_hash(session)
    peer.handle = client_handle(operator, peer.session)
    return peer


def _chat(offset: int, text: str) -> Record:
    return Record("web", offset, "alice", None, "chat", 1.0, {"text": text})


def _events(offset: int, *events: Any) -> Record:
    return Record(
        "web", offset, "alice", None, "event", 1.0, {"events": [e.to_json() for e in events]}
    )


def test_a_lease_is_held_by_its_session_not_its_operator() -> None:
    alice = _peer("alice", "one")
    lease = Lease("alice", alice.session, "deploy", 30.0, 1.0, 31.0)
    assert lease.held_by(alice)
    assert not lease.held_by(_peer("alice", "two"))  # same operator, another terminal
    assert not lease.held_by(_peer("bob", "one"))
    assert lease.client == alice.handle
    assert "session" not in lease.public() and Lease.from_state(lease.state()) == lease


def test_the_queue_keeps_one_request_per_peer_in_order() -> None:
    room = Room("web", "e1", 0, Limits())
    alice, bob = _peer("alice"), _peer("bob")
    room.queue(Waiter(alice, "a1", "first", 30.0))
    room.queue(Waiter(bob, "b1", "second", 30.0))
    room.queue(Waiter(alice, "a2", "again", 30.0))
    assert [w.request_id for w in room.waiters] == ["b1", "a2"]
    room.unqueue(bob)
    assert [w.request_id for w in room.waiters] == ["a2"]
    assert room.lease_free()
    room.lock = Lease("alice", alice.session, "", 30.0, 1.0, 31.0)
    assert not room.lease_free() and room.holds(alice) and not room.holds(bob)
    room.lock.stale = True
    assert room.lease_free()


@pytest.mark.parametrize(
    ("hello", "expected"),
    [
        ({}, (None, 10, None, False)),  # nothing asked: live from the head
        ({"resume": {"epoch": "e1", "offset": 7}}, (7, 10, True, False)),
        ({"resume": {"epoch": "e0", "offset": 7}}, (None, 10, False, False)),  # log was reset
        ({"resume": {"epoch": "e1", "offset": 2}}, (None, 10, False, False)),  # trimmed away
        ({"since": 0}, (3, 10, None, True)),  # history starts at 4: says it was cut
        ({"since": 5}, (5, 10, None, False)),
        ({"since": 50}, (10, 10, None, False)),
    ],
)
def test_where_a_joiners_replay_starts(hello: dict[str, Any], expected: tuple[Any, ...]) -> None:
    info = RoomInfo(epoch="e1", head=10, first=4)
    assert resume_point(hello, "e1", info, 10) == expected


def test_kept_chat_is_bounded_by_count_and_bytes() -> None:
    room = Room("web", "e1", 0, Limits(snapshot_chat=3, snapshot_chat_bytes=10_000))
    for i in range(1, 6):
        room.observe(_chat(i, f"line {i}"), None)
    assert [r.body["text"] for r in room.chat] == ["line 3", "line 4", "line 5"]
    room.observe(_chat(6, "x" * 20_000), None)  # one huge chat: kept alone
    assert [r.offset for r in room.chat] == [6]
    room.forget_chat_before(7)
    assert not room.chat and room.chat_bytes == 0


def test_the_deploy_snapshot_follows_events_and_cuts_long_lines() -> None:
    room = Room("web", "e1", 0, Limits())
    plan = build_plan("d1", [["web1"]])
    room.observe(_events(1, plan.to_event()), None)
    room.observe(
        _events(
            2,
            NodeStatus("d1", key="fetch", status="ok"),
            LogLine("d1", key="fetch", text="x" * 10_000),
        ),
        None,
    )
    assert room.deploy is not None and room.dirty and room.applied == 2
    snap = room.snapshot().to_json()["deploy"]
    assert "applied" not in snap
    nodes = {n["key"]: n for n in snap["plan"]["nodes"]}
    assert nodes["fetch"]["status"] == "ok"
    (line,) = snap["logs"]
    assert (
        len(line["text"]) < SNAPSHOT_LOG_CHARS + 20 and line["cut"] >= 10_000 - SNAPSHOT_LOG_CHARS
    )
    room.observe(_events(3, NodeStatus("other", key="fetch", status="failed")), None)
    assert {n["key"]: n for n in room.snapshot().to_json()["deploy"]["plan"]["nodes"]}["fetch"][
        "status"
    ] == "ok"  # another deploy's event changes nothing
    room.observe(_events(4, DeployFinished("d1", status="ok")), None)
    assert room.snapshot().to_json()["deploy"]["finished"]["status"] == "ok"


def test_maintenance_set_before_any_deploy_is_in_the_snapshot_and_stays() -> None:
    room = Room("web", "e1", 0, Limits())
    on = MaintenanceChanged("m1", on=True, by="alice", message="db upgrade", at=1.0)
    room.observe(_events(1, on), None)
    snap = room.snapshot().to_json()["deploy"]
    assert snap["maintenance"] == on.to_json() and snap["plan"]["nodes"] == []
    room.observe(_events(2, build_plan("d1", [["web1"]]).to_event()), None)
    assert room.snapshot().to_json()["deploy"]["maintenance"] == on.to_json()
    again = Room("web", "e1", 2, Limits())
    again.restore_deploy(room.saved_deploy() or {})
    assert again.deploy is not None and again.deploy.maintenance_on == on


def test_a_gate_waits_only_while_its_node_waits() -> None:
    plan = build_plan("d1", [["web1"], ["web2"]], gates=[1])
    (gate,) = [n.key for n in plan if n.kind == "gate"]
    state = deploy_state(Limits())
    state.apply(plan.to_event())
    for event in (GateWaiting("d1", key=gate), GateWaiting("d1", key="no/such/node")):
        state.apply(event, event.to_json())
    assert state.to_json()["gates"] == [gate]
    done = NodeStatus("d1", key=gate, status="ok")
    state.apply(done, done.to_json())
    assert state.to_json()["gates"] == []


def test_the_saved_deploy_state_keeps_how_far_it_is_built() -> None:
    room = Room("web", "e1", 0, Limits())
    room.observe(_events(3, build_plan("d1", [["web1"]]).to_event()), None)
    room.observe(_events(5, NodeStatus("d1", key="fetch", status="running")), None)
    saved = room.saved_deploy()
    assert saved is not None and saved["applied"] == 5
    again = Room("web", "e1", 5, Limits())
    again.restore_deploy(saved)
    assert again.applied == 5
    assert again.snapshot().to_json()["deploy"] == room.snapshot().to_json()["deploy"]
    assert "applied" not in room.snapshot().to_json()["deploy"]  # not on the wire


def test_a_malformed_event_is_skipped_not_fatal() -> None:
    room = Room("web", "e1", 0, Limits())
    plan = build_plan("d1", [["web1"]]).to_event().to_json()
    room.observe(
        Record("web", 1, "alice", None, "event", 1.0, {"events": [{"type": "nope"}, plan]}), None
    )
    assert room.deploy is not None and room.deploy.plan.deploy_id == "d1"


async def test_a_room_read_back_from_its_store_is_the_room_it_was(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    limits = Limits()
    live = Room("web", (await store.open_room("web")).epoch, 0, limits)
    plan = build_plan("d1", [["web1"]])
    messages = [
        ("chat", {"text": "hello"}),
        ("event", {"events": [plan.to_event().to_json()]}),
        ("event", {"events": [NodeStatus("d1", key="fetch", status="ok").to_json()]}),
        ("chat", {"text": "fetched"}),
    ]
    for i, (kind, body) in enumerate(messages):
        rec, _ = await store.append("web", "alice", f"m{i}", kind, body, 1.0)
        live.head = rec.offset
        live.observe(rec, None)
    await store.put_state("web", "deploy", live.saved_deploy())
    # one more event after the saved state: read back from the log
    rec, _ = await store.append(
        "web",
        "alice",
        "m9",
        "event",
        {"events": [NodeStatus("d1", key="build", status="ok").to_json()]},
        1.0,
    )
    live.head = rec.offset
    live.observe(rec, None)
    again = await load_room(store, "web", limits)
    assert again.snapshot().to_json() == live.snapshot().to_json()
    assert again.epoch == live.epoch and again.head == 5
    await store.close()

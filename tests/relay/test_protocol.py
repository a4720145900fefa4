"""The wire protocol's validation: every bad frame is a ProtocolError naming the
problem, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.events import NodeStatus, PlanReady
from relay.protocol import MAX_MESSAGE_BYTES, ProtocolError, Snapshot, parse_client_frame

pytestmark = pytest.mark.timeout(60)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "chat", "event", "lock", "control", "x", ""])},
    optional={
        "id": st.one_of(st.text(max_size=70), st.integers()),
        "v": st.one_of(st.just(1), st.integers(), st.text(max_size=3)),
        "room": st.text(max_size=70),
        "text": json_values,
        "events": json_values,
        "op": st.sampled_from(["acquire", "release", "heartbeat", "steal"]) | st.text(max_size=5),
        "ttl": json_values,
        "action": st.text(max_size=8),
        "resume": json_values,
        "since": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        json_values.map(json.dumps),
        frame_like.map(json.dumps),
    )
)
def test_any_input_is_accepted_or_a_protocol_error(text: str | bytes) -> None:
    try:
        frame = parse_client_frame(text)
    except ProtocolError as exc:
        assert exc.code and exc.message
    else:
        assert frame["type"] in ("hello", "chat", "event", "lock", "control")


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        ("{", "bad_json", "not JSON"),
        ("[1]", "not_object", "object"),
        ('{"type":"nope"}', "unknown_type", "'nope'"),
        ('{"type":"chat","id":"a1"}', "bad_field", "'text'"),
        ('{"type":"chat","id":"a1","text":5}', "bad_field", "string"),
        ('{"type":"chat","text":"hi"}', "bad_field", "'id'"),
        ('{"type":"chat","id":"a1","text":"hi","v":2}', "bad_version", "version 2"),
        ('{"type":"lock","id":"a1","op":"acquire","ttl":0}', "bad_field", "ttl"),
        ('{"type":"control","id":"a1","action":"reboot"}', "bad_field", "abort, approve"),
        ('{"type":"event","id":"a1","events":[{"type":"status"}]}', "bad_event", "deploy_id"),
        (
            '{"type":"event","id":"a1","events":[{"type":"plan","deploy_id":"d","nodes":"x"}]}',
            "bad_event",
            "nodes",
        ),
        (
            '{"type":"event","id":"a1","events":[{"type":"plan","deploy_id":"d","nodes":[{"key":"a","done":"x"}]}]}',
            "bad_event",
            "done",
        ),
        ('{"type":"hello","room":"bad room!"}', "bad_field", "room"),
        (
            '{"type":"event","id":"a1","events":[{"type":"maintenance","deploy_id":"m","on":1}]}',
            "bad_event",
            "'on'",
        ),
    ],
)
def test_errors_name_the_problem(text: str, code: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(text)
    assert info.value.code == code
    assert words in info.value.message


def test_too_large_chat_but_large_event_allowed() -> None:
    big = "x" * (MAX_MESSAGE_BYTES + 10)
    with pytest.raises(ProtocolError) as info:
        parse_client_frame(json.dumps({"type": "chat", "id": "a", "text": big}))
    assert info.value.code == "too_large" and info.value.msg_id == "a"
    plan = PlanReady(
        "d1", nodes=[{"key": f"n{i}", "label": "x" * 100, "kind": "step"} for i in range(1000)]
    )
    frame = parse_client_frame(json.dumps({"type": "event", "id": "b", "events": [plan.to_json()]}))
    assert len(frame["decoded"]) == 1


def test_snapshot_plan_roundtrip() -> None:
    from engine.plan import build_plan
    from engine.state import RunState

    plan = build_plan("d1", [["web1"]])
    RunState(plan).apply(NodeStatus("d1", key="fetch", status="ok", at=1.0))
    snap = Snapshot.from_json(
        {"head": 3, "deploy": {"deploy_id": "d1", "plan": plan.snapshot().to_json()}}
    )
    again = snap.plan()
    assert again is not None and again["fetch"].status == "ok" and len(again) == len(plan)

"""docs/event-schema.json: generated from engine/events.py, committed up to date, and
it accepts what the engine emits and refuses what the relay would refuse."""

from __future__ import annotations

import json

import jsonschema
import pytest

from engine.events import (
    EVENT_TYPES,
    Control,
    DeployFinished,
    DeployMeta,
    GateWaiting,
    LogLine,
    MaintenanceChanged,
    NodeStatus,
    Progress,
)
from engine.plan import build_plan
from engine.state import RunState
from relay import schema


def test_committed_schema_is_up_to_date() -> None:
    assert schema.SCHEMA_PATH.read_text() == schema.render(), (
        "docs/event-schema.json is out of date: run python -m relay.schema"
    )
    assert schema.main(["--check"]) == 0


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    doc = json.loads(schema.SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def test_every_event_type_is_described(validator: jsonschema.Draft202012Validator) -> None:
    defs = validator.schema["$defs"]
    assert set(EVENT_TYPES) <= set(defs)
    for kind in EVENT_TYPES:
        assert defs[kind]["description"] and defs[kind]["properties"]["type"] == {"const": kind}
    assert defs["node"]["properties"]["key"]["maxLength"] == 512
    assert "waiting" in defs["node_status"]["enum"]


def test_engine_events_validate(validator: jsonschema.Draft202012Validator) -> None:
    plan = build_plan("d1", [["web1"], ["web2"]], gates=[1], meta={"project": "web"})
    RunState(plan).apply(NodeStatus("d1", key="fetch", status="ok", at=1.0, detail="abc123"))
    events = [
        plan.to_event(),
        DeployMeta("d1", meta={"sha": "abc"}),
        NodeStatus("d1", key="release/gate-1", status="waiting", at=2.0),
        GateWaiting("d1", key="release/gate-1", at=2.0),
        Control("d1", action="approve", by="bob", key="release/gate-1", at=3.0),
        LogLine("d1", key="fetch", stream="stderr", text="warning", at=1.0),
        Progress("d1", key="release/wave-1/web1/upload", done=5, total=10),
        DeployFinished("d1", status="ok", summary={"exit_code": 0, "failed": {}}, at=4.0),
        MaintenanceChanged("m1", on=True, by="alice", message="db", at=5.0, where="web: 3/3"),
    ]
    for event in events:
        validator.validate(event.to_json())


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "status", "deploy_id": "d", "key": "k", "status": "exploded"},
        {"type": "status", "key": "k", "status": "ok"},
        {"type": "plan", "deploy_id": "d", "nodes": [{"label": "no key"}]},
        {"type": "log", "deploy_id": "d", "key": "k", "stream": "tty", "text": "x"},
        {"type": "nope", "deploy_id": "d"},
        {"type": "maintenance", "deploy_id": "m", "on": "yes"},
    ],
)
def test_invalid_events_are_refused(validator: jsonschema.Draft202012Validator, bad: dict) -> None:
    assert not validator.is_valid(bad)

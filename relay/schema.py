"""The engine event schema as JSON Schema, generated from ``engine/events.py``.

The relay carries engine events in ``event`` frames (``events``: a list of them);
``docs/event-schema.json`` is their published contract, written by this module from
the event dataclasses themselves, so the document cannot drift from the code::

    python -m relay.schema            # rewrite docs/event-schema.json
    python -m relay.schema --check    # exit 1 if the committed file is out of date

Field types come from the dataclass annotations; what the annotations cannot say
(the shape of a plan's nodes, the statuses, what a gate is) is written below, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from engine.events import (
    EVENT_TYPES,
    OUTGOING_STATES,
    SCHEMA_VERSION,
    STATUSES,
    Event,
    PlanReady,
)
from engine.plan import Node
from relay.protocol import MAX_KEY_CHARS, MAX_PLAN_NODES

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "event-schema.json"
SCHEMA_ID = "https://shipdeck.dev/schemas/event-v1.json"

_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "float": {"type": "number"},
    "int": {"type": "integer"},
    "bool": {"type": "boolean"},
    "float | None": {"type": ["number", "null"]},
    "list[dict[str, Any]]": {"type": "array", "items": {"type": "object"}},
    "dict[str, Any]": {"type": "object"},
}

#: What the annotations do not say, per ``event type.field``.
_FIELD_DOCS: dict[str, dict[str, Any]] = {
    "*.deploy_id": {
        "description": "The deploy this event belongs to. A room's snapshot follows the"
        " deploy of the last plan event; events of another deploy_id do not change it."
    },
    "*.key": {
        "description": "A node of the plan, by key: a path whose prefix is the parent"
        " (release/wave-1/web1/upload).",
        "maxLength": MAX_KEY_CHARS,
    },
    "*.at": {"description": "When it happened: seconds since the epoch (the engine's clock)."},
    "plan.nodes": {
        "description": "The stage tree, parents before children. In a room's snapshot each"
        " node also carries its current status.",
        "items": {"$ref": "#/$defs/node"},
        "maxItems": MAX_PLAN_NODES,
    },
    "plan.meta": {
        "description": "Facts about the deploy: project, ref, sha, release_id, operator,"
        " kind (deploy | rollback | exec), an exec's command and cwd, and others a newer"
        " engine may add."
    },
    "meta.meta": {"description": "Keys to merge into the plan's meta (the resolved sha, ...)."},
    "status.status": {"$ref": "#/$defs/node_status"},
    "status.detail": {
        "description": "Why, in a few words (a failure's reason, 'rolled back to ...');"
        " empty keeps the node's previous detail unless the node is done."
    },
    "log.stream": {"enum": ["stdout", "stderr", "info"]},
    "log.text": {
        "description": "One line, without its newline. In a snapshot, cut to 2000 code"
        " points with the number of cut code points in 'cut'."
    },
    "progress.done": {"description": "Units done so far (bytes for an upload)."},
    "progress.total": {"description": "Units in all; 0 when unknown."},
    "transfer.key": {"description": "The host's upload step.", "maxLength": MAX_KEY_CHARS},
    "transfer.mode": {"enum": ["full", "resume", "delta", "peer"]},
    "transfer.sent": {"description": "Bytes shipdeck sent to the host (every attempt)."},
    "transfer.total": {"description": "The artifact's bytes."},
    "transfer.seconds": {"description": "How long getting the artifact there took."},
    "transfer.source": {"description": "The host of its site it copied from (mode peer)."},
    "transfer.jump": {"description": "Whether the bytes sent crossed the jump host's link."},
    "control.action": {"enum": ["abort", "approve"]},
    "control.by": {"description": "The operator who asked (the relay's sender of the request)."},
    "control.key": {"description": "The gate approved (approve only; empty: every waiting gate)."},
    "outgoing.key": {
        "description": "What the card is about: 'release' (every selected host, before"
        " the release starts) or a gate (the hosts its approval lets go).",
        "maxLength": MAX_KEY_CHARS,
    },
    "outgoing.changes": {"$ref": "#/$defs/changes"},
    "finished.status": {"enum": ["ok", "failed", "stopped"]},
    "finished.summary": {
        "description": "Counts per status, 'failed' ({host: reason}) and 'exit_code'"
        " (0 ok, 1 some hosts failed within the budget, 3 stopped or refused)."
    },
}

_EVENT_DOCS: dict[str, str] = {
    "plan": "The stage tree, sent before anything runs (and again by a deploying client"
    " that joins a room late). A new plan event starts a new deploy in the room's snapshot.",
    "meta": "Facts learnt while running, merged into the plan's meta.",
    "status": "A node changed status. A gate node moves to 'waiting' when it waits for an"
    " approval and leaves it (ok, or cancelled on abort) when approved.",
    "log": "One line of output of a node (a host's step, a hook).",
    "progress": "Progress of a node (an upload's bytes).",
    "transfer": "How the artifact reached one host (full, resume, delta or from a peer),"
    " the bytes sent and whether they crossed the jump host's link; the run's summary"
    " sums them under 'transfer'.",
    "gate": "A gate is waiting for an operator's approval: a control frame with action"
    " 'approve' (and this key) sent to the room reaches the lease holder, whose engine"
    " approves it and then emits a control event and the gate's status. Under the"
    " four-eyes rule (the plan's meta 'approvers': {count, distinct}) the gate keeps"
    " waiting until 'count' distinct operators other than the deployer approved; the"
    " relay refuses the deployer's own approval and a repeated one ('not_approver').",
    "control": "An operator's abort or approve that the engine acted on (every approval"
    " counted is one, with who and when), or a freeze"
    " window overridden as the run started (action 'freeze_override', key: the window,"
    " reason: why).",
    "outgoing": "What goes out, against what each host runs now: the commits between"
    " (grouped when hosts run different commits), the files changed with lines added and"
    " removed, and 'noop' when every host already runs the target. Sent before the"
    " release starts and at each gate; a newer one for the same key replaces it.",
    "finished": "The deploy is over; nothing follows for this deploy_id.",
}


def _field_schema(event_type: str, f: dataclasses.Field[Any]) -> dict[str, Any]:
    out = dict(_TYPES.get(str(f.type), {}))
    for key in (f"*.{f.name}", f"{event_type}.{f.name}"):
        out.update(_FIELD_DOCS.get(key, {}))
    if "$ref" in out:
        return {"$ref": out["$ref"]}
    return out


def _event_schema(cls: type[Event]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "type": {"const": cls.type},
        "v": {"const": SCHEMA_VERSION, "description": "Event schema version."},
    }
    for f in dataclasses.fields(cls):
        props[f.name] = _field_schema(cls.type, f)
    doc = _EVENT_DOCS.get(cls.type) or inspect.cleandoc(cls.__doc__ or "")
    return {
        "title": cls.__name__,
        "description": doc,
        "type": "object",
        "properties": props,
        "required": ["type", "deploy_id"],
        "additionalProperties": True,
    }


def _node_schema() -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in dataclasses.fields(Node):
        props[f.name] = dict(_TYPES.get(str(f.type), {}))
    props["key"].update(minLength=1, maxLength=MAX_KEY_CHARS)
    props["key"]["description"] = "Unique in the plan; its prefix up to the last '/' is the parent."
    props["kind"].update(
        description="stage | wave | gate | host | step (others may be added)",
    )
    props["status"] = {"$ref": "#/$defs/node_status"}
    props["started"]["description"] = (
        "When it started (seconds since the epoch); absent if not yet."
    )
    props["ended"]["description"] = "When it ended; absent if not yet."
    props["done"]["description"] = "Progress done (present only with total)."
    props["total"]["description"] = "Progress total; absent when there is none."
    props["detail"]["description"] = (
        "The last status detail (cut to 1000 code points in a snapshot)."
    )
    return {
        "title": "Node",
        "description": "One node of the stage tree (engine.plan.Node.to_json()). Absent"
        " fields have their defaults: status pending, detail empty, no progress.",
        "type": "object",
        "properties": props,
        "required": ["key"],
        "additionalProperties": True,
    }


def _changes_schema() -> dict[str, Any]:
    commit = {
        "type": "object",
        "properties": {
            "sha": {"type": "string"},
            "subject": {"type": "string"},
            "author": {"type": "string"},
            "date": {"type": "string", "description": "ISO 8601, the author's date."},
        },
    }
    count = {"type": ["integer", "null"], "description": "Lines; null for a binary file."}
    group = {
        "type": "object",
        "description": "Hosts that run the same commit ('base') and what the target"
        " changes for them. Lists are cut; their '_total' counts are not.",
        "properties": {
            "state": {"enum": list(OUTGOING_STATES)},
            "base": {"type": "string"},
            "release": {"type": "string"},
            "hosts": {"type": "array", "items": {"type": "string"}},
            "host_count": {"type": "integer"},
            "commits": {"type": "array", "items": commit, "description": "Going out."},
            "commits_total": {"type": "integer"},
            "back": {"type": "array", "items": commit, "description": "Taken back."},
            "back_total": {"type": "integer"},
            "files": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "added": count, "removed": count},
                },
            },
            "files_total": {"type": "integer"},
            "added": {"type": "integer"},
            "removed": {"type": "integer"},
            "note": {"type": "string"},
        },
        "additionalProperties": True,
    }
    return {
        "description": "What goes out (engine.outgoing.Outgoing.to_json()).",
        "type": "object",
        "properties": {
            "target": {"type": "string", "description": "The commit deployed (full sha)."},
            "subject": {"type": "string"},
            "hosts": {"type": "integer", "description": "Hosts the card is about."},
            "noop": {
                "type": "boolean",
                "description": "Every one of these hosts already runs the target.",
            },
            "groups": {"type": "array", "items": group},
            "more_groups": {"type": "integer"},
            "more_hosts": {"type": "integer"},
            "error": {"type": "string", "description": "Why nothing could be computed."},
        },
        "additionalProperties": True,
    }


def event_schema() -> dict[str, Any]:
    """The JSON Schema of one engine event (as carried in ``event`` frames)."""
    defs: dict[str, Any] = {
        "node_status": {
            "description": "A node's status, in the order a node moves through them:"
            " waiting is a gate waiting for an approval; ok, failed, skipped and"
            " cancelled are final.",
            "enum": list(STATUSES),
        },
        "node": _node_schema(),
        "changes": _changes_schema(),
    }
    for kind, cls in EVENT_TYPES.items():
        defs[kind] = _event_schema(cls)
    assert PlanReady.type in defs
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "shipdeck engine event",
        "description": "One engine event, as the engine emits it (its JSON lines, "
        "--json output) and as the relay carries it in an event frame's 'events'. "
        "Generated from engine/events.py by `python -m relay.schema`. Readers ignore "
        "fields they do not know.",
        "oneOf": [{"$ref": f"#/$defs/{kind}"} for kind in EVENT_TYPES],
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(event_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m relay.schema", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    p.add_argument("--out", type=Path, default=SCHEMA_PATH, help=f"default {SCHEMA_PATH}")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python -m relay.schema", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

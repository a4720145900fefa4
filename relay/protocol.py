"""The relay's wire protocol: frame types, validation, close codes.

Every frame is one JSON object in one websocket text frame, with a ``type`` and the
protocol version ``v``. The full description, with examples, is in
``docs/relay-protocol.md``; this module is its executable form and is shared by the
server, the client and the command-line tools.

Nothing here does I/O. Parsing a client frame either returns a validated dict or
raises :class:`ProtocolError`, whose ``code`` and ``message`` go back to the client in
an ``error`` frame.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ShipdeckError
from engine.events import Event, EventDecodeError, PlanReady, event_from_json
from engine.plan import Plan
from engine.state import json_size

PROTOCOL_VERSION = 1

#: Largest frame the relay accepts (bytes of UTF-8 text). Bigger frames get a
#: ``too_large`` error; frames beyond :data:`HARD_MAX_BYTES` close the connection
#: (websockets' own limit, close code 1009).
MAX_MESSAGE_BYTES = 64 * 1024
#: ``event`` frames may be larger (a deploy plan of a big fleet is one event).
MAX_EVENT_BYTES = 2 * 1024 * 1024
HARD_MAX_BYTES = MAX_EVENT_BYTES
#: A ``welcome`` and each ``snapshot_part`` frame stay under this many bytes, well
#: below :data:`HARD_MAX_BYTES`, whatever the room holds.
WELCOME_MAX_BYTES = 1024 * 1024

#: Room names: what fits in a URL, a file name and a log line.
ROOM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# -- close codes (application range 4000-4999) ---------------------------------

#: The client fell behind (its queue was full). Reconnect at once and resume.
CLOSE_SLOW = 4000
#: Too many invalid frames in a short time. Reconnecting is allowed but will be
#: closed again if the client keeps sending garbage.
CLOSE_ABUSE = 4008
#: No valid ``hello`` in time.
CLOSE_NO_HELLO = 4002
#: Standard "service restart": the relay is shutting down; reconnect later.
CLOSE_RESTART = 1012

CLIENT_TYPES = ("hello", "chat", "event", "lock", "control")
#: Frames stored in the room log (they carry an offset).
STORED_TYPES = ("chat", "event", "lock", "control")
LOCK_OPS = ("acquire", "heartbeat", "release", "break")
CONTROL_ACTIONS = ("abort", "approve")

MAX_CHAT_CHARS = 8000
MAX_EVENTS_PER_FRAME = 2000
#: Room for the relay's envelope (room, offset, sender, time) around a stored
#: ``event`` body, so that every stored frame fits :data:`HARD_MAX_BYTES`.
ENVELOPE_BYTES = 1024
#: An engine event's node key (a path such as ``release/wave-1/web1/upload``).
MAX_KEY_CHARS = 512
#: Nodes in one plan (a plan of a big fleet; each node is a handful of fields).
MAX_PLAN_NODES = 50_000
#: In snapshots the relay keeps at most this much of a log line's text, a node's
#: detail and label (code points); what is cut is counted in the field ``cut``.
SNAPSHOT_LOG_CHARS = 2000
SNAPSHOT_DETAIL_CHARS = 1000
SNAPSHOT_LABEL_CHARS = 256
#: A plan's ``meta`` and a ``finished`` event as kept for snapshots (bytes).
SNAPSHOT_META_BYTES = 16 * 1024
SNAPSHOT_FINISHED_BYTES = 64 * 1024
MAX_REASON_CHARS = 200
MIN_TTL, MAX_TTL = 1.0, 3600.0

#: Operator name used as the sender of messages the relay writes itself
#: (a lease that went stale).
RELAY_SENDER = "relay"


class ProtocolError(ShipdeckError, ValueError):
    """A client frame that cannot be accepted; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, msg_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _require(
    frame: dict[str, Any], name: str, kind: type | tuple[type, ...], msg_id: str | None
) -> Any:
    if name not in frame:
        raise ProtocolError("bad_field", f"{frame.get('type')}: missing field {name!r}", msg_id)
    value = frame[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        raise ProtocolError(
            "bad_field",
            f"{frame.get('type')}: field {name!r} must be {_kind_name(kind)}",
            msg_id,
        )
    return value


def _optional(
    frame: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    default: Any,
    msg_id: str | None,
) -> Any:
    if frame.get(name) is None:
        return default
    return _require(frame, name, kind, msg_id)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "an object",
    }
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in _as_tuple(kind)))


def parse_client_frame(
    text: str | bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, max_event_bytes: int = MAX_EVENT_BYTES
) -> dict[str, Any]:
    """Validate one frame sent by a client and return it as a normalised dict.

    Raises :class:`ProtocolError` naming the problem: ``too_large``, ``bad_json``,
    ``not_object``, ``bad_version``, ``unknown_type``, ``bad_field`` or ``bad_event``.
    """
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > max(max_bytes, max_event_bytes):
        raise ProtocolError(
            "too_large",
            f"frame is {size} bytes; the limit is {max_bytes} ({max_event_bytes} for event frames)",
        )
    frame = _decode(text)
    raw_id = frame.get("id")
    msg_id = raw_id if isinstance(raw_id, str) and ID_RE.match(raw_id) else None
    version = frame.get("v", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(
            "bad_version",
            f"protocol version {version!r} is not supported (this relay speaks {PROTOCOL_VERSION})",
            msg_id,
        )
    kind = frame.get("type")
    if size > max_bytes and kind != "event":
        raise ProtocolError("too_large", f"frame is {size} bytes; the limit is {max_bytes}", msg_id)
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type",
            f"unknown frame type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}",
            msg_id,
        )
    return _VALIDATORS[kind](frame, msg_id)


def _decode(text: str | bytes) -> dict[str, Any]:
    """A frame's text as a JSON object. Raises :class:`ProtocolError` (``bad_json``,
    ``not_object``)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("bad_json", "binary frame is not UTF-8 JSON") from None
    try:
        frame = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise ProtocolError("bad_json", f"not JSON: {msg}") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise ProtocolError("not_object", "a frame must be a JSON object")
    try:  # lone surrogates (\ud800) parse as JSON but cannot be stored or sent
        json.dumps(frame, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("bad_json", "frame holds text that is not valid Unicode") from None
    return frame


def _msg_id(frame: dict[str, Any], msg_id: str | None) -> str:
    value = _require(frame, "id", str, None)
    if msg_id is None or value != msg_id:
        raise ProtocolError(
            "bad_field",
            f"{frame['type']}: field 'id' must be 1-64 characters of A-Z a-z 0-9 . _ : -",
        )
    return value


def hello_frame(
    room: str,
    session: str,
    snapshot: bool = True,
    resume: dict[str, Any] | None = None,
    since: int | None = None,
) -> dict[str, Any]:
    """The ``hello`` a client joins ``room`` with: ``resume`` (``{"epoch", "offset"}``)
    after a reconnect, else ``since`` to replay history after that offset."""
    hello: dict[str, Any] = {
        "type": "hello",
        "v": PROTOCOL_VERSION,
        "room": room,
        "session": session,
        "snapshot": snapshot,
    }
    if resume is not None:
        hello["resume"] = resume
    elif since is not None:
        hello["since"] = since
    return hello


def _hello(frame: dict[str, Any], msg_id: str | None) -> dict[str, Any]:
    room = _require(frame, "room", str, msg_id)
    if not ROOM_RE.match(room):
        raise ProtocolError(
            "bad_field",
            "hello: 'room' must be 1-64 characters of A-Z a-z 0-9 . _ : - (not starting with a symbol)",
        )
    out: dict[str, Any] = {"type": "hello", "room": room}
    session = _optional(frame, "session", str, None, msg_id)
    if session is not None and not ID_RE.match(session):
        raise ProtocolError(
            "bad_field", "hello: 'session' must be 1-64 characters of A-Z a-z 0-9 . _ : -"
        )
    out["session"] = session
    resume = _optional(frame, "resume", dict, None, msg_id)
    if resume is not None:
        epoch = resume.get("epoch")
        offset = resume.get("offset")
        if (
            not isinstance(epoch, str)
            or not isinstance(offset, int)
            or isinstance(offset, bool)
            or offset < 0
        ):
            raise ProtocolError(
                "bad_field", 'hello: \'resume\' must be {"epoch": string, "offset": integer >= 0}'
            )
        out["resume"] = {"epoch": epoch, "offset": offset}
    since = _optional(frame, "since", int, None, msg_id)
    if since is not None and since < 0:
        raise ProtocolError("bad_field", "hello: 'since' must be an integer >= 0")
    out["since"] = since
    out["snapshot"] = _optional(frame, "snapshot", bool, True, msg_id)
    return out


def _chat(frame: dict[str, Any], msg_id: str | None) -> dict[str, Any]:
    mid = _msg_id(frame, msg_id)
    text = _require(frame, "text", str, mid)
    if not text.strip():
        raise ProtocolError("bad_field", "chat: 'text' is empty", mid)
    if len(text) > MAX_CHAT_CHARS:
        raise ProtocolError(
            "bad_field", f"chat: 'text' is longer than {MAX_CHAT_CHARS} characters", mid
        )
    return {"type": "chat", "id": mid, "text": text}


def _event(frame: dict[str, Any], msg_id: str | None) -> dict[str, Any]:
    mid = _msg_id(frame, msg_id)
    events = _require(frame, "events", list, mid)
    if not events or len(events) > MAX_EVENTS_PER_FRAME:
        raise ProtocolError(
            "bad_field", f"event: 'events' must hold 1-{MAX_EVENTS_PER_FRAME} engine events", mid
        )
    decoded = []
    for i, data in enumerate(events):
        try:
            decoded.append(check_event(data))
        except (EventDecodeError, TypeError, ValueError) as exc:
            raise ProtocolError("bad_event", f"event: events[{i}]: {exc}", mid) from None
    # "decoded" is for the relay's own use; only "events" is stored and forwarded.
    return {"type": "event", "id": mid, "events": events, "decoded": decoded}


_FIELD_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "float": (int, float),
    "int": (int,),
    "bool": (bool,),
    "list[dict[str, Any]]": (list,),
    "dict[str, Any]": (dict,),
}
_NODE_FIELDS: dict[str, tuple[type, ...]] = {
    "key": (str,),
    "label": (str,),
    "kind": (str,),
    "status": (str,),
    "started": (int, float, type(None)),
    "ended": (int, float, type(None)),
    "detail": (str,),
    "done": (int,),
    "total": (int,),
}


def check_event(data: Any) -> Event:
    """Read one engine event and check its field types (stricter than the engine's
    reader, because the relay applies events from any client to its snapshot).

    Raises :class:`~engine.events.EventDecodeError` naming the field at fault.
    """
    event = event_from_json(data)
    for f in dataclasses.fields(event):
        kinds = _FIELD_KINDS.get(str(f.type))
        value = getattr(event, f.name)
        if kinds and (
            not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
        ):
            raise EventDecodeError(f"{event.type}: field {f.name!r} has the wrong type")
    key = getattr(event, "key", "")
    if isinstance(key, str) and len(key) > MAX_KEY_CHARS:
        raise EventDecodeError(
            f"{event.type}: field 'key' is longer than {MAX_KEY_CHARS} characters"
        )
    if isinstance(event, PlanReady):
        _check_plan(event)
    return event


def _check_plan(event: PlanReady) -> None:
    if len(event.nodes) > MAX_PLAN_NODES:
        raise EventDecodeError(f"plan: more than {MAX_PLAN_NODES} nodes")
    for j, node in enumerate(event.nodes):
        _check_node(j, node)


def _check_node(j: int, node: Any) -> None:
    if not isinstance(node, dict) or not isinstance(node.get("key"), str) or not node["key"]:
        raise EventDecodeError(f"plan: nodes[{j}] must be an object with a non-empty 'key'")
    if len(node["key"]) > MAX_KEY_CHARS:
        raise EventDecodeError(f"plan: nodes[{j}].key is longer than {MAX_KEY_CHARS} characters")
    for name, kinds in _NODE_FIELDS.items():
        if name in node and (not isinstance(node[name], kinds) or isinstance(node[name], bool)):
            raise EventDecodeError(f"plan: nodes[{j}].{name} has the wrong type")


def _lock(frame: dict[str, Any], msg_id: str | None) -> dict[str, Any]:
    mid = _msg_id(frame, msg_id)
    op = _require(frame, "op", str, mid)
    if op not in LOCK_OPS:
        raise ProtocolError("bad_field", f"lock: 'op' must be one of {', '.join(LOCK_OPS)}", mid)
    out: dict[str, Any] = {"type": "lock", "id": mid, "op": op}
    if op == "acquire":
        reason = _optional(frame, "reason", str, "", mid)
        if len(reason) > MAX_REASON_CHARS:
            raise ProtocolError(
                "bad_field", f"lock: 'reason' is longer than {MAX_REASON_CHARS} characters", mid
            )
        ttl = _optional(frame, "ttl", (int, float), 30.0, mid)
        if not (MIN_TTL <= ttl <= MAX_TTL):
            raise ProtocolError(
                "bad_field", f"lock: 'ttl' must be between {MIN_TTL:g} and {MAX_TTL:g} seconds", mid
            )
        out.update(reason=reason, ttl=float(ttl), wait=_optional(frame, "wait", bool, False, mid))
    return out


def _control(frame: dict[str, Any], msg_id: str | None) -> dict[str, Any]:
    mid = _msg_id(frame, msg_id)
    action = _require(frame, "action", str, mid)
    if action not in CONTROL_ACTIONS:
        raise ProtocolError(
            "bad_field", f"control: 'action' must be one of {', '.join(CONTROL_ACTIONS)}", mid
        )
    key = _optional(frame, "key", str, "", mid)
    if len(key) > 512:
        raise ProtocolError("bad_field", "control: 'key' is too long", mid)
    return {"type": "control", "id": mid, "action": action, "key": key}


_VALIDATORS = {"hello": _hello, "chat": _chat, "event": _event, "lock": _lock, "control": _control}


# -- frames the relay sends ------------------------------------------------------


def error_frame(code: str, message: str, msg_id: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "error",
        "v": PROTOCOL_VERSION,
        "code": code,
        "message": message,
    }
    if msg_id is not None:
        frame["id"] = msg_id
    return frame


def events_of(frame: dict[str, Any]) -> list[Event]:
    """The engine events carried by a stored ``event`` frame (unknown ones skipped)."""
    out: list[Event] = []
    for data in frame.get("events") or ():
        try:
            out.append(check_event(data))
        except EventDecodeError:
            continue
    return out


# -- bounded snapshots (json_size, cut_text, shrink_json: engine.state's) -----------


def split_snapshot(
    snapshot: dict[str, Any], budget: int = WELCOME_MAX_BYTES - 16 * 1024
) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """Fit a snapshot into ``budget`` bytes: the plan's nodes that do not fit go into
    parts (lists of nodes, each part under ``budget`` bytes too).

    Returns the snapshot to put in ``welcome`` (with ``deploy.parts`` set to the
    number of parts when there are any) and the parts, sent as ``snapshot_part``
    frames right after it. Everything else in a snapshot is bounded where it is kept
    (log lines, chat, details, meta), so only a big plan needs parts."""
    deploy = snapshot.get("deploy")
    if json_size(snapshot) <= budget or not deploy or not deploy.get("plan"):
        return snapshot, []
    plan = deploy["plan"]
    nodes = plan.get("nodes") or []
    head = {**snapshot, "deploy": {**deploy, "plan": {**plan, "nodes": []}, "parts": 0}}
    room = budget - json_size(head)
    first: list[dict[str, Any]] = []
    parts: list[list[dict[str, Any]]] = []
    current, size = first, 0
    for node in nodes:
        n = json_size(node) + 1
        if current is first and size + n > room:
            current, size = [], 0
            parts.append(current)
        elif current is not first and size + n > budget:
            current, size = [], 0
            parts.append(current)
        current.append(node)
        size += n
    head["deploy"]["plan"]["nodes"] = first
    head["deploy"]["parts"] = len(parts)
    return head, parts


def snapshot_part_frame(room: str, part: int, parts: int, nodes: list[dict[str, Any]]) -> str:
    """One ``snapshot_part`` frame (``part`` counts from 1)."""
    return dumps(
        {
            "type": "snapshot_part",
            "v": PROTOCOL_VERSION,
            "room": room,
            "offset": None,
            "part": part,
            "parts": parts,
            "nodes": nodes,
        }
    )


def awaits_parts(welcome: dict[str, Any]) -> bool:
    """True if ``welcome``'s snapshot continues in ``snapshot_part`` frames."""
    deploy = (welcome.get("snapshot") or {}).get("deploy") or {}
    return isinstance(deploy.get("parts"), int) and deploy["parts"] > 0


def join_snapshot_part(welcome: dict[str, Any], frame: dict[str, Any]) -> bool | None:
    """Add a ``snapshot_part`` frame's nodes to the ``welcome`` being assembled (see
    :func:`split_snapshot`). Returns True once it was the last part (the welcome is
    whole), False if more follow, None if ``frame`` is not one of its parts (the
    welcome is then closed as it is: the parts missing are dropped)."""
    deploy = welcome["snapshot"]["deploy"]
    nodes = frame.get("nodes")
    if (
        frame.get("type") != "snapshot_part"
        or not isinstance(nodes, list)
        or frame.get("parts") != deploy.get("parts")
    ):
        deploy.pop("parts", None)
        return None
    deploy["plan"]["nodes"].extend(nodes)
    if frame.get("part") != deploy["parts"]:
        return False
    del deploy["parts"]
    return True


@dataclass(slots=True)
class Snapshot:
    """What a joining client needs to draw the room without its history.

    ``deploy`` is ``None`` or ``{"deploy_id", "plan", "finished", "gates", "logs"}``:
    ``plan`` is a ``plan`` event (``PlanReady.to_json()``) whose nodes carry their
    current status; ``finished`` the ``finished`` event if the deploy is over;
    ``gates`` the keys of gates waiting for approval; ``logs`` the last log events
    (long lines cut, see :func:`cut_text`). On the wire a big plan's nodes may
    continue in ``snapshot_part`` frames (``deploy["parts"]``, see
    :func:`split_snapshot`); :class:`relay.client.RelayClient` joins them before it
    builds this object.
    ``lock`` is the lease (see :func:`lease`) or ``None``; ``chat`` the last chat
    frames, oldest first; ``presence`` who is in the room; ``head`` the offset the
    snapshot is taken at.
    """

    head: int = 0
    deploy: dict[str, Any] | None = None
    lock: dict[str, Any] | None = None
    chat: list[dict[str, Any]] = field(default_factory=list)
    presence: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "deploy": self.deploy,
            "lock": self.lock,
            "chat": self.chat,
            "presence": self.presence,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            head=int(data.get("head", 0)),
            deploy=data.get("deploy"),
            lock=data.get("lock"),
            chat=list(data.get("chat") or ()),
            presence=list(data.get("presence") or ()),
        )

    def plan(self) -> Plan | None:
        """The deploy's tree with its current node states, or ``None``."""
        if not self.deploy or not self.deploy.get("plan"):
            return None
        event = event_from_json(self.deploy["plan"])
        assert isinstance(event, PlanReady)
        return Plan.from_event(event)

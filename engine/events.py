"""The one event vocabulary shared by the engine, the headless printer, the JSON
transcript, the relay and the TUI.

Every event is a small frozen dataclass. ``to_json()`` returns a JSON-ready dict with
a ``type`` field and the schema version ``v``; ``event_from_json()`` reads one back and
ignores fields it does not know, so newer writers stay readable by older readers.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.errors import ShipdeckError

SCHEMA_VERSION = 1

# Node statuses, in the order a node moves through them.
PENDING = "pending"
RUNNING = "running"
WAITING = "waiting"  # a gate waiting for an approval
OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
CANCELLED = "cancelled"

STATUSES = (PENDING, RUNNING, WAITING, OK, FAILED, SKIPPED, CANCELLED)

# what goes out (ChangesOutgoing): how a group of hosts stands against the target
AHEAD = "ahead"  # the target has commits these hosts do not run: they go out
SAME = "same"  # these hosts already run the target
BEHIND = "behind"  # the target is older: commits are taken back
DIVERGED = "diverged"  # both: commits go out and others are taken back
NONE = "none"  # no release on these hosts yet: everything goes out
UNKNOWN = "unknown"  # the commit they run is not in the mirror
UNREAD = "unread"  # the host could not be read
OUTGOING_STATES = (AHEAD, SAME, BEHIND, DIVERGED, NONE, UNKNOWN, UNREAD)

DONE_STATUSES = frozenset({OK, FAILED, SKIPPED, CANCELLED})


def now() -> float:
    """Wall-clock time used for event timestamps (seconds since the epoch)."""
    return time.time()


@dataclass(frozen=True, slots=True)
class Event:
    """Base class: every event belongs to one deploy."""

    type: ClassVar[str] = "event"
    deploy_id: str

    def to_json(self) -> dict[str, Any]:
        data = {"type": self.type, "v": SCHEMA_VERSION}
        for name in _field_names(type(self)):
            data[name] = getattr(self, name)
        return data

    def dumps(self) -> str:
        # every subscriber (transcript, --json printer, relay) asks for the same event
        # in turn: the last one is kept (events are frozen, so it cannot go stale)
        last = _LAST_DUMP
        if last[0] is self:
            return last[1]
        text = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)
        last[0], last[1] = self, text
        return text


_LAST_DUMP: list[Any] = [None, ""]


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True, slots=True)
class PlanReady(Event):
    """The stage tree, built before anything runs.

    ``nodes`` are dicts as produced by :meth:`engine.plan.Node.to_json`, parents
    before children. ``meta`` holds project, ref, sha, release_id, operator, kind.
    """

    type: ClassVar[str] = "plan"
    nodes: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeployMeta(Event):
    """Facts learnt while running (the resolved sha, the release id)."""

    type: ClassVar[str] = "meta"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeStatus(Event):
    type: ClassVar[str] = "status"
    key: str = ""
    status: str = PENDING
    at: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LogLine(Event):
    type: ClassVar[str] = "log"
    key: str = ""
    stream: str = "stdout"  # stdout | stderr | info
    text: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Progress(Event):
    type: ClassVar[str] = "progress"
    key: str = ""
    done: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class Transfer(Event):
    """How the artifact reached one host, once it is there. ``key`` is the host's
    upload step; ``mode`` is ``full``, ``resume`` (the rest of a broken upload),
    ``delta`` (a patch against the host's previous artifact) or ``peer`` (copied from
    ``source``, a host of its site); ``sent`` the bytes shipdeck sent to it (all
    attempts), which crossed the jump host's link when ``jump``; ``total`` the
    artifact's bytes; ``seconds`` the time it took."""

    type: ClassVar[str] = "transfer"
    key: str = ""
    mode: str = ""
    sent: int = 0
    total: int = 0
    seconds: float = 0.0
    source: str = ""
    jump: bool = False


@dataclass(frozen=True, slots=True)
class GateWaiting(Event):
    type: ClassVar[str] = "gate"
    key: str = ""
    at: float = 0.0


@dataclass(frozen=True, slots=True)
class Control(Event):
    """An operator's action that the engine acted on (abort, approve), or a freeze
    window overridden as the run started (``freeze_override``: ``key`` names the
    window, ``reason`` says why)."""

    type: ClassVar[str] = "control"
    action: str = ""  # abort | approve | freeze_override
    by: str = ""
    key: str = ""
    at: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MaintenanceChanged(Event):
    """Maintenance mode of the project's backend: ``on`` (every server out of rotation,
    or the ``deploy.maintenance_on`` hooks run) or off, set by ``by`` with ``message``
    (why), at ``at``; ``where`` says what was changed or found (``web: 3/3 servers in
    MAINT``). Sent by ``shipdeck maintenance on|off`` (under its own ``deploy_id``), and
    by a deploy or rollback that finds maintenance on when it starts. It belongs to the
    room rather than to one deploy: a new plan does not clear it."""

    type: ClassVar[str] = "maintenance"
    on: bool = False
    by: str = ""
    message: str = ""
    at: float = 0.0
    where: str = ""


@dataclass(frozen=True, slots=True)
class ChangesOutgoing(Event):
    """What goes out, against what each host runs now: before the release starts
    (``key`` ``release``: every selected host) and at each gate (``key`` the gate:
    the hosts its approval lets go). ``changes`` is the wire form of an
    :class:`engine.outgoing.Outgoing` (the target, hosts grouped by the commit they
    run, each group's commits and files with lines added and removed, ``noop`` when
    every one of them already runs the target)."""

    type: ClassVar[str] = "outgoing"
    key: str = ""
    changes: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0


_SUMMARY_COUNTS = ("hosts", "ok", "failed", "skipped", "cancelled")


@dataclass(slots=True)
class Summary:
    """How a deploy or rollback ended, typed. On the wire (``DeployFinished.summary``,
    history files) it is the dict :meth:`to_json` returns, exactly as the engine has
    always written it: ``hosts``, ``ok``, ``failed``, ``skipped``, ``cancelled``
    (host counts), ``failures`` ({host: reason}), ``reason`` (why it stopped, or ""),
    ``release_id``, ``exit_code``, ``duration`` (seconds) and, only when set,
    ``relay`` and ``wire`` (what the SSH connections cost: round trips and bytes, a
    debug counter, see :meth:`engine.ssh.Connector.wire_summary`). Keys this version
    does not know are kept in ``extra`` and written back.
    """

    hosts: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    release_id: str = ""
    exit_code: int | None = None
    duration: float | None = None
    relay: str = ""
    wire: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {k: getattr(self, k) for k in _SUMMARY_COUNTS}
        data["failures"] = dict(self.failures)
        data["reason"] = self.reason
        data["release_id"] = self.release_id
        data["exit_code"] = self.exit_code
        data["duration"] = self.duration
        if self.relay:
            data["relay"] = self.relay
        if self.wire:
            data["wire"] = dict(self.wire)
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Summary:
        """Read a summary back; tolerant of missing keys and wrong types (a field
        that is not what it should be is left at its default, never guessed).
        Never raises."""
        if not isinstance(data, dict):
            return cls()
        out = cls()
        for k, kinds in _SUMMARY_FIELDS.items():
            v = data.get(k)
            if isinstance(v, kinds) and not isinstance(v, bool):
                setattr(out, k, v)
        failures = data.get("failures")
        if isinstance(failures, dict):
            out.failures = {str(h): str(why) for h, why in failures.items()}
        out.extra = {k: v for k, v in data.items() if k not in _SUMMARY_KEYS}
        return out


#: the summary's fields read back as they are when of these types (never guessed)
_SUMMARY_FIELDS: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(_SUMMARY_COUNTS, int),
    **dict.fromkeys(("reason", "release_id", "relay"), str),
    "exit_code": int,
    "duration": (int, float),
    "wire": dict,
}
_SUMMARY_KEYS = frozenset({*_SUMMARY_FIELDS, "failures"})


@dataclass(frozen=True, slots=True)
class DeployFinished(Event):
    """``status`` is ok, failed (some hosts failed within budget) or stopped.

    ``summary`` is the wire form of a :class:`Summary` (``Summary.to_json()``);
    :attr:`report` reads it back typed.
    """

    type: ClassVar[str] = "finished"
    status: str = OK
    summary: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0

    @property
    def report(self) -> Summary:
        """The summary, typed (never raises, whatever the wire held)."""
        return Summary.from_json(self.summary)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        PlanReady,
        DeployMeta,
        NodeStatus,
        LogLine,
        Progress,
        Transfer,
        GateWaiting,
        Control,
        MaintenanceChanged,
        ChangesOutgoing,
        DeployFinished,
    )
}


class EventDecodeError(ShipdeckError, ValueError):
    """Raised when a dict or line cannot be read as an event."""


def event_from_json(data: dict[str, Any] | str) -> Event:
    """Build an event from its JSON form (dict or string); unknown fields are ignored.

    Raises :class:`EventDecodeError` on an unknown type or missing ``deploy_id``.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:  # JSONDecodeError, or an absurd integer
            raise EventDecodeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EventDecodeError("an event must be a JSON object")
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventDecodeError(f"unknown event type {data.get('type')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in names}
    if not isinstance(kwargs.get("deploy_id"), str):
        raise EventDecodeError("event has no deploy_id")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise EventDecodeError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One line of a relay room's chat, as the relay client hands it to a UI and the
    TUI's chat pane shows it. Not a deploy event (it belongs to a room, not a deploy,
    and is never in a transcript or a snapshot)."""

    author: str
    text: str
    at: float = field(default_factory=now)
    system: bool = False  # relay notices: joins, lock taken over, controls, ...

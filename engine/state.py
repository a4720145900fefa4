"""The one reducer: the state of a deploy (or rollback) built from its events.

Whoever follows a deploy — the engine that runs it, the TUI that draws it, the relay
that keeps it for late joiners, the headless printer — holds a :class:`RunState` and
feeds it every event, in order::

    state = RunState()
    for event in events:
        touched = state.apply(event)   # node keys whose state changed

What it keeps:

- ``plan``: the stage tree (:class:`engine.plan.Plan`) with every node's status,
  times, detail and progress; ``meta`` (project, ref, sha, release id, ...).
- ``counts[key]``: typed host counts (:class:`Counts`: ok, failed, running, pending,
  ...) of every ancestor of a host (each wave, ``release``), kept up to date as
  hosts change, so nobody reads numbers back out of a display string.
- ``current_step[host_key]``: the step a host is running now.
- ``gates``: keys of gates waiting for an approval, oldest first.
- ``approvals[gate]``: who approved each gate and when (``{"by", "at"}``, in order);
  a gate stops waiting once the plan's rule (:class:`engine.gates.ApprovalRule`, in
  its meta) has enough of them.
- ``outgoing[key]``: what goes out (the changes of the last
  :class:`engine.events.ChangesOutgoing` for ``release`` or a gate), as its dict.
- ``logs``: the newest log events (as their JSON dicts), bounded in lines and bytes
  (off unless ``log_lines`` is given: the relay keeps them for its snapshot).
- ``finished`` / ``summary``: the :class:`DeployFinished` event and its typed
  :class:`engine.events.Summary` once the deploy is over.
- ``transfers[host_key]``: how the artifact reached each host (the
  :class:`engine.events.Transfer` as its dict); :meth:`RunState.transfer_totals`
  sums them for the fleet (bytes sent, bytes across the jump link).
- ``maintenance``: the latest :class:`MaintenanceChanged` (on or off) of the room,
  whichever deploy it came with; a new plan keeps it (``maintenance_on`` reads it).

A snapshot is the state itself: :meth:`RunState.to_json` gives
``{"deploy_id", "plan", "finished", "gates", "logs", "maintenance", "outgoing",
"transfers"}``, plus ``approvals`` once a gate has one (the
relay protocol's
``snapshot.deploy`` object) and :meth:`RunState.from_json` reads one back into a
RunState, with no detour through synthetic events.

With :class:`Bounds` (the relay's limits, :meth:`Bounds.relay`), everything it keeps
is cut to size as it arrives: labels and details, log lines, meta and the finished
event, so its snapshot stays bounded in bytes whatever the events hold.

Standard library only (imports nothing from asyncssh, textual or websockets).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.approvals import ApprovalRule
from engine.bounds import Bounds, cut_text, json_size, shrink_json
from engine.errors import ExitCode
from engine.events import (
    CANCELLED,
    FAILED,
    OK,
    PENDING,
    RUNNING,
    SKIPPED,
    WAITING,
    ChangesOutgoing,
    Control,
    DeployFinished,
    DeployMeta,
    Event,
    EventDecodeError,
    GateWaiting,
    LogLine,
    MaintenanceChanged,
    NodeStatus,
    PlanReady,
    Progress,
    Summary,
    Transfer,
    event_from_json,
)
from engine.outgoing import fit_card
from engine.plan import Plan
from engine.snapshot import MAX_APPROVALS, restore, snapshot

__all__ = ["Bounds", "Counts", "RunState", "Summary", "cut_text", "json_size", "shrink_json"]

Touched = tuple[str, ...]

#: A run's exit status by how it ended: every host ok, some failed within the budget,
#: stopped (budget exceeded, abort, a lock held by someone else).
EXIT_CODES = {
    OK: int(ExitCode.OK),
    "failed": int(ExitCode.FAILED),
    "stopped": int(ExitCode.STOPPED),
}
_NOTHING: Touched = ()


# -- counts -----------------------------------------------------------------------


@dataclass(slots=True)
class Counts:
    """Host counts under one node, by status (a host in an unknown status is not
    counted)."""

    pending: int = 0
    running: int = 0
    waiting: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return (
            self.pending
            + self.running
            + self.waiting
            + self.ok
            + self.failed
            + self.skipped
            + self.cancelled
        )

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped + self.cancelled

    def get(self, status: str) -> int:
        """The count of ``status`` (0 for a status that is not one of ours)."""
        return getattr(self, status, 0) if status in _COUNTED else 0

    def add(self, status: str, n: int = 1) -> None:
        if status in _COUNTED:
            setattr(self, status, getattr(self, status) + n)

    def as_dict(self) -> dict[str, int]:
        """Non-zero counts by status."""
        return {s: getattr(self, s) for s in _COUNTED if getattr(self, s)}


_COUNTED = frozenset({PENDING, RUNNING, WAITING, OK, FAILED, SKIPPED, CANCELLED})


def _ancestors(key: str) -> Iterator[str]:
    while True:
        key, sep, _ = key.rpartition("/")
        if not sep:
            return
        yield key


# -- the reducer ------------------------------------------------------------------


class RunState:
    """The state of one deploy, built by :meth:`apply` from its events.

    ``plan`` may be shared with its owner (the engine's plan, several MB at thousands
    of hosts): applying the same event twice is harmless, and counts come from the
    status this state last counted for each host, not from the node.

    ``log_lines``/``log_bytes``: keep the newest log events up to that many lines and
    bytes (0 lines: keep none). ``bounds``: cut what is kept to these sizes.
    """

    def __init__(
        self,
        plan: Plan | None = None,
        *,
        log_lines: int = 0,
        log_bytes: int = 128 * 1024,
        bounds: Bounds | None = None,
    ) -> None:
        self.bounds = bounds
        self.log_bytes = log_bytes
        self.logs: deque[dict[str, Any]] = deque(maxlen=log_lines or None)
        self._keep_logs = log_lines > 0
        self._log_size = 0
        #: bumped each time a plan event replaces the tree (a new deploy)
        self.generation = 0
        self.plan = Plan(deploy_id="")
        self.counts: dict[str, Counts] = {}
        self.current_step: dict[str, str] = {}
        self.gates: dict[str, None] = {}
        #: who approved each gate, and when: ``{"by", "at"}`` dicts, in order
        self.approvals: dict[str, list[dict[str, Any]]] = {}
        self.outgoing: dict[str, dict[str, Any]] = {}
        self.transfers: dict[str, dict[str, Any]] = {}
        self.finished: DeployFinished | None = None
        self._finished_json: dict[str, Any] | None = None
        self.latest_running: str | None = None
        #: time of the first status change (None: nothing ran yet)
        self.started: float | None = None
        self._host_status: dict[str, str] = {}
        self._host_of: dict[str, str] = {}
        #: the latest maintenance change (kept across plans: it is the room's)
        self.maintenance: MaintenanceChanged | None = None
        if plan is not None:
            self.load(plan)

    # -- plan ---------------------------------------------------------------------

    def load(self, plan: Plan) -> None:
        """Start over from ``plan`` (kept as is, not copied)."""
        if self.bounds is not None:
            for node in plan:
                self.bounds.node(node)
            plan.meta = shrink_json(plan.meta, self.bounds.meta_bytes)
        self.plan = plan
        self.generation += 1
        self.current_step = {}
        self.gates = {
            k: None for k, n in plan.nodes.items() if n.kind == "gate" and n.status == WAITING
        }
        self.finished = None
        self._finished_json = None
        self.approvals = {}
        self.outgoing = {}
        self.transfers = {}
        self.latest_running = None
        self.started = None
        self.logs.clear()
        self._log_size = 0
        self._recount()

    def _recount(self) -> None:
        self.counts = {}
        self._host_status = {}
        self._host_of = {}
        for node in self.plan:
            if node.kind == "host":
                self._host_status[node.key] = node.status
                for anc in _ancestors(node.key):
                    counts = self.counts.get(anc)
                    if counts is None:
                        counts = self.counts[anc] = Counts()
                    counts.add(node.status)
                if node.status != PENDING and self.started is None:
                    self.started = node.started
            elif node.kind == "step" and node.parent:
                self._host_of[node.key] = node.parent
                if node.status == RUNNING:
                    self.current_step[node.parent] = node.key

    # -- reading ------------------------------------------------------------------

    @property
    def deploy_id(self) -> str:
        return self.plan.deploy_id

    @property
    def meta(self) -> dict[str, Any]:
        return self.plan.meta

    @property
    def summary(self) -> Summary | None:
        """The finished deploy's summary, typed (None while it runs)."""
        return self.finished.report if self.finished is not None else None

    @property
    def maintenance_on(self) -> MaintenanceChanged | None:
        """The maintenance change in force, if maintenance is on (None: off or unknown)."""
        m = self.maintenance
        return m if m is not None and m.on is True else None

    @property
    def waiting_gate(self) -> str | None:
        """The gate that most recently started waiting, if any still waits."""
        return next(reversed(self.gates), None) if self.gates else None

    def host_counts(self, key: str = "release") -> Counts:
        """Host counts under ``key`` (all zero when it has no hosts)."""
        return self.counts.get(key) or Counts()

    def summarize(
        self,
        *,
        reason: str = "",
        release_id: str = "",
        duration: float | None = None,
        relay: str = "",
        wire: dict[str, Any] | None = None,
    ) -> tuple[str, Summary]:
        """How the run ends, from the hosts' statuses: ``(status, summary)``. Status
        is ``stopped`` when there is a ``reason`` to stop (exit 3), else ``failed``
        when a host failed (exit 1), else ``ok`` (exit 0). A failed host's reason is
        its detail."""
        hosts = self.plan.hosts()
        counts = self.host_counts()
        failures = {h.label: (h.detail or "failed") for h in hosts if h.status == FAILED}
        status = "stopped" if reason else ("failed" if failures else OK)
        extra: dict[str, Any] = {}
        if self.transfers:
            extra["transfer"] = self.transfer_totals()
        summary = Summary(
            extra=extra,
            hosts=len(hosts),
            ok=counts.ok,
            failed=len(failures),
            skipped=counts.skipped,
            cancelled=counts.cancelled,
            failures=failures,
            reason=reason,
            release_id=release_id,
            exit_code=EXIT_CODES[status],
            duration=duration,
            relay=relay,
            wire=dict(wire or {}),
        )
        return status, summary

    def transfer_totals(self) -> dict[str, int]:
        """The fleet's transfers: ``hosts`` that received the artifact, ``sent`` (bytes
        shipdeck sent), ``jump`` (of those, bytes across the jump host's link),
        ``peer`` (hosts that copied it from a peer) and ``artifact`` (its bytes)."""
        ts = list(self.transfers.values())
        return {
            "hosts": len(ts),
            "sent": sum(int(t.get("sent") or 0) for t in ts),
            "jump": sum(int(t.get("sent") or 0) for t in ts if t.get("jump")),
            "peer": sum(1 for t in ts if t.get("mode") == "peer"),
            "artifact": max((int(t.get("total") or 0) for t in ts), default=0),
        }

    def _transfer(self, event: Transfer, data: dict[str, Any] | None) -> Touched:
        host = self._host_of.get(event.key)
        if host is None:
            return _NOTHING
        # what a follower keeps is cut to size, whatever the relay carried
        event = dataclasses.replace(event, mode=event.mode[:20], source=event.source[:200])
        self.transfers[host] = event.to_json()
        return (event.key, host)

    def host_of(self, key: str) -> str | None:
        """The host node a step belongs to (None for anything that is not a step)."""
        return self._host_of.get(key)

    # -- applying -----------------------------------------------------------------

    def apply(self, event: Event, data: dict[str, Any] | None = None) -> Touched:
        """Update the state from one event; return the keys of the nodes it changed
        (a host's wave and the release when the host's status moved; the host when
        one of its steps did). ``data``: the event's JSON dict when the caller has it
        (the relay), so a kept log line is not serialised again.

        A plan event for another deploy (or another tree) starts over
        (:attr:`generation` moves on); a maintenance change is the room's, whatever its
        deploy; other events of another deploy are ignored. Never raises for an event
        about a node the plan does not have.
        """
        if isinstance(event, PlanReady):
            return self._plan(event)
        if isinstance(event, MaintenanceChanged):
            return self._maintenance(event)
        if self.plan.deploy_id and event.deploy_id != self.plan.deploy_id:
            return _NOTHING
        handler = _APPLY.get(type(event))
        return handler(self, event, data) if handler is not None else _NOTHING

    def apply_all(self, events: Iterable[Event]) -> set[str]:
        """Apply events in order; the keys of every node they changed."""
        touched: set[str] = set()
        for event in events:
            touched.update(self.apply(event))
        return touched

    def _plan(self, event: PlanReady) -> Touched:
        plan = self.plan
        same = event.deploy_id == plan.deploy_id and len(event.nodes) == len(plan.nodes)
        if same:
            keys = iter(plan.nodes)
            same = all(isinstance(n, dict) and n.get("key") == next(keys) for n in event.nodes)
        if not same:
            self.load(Plan.from_event(event))
            return tuple(self.plan.nodes)
        plan.meta.update(event.meta)
        self._bound_meta()
        return _NOTHING

    def _status(self, event: NodeStatus, data: dict[str, Any] | None = None) -> Touched:
        node = self.plan.nodes.get(event.key)
        if node is None:
            return _NOTHING
        status = event.status
        node.set_status(status, event.at, event.detail)
        if self.bounds is not None:
            self.bounds.node(node)
        if self.started is None:
            self.started = event.at
        kind = node.kind
        if kind == "host":
            old = self._host_status.get(node.key, status)
            if old != status:
                self._host_status[node.key] = status
                touched = [node.key]
                for anc in _ancestors(node.key):
                    counts = self.counts.get(anc)
                    if counts is None:
                        counts = self.counts[anc] = Counts()
                    counts.add(old, -1)
                    counts.add(status)
                    touched.append(anc)
                return tuple(touched)
            return (node.key,)
        if kind == "gate":
            if status == WAITING:
                self._wait_at(node.key)
            else:
                self.gates.pop(node.key, None)
            return (node.key,)
        if status == RUNNING and kind in ("step", "stage"):
            self.latest_running = node.key
            host = self._host_of.get(node.key)
            if host:
                self.current_step[host] = node.key
                return (node.key, host)
        return (node.key,)

    def _log(self, event: LogLine, data: dict[str, Any] | None) -> Touched:
        if self._keep_logs:
            self._keep_log(data if data is not None else event.to_json())
        return _NOTHING

    def _progress(self, event: Progress, data: dict[str, Any] | None) -> Touched:
        node = self.plan.nodes.get(event.key)
        if node is None:
            return _NOTHING
        node.done, node.total = event.done, event.total
        host = self._host_of.get(event.key)
        return (event.key, host) if host else (event.key,)

    def _gate_waiting(self, event: GateWaiting, data: dict[str, Any] | None) -> Touched:
        node = self.plan.nodes.get(event.key)
        if node is None:
            return _NOTHING
        node.status = WAITING
        if node.started is None:
            node.started = event.at
        self._wait_at(event.key)
        return (event.key,)

    def _meta(self, event: DeployMeta, data: dict[str, Any] | None) -> Touched:
        self.plan.meta.update(event.meta)
        self._bound_meta()
        return _NOTHING

    def _control(self, event: Control, data: dict[str, Any] | None) -> Touched:
        if event.action != "approve":
            return _NOTHING
        key = event.key or self.waiting_gate or ""
        if key not in self.plan:
            return _NOTHING
        given = self.approvals.setdefault(key, [])
        if len(given) < MAX_APPROVALS:
            by = str(event.by)
            if self.bounds is not None:
                by = cut_text(by, self.bounds.label_chars)[0]
            given.append({"by": by, "at": event.at})
        if len(given) >= ApprovalRule.from_meta(self.plan.meta).count:
            self.gates.pop(key, None)
        return _NOTHING

    def _maintenance(self, event: MaintenanceChanged) -> Touched:
        if self.bounds is not None:
            cut = self.bounds.detail_chars
            event = dataclasses.replace(
                event,
                by=cut_text(str(event.by), self.bounds.label_chars)[0],
                message=cut_text(str(event.message), cut)[0],
                where=cut_text(str(event.where), cut)[0],
            )
        self.maintenance = event
        return _NOTHING

    def _outgoing(self, event: ChangesOutgoing, data: dict[str, Any] | None) -> Touched:
        self._keep_outgoing(event.key, event.changes)
        return _NOTHING

    def _keep_outgoing(self, key: Any, changes: Any) -> None:
        """Keep one card (a newer one for the same key replaces it), bounded."""
        if not isinstance(key, str) or not isinstance(changes, dict):
            return
        bounds = self.bounds or Bounds()
        self.outgoing.pop(key, None)
        self.outgoing[key] = fit_card(changes, bounds.outgoing_bytes)
        while len(self.outgoing) > bounds.outgoing_cards:
            self.outgoing.pop(next(iter(self.outgoing)))

    def _finished(self, event: DeployFinished, data: dict[str, Any] | None) -> Touched:
        self.finished = event
        self.gates.clear()
        if self.bounds is not None:
            raw = data if data is not None else event.to_json()
            self._finished_json = shrink_json(raw, self.bounds.finished_bytes)
        else:
            self._finished_json = data
        return _NOTHING

    def _wait_at(self, gate: str) -> None:
        """``gate`` waits (again): it becomes the newest waiting gate."""
        self.gates.pop(gate, None)
        self.gates[gate] = None

    def _bound_meta(self) -> None:
        if self.bounds is not None:
            self.plan.meta = shrink_json(self.plan.meta, self.bounds.meta_bytes)

    def _keep_log(self, data: dict[str, Any]) -> None:
        if self.bounds is not None:
            data = self.bounds.log(data)
        logs = self.logs
        if logs.maxlen is not None and len(logs) == logs.maxlen:
            self._log_size -= json_size(logs[0])
        logs.append(data)
        self._log_size += json_size(data)
        while len(logs) > 1 and self._log_size > self.log_bytes:
            self._log_size -= json_size(logs.popleft())

    # -- snapshots (engine/snapshot.py) --------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The snapshot (see :func:`engine.snapshot.snapshot`)."""
        return snapshot(self)

    @classmethod
    def from_json(
        cls,
        data: dict[str, Any],
        *,
        log_lines: int = 0,
        log_bytes: int = 128 * 1024,
        bounds: Bounds | None = None,
    ) -> RunState:
        """A RunState from a snapshot (:meth:`to_json`'s shape; unknown keys ignored,
        log lines and gates that do not read are dropped). The kept logs are those of
        the snapshot when ``log_lines`` is 0, else the newest within the bounds.

        Raises :class:`engine.events.EventDecodeError` (a ValueError) if ``plan`` is
        not a plan event.
        """
        plan_event = event_from_json(data.get("plan") or {})
        if not isinstance(plan_event, PlanReady):
            raise EventDecodeError("a snapshot's plan must be a plan event")
        logs = data.get("logs") or ()
        keep = log_lines if log_lines > 0 else max(1, len(logs))
        state = cls(log_lines=keep, log_bytes=log_bytes, bounds=bounds)
        state._keep_logs = log_lines > 0
        state.load(Plan.from_event(plan_event))
        restore(state, data)
        return state

    def log_events(self) -> list[LogLine]:
        """The kept log lines as events (those that do not read are left out)."""
        out = []
        for data in self.logs:
            try:
                event = event_from_json(data)
            except ValueError:
                continue
            if isinstance(event, LogLine):
                out.append(event)
        return out


#: What :meth:`RunState.apply` does with each event type (a plan event is handled
#: before the deploy id is checked; an event type not here changes nothing).
_APPLY: dict[type[Event], Callable[[RunState, Any, dict[str, Any] | None], Touched]] = {
    NodeStatus: RunState._status,
    LogLine: RunState._log,
    Progress: RunState._progress,
    Transfer: RunState._transfer,
    GateWaiting: RunState._gate_waiting,
    DeployMeta: RunState._meta,
    Control: RunState._control,
    ChangesOutgoing: RunState._outgoing,
    DeployFinished: RunState._finished,
}

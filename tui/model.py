"""The TUI's plain data model: the plan's nodes, host counts, per-node log rings.

No textual here. Events are buffered by :meth:`DeckModel.push` (cheap, called for every
event) and applied in batches by :meth:`DeckModel.apply_pending`, which records which
nodes changed (``dirty``) so the tree relabels only those, and only when visible.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.events import (
    DONE_STATUSES,
    FAILED,
    OK,
    RUNNING,
    WAITING,
    Control,
    DeployFinished,
    DeployMeta,
    Event,
    GateWaiting,
    LogLine,
    NodeStatus,
    PlanReady,
    Progress,
)
from engine.plan import Plan

RING_LINES = 2000  # per ring: a host (its steps' lines too), a stage, a wave, the release
LOG_BUDGET = 100_000  # lines kept over all rings; past it every ring drops its older half


@dataclass(slots=True)
class LogEntry:
    seq: int
    key: str
    stream: str
    text: str
    at: float


@dataclass
class Batch:
    """What one flush changed."""

    dirty: set[str] = field(default_factory=set)
    lines: list[LogEntry] = field(default_factory=list)
    meta_changed: bool = False
    plan_changed: bool = False
    finished: DeployFinished | None = None
    gates: list[str] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    applied: int = 0


class DeckModel:
    """State of one deploy (or rollback) as the TUI shows it."""

    def __init__(self, plan: Plan | None = None, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.pending: list[Event] = []
        self.plan = Plan(deploy_id="")
        self.dirty: set[str] = set()
        self.logs: dict[str, deque[LogEntry]] = {}
        self.ring_of: dict[str, str] = {}
        self.retained = 0
        self.counts: dict[str, dict[str, int]] = {}
        self.host_of: dict[str, str] = {}
        self.host_status: dict[str, str] = {}
        self.host_step: dict[str, str] = {}
        self.seq = 0
        self.finished: DeployFinished | None = None
        self.waiting_gate: str | None = None
        self.latest_running: str | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.applied_total = 0
        if plan is not None:
            self.load(plan)

    # -- plan -----------------------------------------------------------------

    def load(self, plan: Plan) -> None:
        """Show ``plan``, shared with the runner that owns it (no copy: at 3,000 hosts
        a copy is ~10 MB). The runner may apply an event to it before this model
        does; every update here is idempotent, and the host counts come from
        ``host_status`` (the status this model last counted), not from the node."""
        self.plan = plan
        self.dirty = set(self.plan.nodes)
        self.logs.clear()
        self.retained = 0
        self.host_step = {}
        self.finished = None
        self.waiting_gate = None
        self.latest_running = None
        self.started = self.ended = None
        self._recount()

    def _recount(self) -> None:
        self.counts = {}
        self.host_of = {}
        self.host_status = {}
        self.ring_of = {}
        for node in self.plan:
            if node.kind == "host":
                self.host_status[node.key] = node.status
                for anc in self._ancestors(node.key):
                    c = self.counts.setdefault(anc, {})
                    c[node.status] = c.get(node.status, 0) + 1
            elif node.kind == "step":
                self.host_of[node.key] = node.parent or ""
                self.ring_of[node.key] = node.parent or node.key

    @staticmethod
    def _ancestors(key: str) -> Iterable[str]:
        while True:
            key, sep, _ = key.rpartition("/")
            if not sep:
                return
            yield key

    @property
    def meta(self) -> dict[str, Any]:
        return self.plan.meta

    @property
    def deploy_id(self) -> str:
        return self.plan.deploy_id

    @property
    def running(self) -> bool:
        return self.started is not None and self.finished is None

    def host_totals(self) -> dict[str, int]:
        return self.counts.get("release", {})

    # -- events -----------------------------------------------------------------

    def push(self, event: Event) -> None:
        """Buffer one event (called for every event, must stay cheap)."""
        self.pending.append(event)

    def apply_pending(self) -> Batch:
        events, self.pending = self.pending, []
        batch = Batch()
        for event in events:
            self.apply(event, batch)
        batch.applied = len(events)
        self.applied_total += len(events)
        self.dirty |= batch.dirty
        return batch

    def apply(self, event: Event, batch: Batch) -> None:
        plan = self.plan
        if isinstance(event, NodeStatus):
            node = plan.nodes.get(event.key)
            if node is None:
                return
            plan.apply(event)
            if self.started is None:
                self.started = event.at or self.clock()
            batch.dirty.add(event.key)
            if node.kind == "host":
                new = node.status
                old = self.host_status.get(node.key, new)
                if old != new:
                    self.host_status[node.key] = new
                    for anc in self._ancestors(node.key):
                        c = self.counts.setdefault(anc, {})
                        c[old] = c.get(old, 0) - 1
                        c[new] = c.get(new, 0) + 1
                        batch.dirty.add(anc)
            if node.status == RUNNING and node.kind in ("step", "stage"):
                self.latest_running = node.key
                host = self.host_of.get(node.key)
                if host:
                    self.host_step[host] = node.key
                    batch.dirty.add(host)
            if node.kind == "gate":
                if node.status == WAITING:
                    self.waiting_gate = node.key
                elif self.waiting_gate == node.key:
                    self.waiting_gate = None
        elif isinstance(event, LogLine):
            self.seq += 1
            node = plan.nodes.get(event.key)
            key = node.key if node is not None else event.key  # one shared string per node
            entry = LogEntry(self.seq, key, event.stream, event.text, event.at)
            # A step's lines live in its host's ring (a step's log is that ring
            # filtered); the host/stage ring and each ancestor's ring hold the entry.
            owner = self.ring_of.get(key, key)
            self._keep(owner, entry)
            for anc in self._ancestors(owner):
                self._keep(anc, entry)
            batch.lines.append(entry)
        elif isinstance(event, Progress):
            if plan.apply(event) is not None:
                batch.dirty.add(event.key)
                host = self.host_of.get(event.key)
                if host:
                    batch.dirty.add(host)
        elif isinstance(event, GateWaiting):
            node = plan.nodes.get(event.key)
            if node is not None:
                node.status = WAITING
                if node.started is None:
                    node.started = event.at
                batch.dirty.add(event.key)
            self.waiting_gate = event.key
            batch.gates.append(event.key)
        elif isinstance(event, DeployMeta):
            plan.apply(event)
            batch.meta_changed = True
        elif isinstance(event, PlanReady):
            incoming = Plan.from_event(event)
            if incoming.deploy_id != plan.deploy_id or list(incoming.nodes) != list(plan.nodes):
                self.load(incoming)
                batch.plan_changed = True
            else:
                plan.meta.update(event.meta)
            batch.meta_changed = True
        elif isinstance(event, Control):
            batch.controls.append(event)
            if event.action == "approve" and self.waiting_gate == (event.key or self.waiting_gate):
                self.waiting_gate = None
        elif isinstance(event, DeployFinished):
            self.finished = event
            self.ended = event.at or self.clock()
            self.waiting_gate = None
            batch.finished = event
            batch.meta_changed = True

    # -- queries ------------------------------------------------------------------

    def label_for(self, key: str):
        """The tree label of one node, from the current state."""
        from tui.labels import node_label

        node = self.plan.nodes[key]
        kind = node.kind
        counts = self.counts.get(key) if kind in ("wave", "stage") else None
        current = progress = None
        if kind == "host" and node.status == RUNNING:
            step_key = self.host_step.get(key)
            if step_key:
                step = self.plan.nodes.get(step_key)
                if step is not None:
                    current = step.label
                    if step.total and step.status == RUNNING:
                        progress = (step.done, step.total)
        elif kind == "step" and node.total:
            progress = (node.done, node.total)
        return node_label(
            node,
            elapsed=self.elapsed(key),
            counts=counts,
            current_step=current,
            progress=progress,
            note=self.rolled_back_note(key) if kind == "host" else None,
        )

    def rolled_back_note(self, host_key: str) -> str | None:
        """ "rolled back to <id>" for a host whose rollback step ran and succeeded."""
        step = self.plan.nodes.get(f"{host_key}/rollback")
        if step is None or step.status != OK:
            return None
        target = step.detail.removeprefix("to ").strip()
        return f"rolled back to {target}" if target else "rolled back"

    def _keep(self, owner: str, entry: LogEntry) -> None:
        ring = self.logs.get(owner)
        if ring is None:
            ring = self.logs[owner] = deque(maxlen=RING_LINES)
        if len(ring) < RING_LINES:
            self.retained += 1
        ring.append(entry)
        if self.retained > LOG_BUDGET:
            self._trim()

    def _trim(self) -> None:
        """Over the budget (thousands of hosts with chatty hooks): keep the newer
        half of every ring, so memory stays bounded whatever the fleet size."""
        total = 0
        for ring in self.logs.values():
            for _ in range(len(ring) // 2):
                ring.popleft()
            total += len(ring)
        self.retained = total

    def log_for(self, key: str | None) -> list[LogEntry]:
        """The lines of ``key`` and of its descendants, oldest first."""
        if key is None:
            return []
        owner = self.ring_of.get(key)
        if owner is None:
            return list(self.logs.get(key, ()))
        prefix = key + "/"
        return [e for e in self.logs.get(owner, ()) if e.key == key or e.key.startswith(prefix)]

    def elapsed(self, key: str) -> float | None:
        node = self.plan.nodes.get(key)
        if node is None or node.started is None:
            return None
        end = node.ended if node.status in DONE_STATUSES and node.ended else self.clock()
        return max(0.0, end - node.started)

    def deploy_elapsed(self) -> float | None:
        if self.started is None:
            return None
        end = self.ended if self.ended is not None else self.clock()
        return max(0.0, end - self.started)

    def hosts_matching(self, pattern: str) -> set[str]:
        """Host node keys whose name matches a glob, or whose status is the word."""
        import fnmatch

        from engine.events import STATUSES

        pattern = pattern.strip()
        hosts = self.plan.hosts()
        if not pattern:
            return {h.key for h in hosts}
        if pattern in STATUSES:
            return {h.key for h in hosts if h.status == pattern}
        if not any(ch in pattern for ch in "*?["):
            pattern = f"*{pattern}*"
        return {h.key for h in hosts if fnmatch.fnmatchcase(h.label, pattern)}

    def failed_hosts(self) -> list[str]:
        return [h.label for h in self.plan.hosts() if h.status == FAILED]

    def ok_hosts(self) -> int:
        return self.host_totals().get(OK, 0)

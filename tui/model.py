"""The TUI's model: one :class:`engine.state.RunState` (the deploy's state, as every
other follower keeps it) plus what only the screen needs: per-node log rings and
which nodes must be relabelled.

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
    Control,
    DeployFinished,
    DeployMeta,
    Event,
    GateWaiting,
    LogLine,
    PlanReady,
)
from engine.plan import Plan
from engine.state import Counts, RunState

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
    """One deploy (or rollback) as the TUI shows it: ``state`` is the reducer's; the
    log rings and ``dirty`` are the screen's."""

    def __init__(self, plan: Plan | None = None, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.pending: list[Event | RunState] = []
        self.state = RunState()
        self.dirty: set[str] = set()
        self.logs: dict[str, deque[LogEntry]] = {}
        self.ring_of: dict[str, str] = {}
        self.retained = 0
        self.seq = 0
        self.ended: float | None = None
        self.applied_total = 0
        if plan is not None:
            self.load(plan)

    # -- plan -----------------------------------------------------------------

    def load(self, plan: Plan | RunState) -> None:
        """Show ``plan`` (shared with the runner that owns it: no copy, at 3,000 hosts
        a copy is ~10 MB), or a whole state (a late joiner's snapshot)."""
        state = plan if isinstance(plan, RunState) else RunState(plan)
        if state.maintenance is None:  # the room's, known before this deploy
            state.maintenance = self.state.maintenance
        self.state = state
        self._reset()
        for event in state.log_events():
            self._log(event)

    def _reset(self) -> None:
        state = self.state
        self.dirty = set(state.plan.nodes)
        self.logs.clear()
        self.retained = 0
        self.ended = state.finished.at or self.clock() if state.finished else None
        self.ring_of = {}
        for node in state.plan:
            if node.kind == "step":
                self.ring_of[node.key] = node.parent or node.key

    @staticmethod
    def _ancestors(key: str) -> Iterable[str]:
        while True:
            key, sep, _ = key.rpartition("/")
            if not sep:
                return
            yield key

    @property
    def plan(self) -> Plan:
        return self.state.plan

    @property
    def meta(self) -> dict[str, Any]:
        return self.state.plan.meta

    @property
    def deploy_id(self) -> str:
        return self.state.plan.deploy_id

    @property
    def counts(self) -> dict[str, Counts]:
        return self.state.counts

    @property
    def finished(self) -> DeployFinished | None:
        return self.state.finished

    @property
    def waiting_gate(self) -> str | None:
        return self.state.waiting_gate

    @property
    def latest_running(self) -> str | None:
        return self.state.latest_running

    @property
    def started(self) -> float | None:
        return self.state.started

    @property
    def running(self) -> bool:
        return self.state.started is not None and self.state.finished is None

    def host_totals(self) -> Counts:
        return self.state.host_counts()

    # -- events -----------------------------------------------------------------

    def push(self, event: Event | RunState) -> None:
        """Buffer one event, or a whole state (a snapshot) that replaces what is shown
        (called for every event, must stay cheap)."""
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

    def apply(self, event: Event | RunState, batch: Batch) -> None:
        """Apply one event (or a snapshot's state) and note in ``batch`` what the
        screen must redraw."""
        if isinstance(event, RunState):
            self.load(event)
            batch.plan_changed = batch.meta_changed = True
            batch.gates.extend(event.gates)
            batch.finished = event.finished
            return
        state = self.state
        generation = state.generation
        touched = state.apply(event)
        if state.generation != generation:  # a new plan: a new tree
            self._reset()
            batch.plan_changed = True
        batch.dirty.update(touched)
        if isinstance(event, LogLine):
            batch.lines.append(self._log(event))
        elif isinstance(event, GateWaiting):
            if event.key in state.gates:
                batch.gates.append(event.key)
        elif isinstance(event, (DeployMeta, PlanReady)):
            batch.meta_changed = True
        elif isinstance(event, Control):
            batch.controls.append(event)
        elif isinstance(event, DeployFinished):
            self.ended = event.at or self.clock()
            batch.finished = event
            batch.meta_changed = True

    def _log(self, event: LogLine) -> LogEntry:
        self.seq += 1
        node = self.state.plan.nodes.get(event.key)
        key = node.key if node is not None else event.key  # one shared string per node
        entry = LogEntry(self.seq, key, event.stream, event.text, event.at)
        # A step's lines live in its host's ring (a step's log is that ring
        # filtered); the host/stage ring and each ancestor's ring hold the entry.
        owner = self.ring_of.get(key, key)
        self._keep(owner, entry)
        for anc in self._ancestors(owner):
            self._keep(anc, entry)
        return entry

    # -- queries ------------------------------------------------------------------

    def label_for(self, key: str):
        """The tree label of one node, from the current state."""
        from tui.labels import node_label

        node = self.plan.nodes[key]
        kind = node.kind
        counts = self.state.counts.get(key) if kind in ("wave", "stage") else None
        current = progress = None
        if kind == "host" and node.status == RUNNING:
            step_key = self.state.current_step.get(key)
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
        return self.host_totals().ok

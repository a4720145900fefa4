"""The stage tree as data: built before anything runs, updated by events.

Node keys read as paths (``release/wave-1/web1/upload``); a node's parent is its key's
prefix. The same :class:`Plan` is used by the engine (to know what to run), the
headless printer, the relay (snapshot for a late joiner) and the TUI (its model);
events change it through the one reducer, :class:`engine.state.RunState`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.events import (
    DONE_STATUSES,
    FAILED,
    OK,
    PENDING,
    RUNNING,
    WAITING,
    PlanReady,
)

# The per-host steps, in the order they run.
HOST_STEPS: tuple[str, ...] = (
    "connect",
    "lock",
    "upload",
    "unpack",
    "link",
    "before",
    "activate",
    "restart",
    "health",
    "rollback",  # runs only when the host failed after activate: back to its previous release
    "cleanup",
)

ROLLBACK_STEPS: tuple[str, ...] = ("connect", "lock", "activate", "restart", "health")


def drained(steps: tuple[str, ...]) -> tuple[str, ...]:
    """``steps`` with ``drain`` (out of rotation) before ``activate`` and ``undrain``
    (back in rotation) after ``health``: a run with a balancer or drain hooks."""
    out: list[str] = []
    for step in steps:
        out += ["drain", step] if step == "activate" else [step]
        out += ["undrain"] if step == "health" else []
    return tuple(out)


@dataclass(slots=True)
class Node:
    key: str
    label: str
    kind: str  # stage | wave | gate | host | step
    status: str = PENDING
    started: float | None = None
    ended: float | None = None
    detail: str = ""
    done: int = 0  # progress (bytes for upload)
    total: int = 0

    @property
    def parent(self) -> str | None:
        head, sep, _ = self.key.rpartition("/")
        return head if sep else None

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    def set_status(self, status: str, at: float, detail: str = "") -> None:
        """What a status event does to a node: times start at the first running (or
        waiting) and end at a done status; an empty detail keeps the previous one
        unless the node is done."""
        self.status = status
        if status in (RUNNING, WAITING) and self.started is None:
            self.started = at
        elif status in DONE_STATUSES:
            self.ended = at
            if self.started is None and status in (OK, FAILED):
                self.started = at
        if detail or status in DONE_STATUSES:
            self.detail = detail

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"key": self.key, "label": self.label, "kind": self.kind}
        if self.status != PENDING:
            data["status"] = self.status
        for attr in ("started", "ended"):
            value = getattr(self, attr)
            if value is not None:
                data[attr] = value
        if self.detail:
            data["detail"] = self.detail
        if self.total:
            data["done"], data["total"] = self.done, self.total
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        return cls(
            key=str(data["key"]),
            label=str(data.get("label", data["key"])),
            kind=str(data.get("kind", "step")),
            status=str(data.get("status", PENDING)),
            started=data.get("started"),
            ended=data.get("ended"),
            detail=str(data.get("detail", "")),
            done=int(data.get("done", 0)),
            total=int(data.get("total", 0)),
        )


@dataclass
class Plan:
    """An ordered map of nodes, parents before children."""

    deploy_id: str
    meta: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    children: dict[str | None, list[str]] = field(default_factory=dict)

    def add(self, key: str, label: str, kind: str) -> Node:
        node = Node(key=key, label=label, kind=kind)
        if node.parent is not None and node.parent not in self.nodes:
            raise KeyError(f"parent of {key!r} is not in the plan")
        self.nodes[key] = node
        self.children.setdefault(node.parent, []).append(key)
        return node

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, key: str) -> Node:
        return self.nodes[key]

    def __contains__(self, key: object) -> bool:
        return key in self.nodes

    def kids(self, key: str | None) -> list[Node]:
        return [self.nodes[k] for k in self.children.get(key, ())]

    def descendants(self, key: str) -> Iterator[Node]:
        for child in self.kids(key):
            yield child
            yield from self.descendants(child.key)

    def depth(self, key: str) -> int:
        return key.count("/")

    def hosts(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "host"]

    def waves(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "wave"]

    def counts(self, key: str) -> dict[str, int]:
        """Status counts of the host nodes under ``key`` (or of its children if none)."""
        under = [n for n in self.descendants(key) if n.kind == "host"] or self.kids(key)
        out: dict[str, int] = {}
        for n in under:
            out[n.status] = out.get(n.status, 0) + 1
        return out

    # -- events -------------------------------------------------------------

    def to_event(self) -> PlanReady:
        return PlanReady(
            deploy_id=self.deploy_id,
            nodes=[n.to_json() for n in self.nodes.values()],
            meta=dict(self.meta),
        )

    @classmethod
    def from_event(cls, event: PlanReady) -> Plan:
        plan = cls(deploy_id=event.deploy_id, meta=dict(event.meta))
        for data in event.nodes:
            node = Node.from_json(data)
            plan.nodes[node.key] = node
            plan.children.setdefault(node.parent, []).append(node.key)
        return plan

    def snapshot(self) -> PlanReady:
        """The plan with the current state of every node (for a late joiner)."""
        return self.to_event()


def host_key(wave: int, host: str) -> str:
    return f"release/wave-{wave}/{host}"


def _host_steps(steps: tuple[str, ...], *, drain: bool, secrets: bool) -> tuple[str, ...]:
    """A host's steps with drain/undrain (``drain``) and secrets (after ``lock``)."""
    steps = drained(steps) if drain else steps
    if secrets:
        at = steps.index("lock") + 1 if "lock" in steps else 0
        steps = (*steps[:at], "secrets", *steps[at:])
    return steps


def _add_wave(plan: Plan, number: int, label: str, hosts: list[str], steps: tuple[str, ...]) -> None:
    wkey = f"release/wave-{number}"
    plan.add(wkey, label, "wave")
    for host in hosts:
        hkey = f"{wkey}/{host}"
        plan.add(hkey, host, "host")
        for step in steps:
            plan.add(f"{hkey}/{step}", step, "step")


def build_plan(
    deploy_id: str,
    waves: Iterable[Iterable[str]],
    *,
    meta: dict[str, Any] | None = None,
    build: bool = True,
    gates: Iterable[int] = (),
    steps: tuple[str, ...] = HOST_STEPS,
    wave_labels: Iterable[str] | None = None,
    with_source: bool = True,
    drain: bool = False,
    once: str = "",
    secrets: bool = False,
) -> Plan:
    """Build the deploy tree: fetch, build, package, release -> waves -> hosts -> steps.

    ``gates`` lists the 1-based wave numbers followed by an approval gate; ``drain``
    adds each host's drain and undrain steps (:func:`drained`); ``once`` labels the
    run-once stage (``release/once``, before the waves); ``secrets`` adds the
    ``secrets`` stage (the env file made, after ``package``) and each host's
    ``secrets`` step (it written, after ``lock``).
    """
    steps = _host_steps(steps, drain=drain, secrets=secrets)
    plan = Plan(deploy_id=deploy_id, meta=dict(meta or {}))
    stages = ["fetch", "build", "package"] if with_source else []
    for stage in [*stages, *(["secrets"] if secrets else []), "release"]:
        plan.add(stage, stage, "stage")
    if once:
        plan.add("release/once", once, "stage")
    waves = [list(w) for w in waves]
    labels = list(wave_labels) if wave_labels is not None else []
    labels += [f"wave {i}" for i in range(len(labels) + 1, len(waves) + 1)]
    gate_after = set(gates)
    for number, hosts in enumerate(waves, start=1):
        _add_wave(plan, number, labels[number - 1], hosts, steps)
        if number in gate_after and number < len(waves):
            plan.add(f"release/gate-{number}", f"gate after wave {number}", "gate")
    if not build and with_source:
        plan["build"].detail = "no build commands"
    return plan

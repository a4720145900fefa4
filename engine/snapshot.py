"""A :class:`engine.state.RunState` as a snapshot and back: what a late joiner of a
room, a restarted relay and the history read instead of replaying events.

:func:`snapshot` writes ``{"deploy_id", "plan", "finished", "gates", "logs",
"maintenance", "outgoing", "transfers", "approvals"}``; :func:`restore` reads it
into a state whose plan is loaded, keeping only what reads (gates of the plan,
approvals ``by`` a string, events that decode), within the state's bounds.
Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.bounds import shrink_json
from engine.events import DeployFinished, MaintenanceChanged, Transfer, event_from_json

if TYPE_CHECKING:
    from engine.state import RunState

#: approvals kept per gate (a gate needs at most 100; a bound on what a stranger sends)
MAX_APPROVALS = 100


def snapshot(state: RunState) -> dict[str, Any]:
    """The snapshot: ``plan`` is a plan event whose nodes carry their current state,
    ``finished`` the finished event's dict (or None), ``gates`` the waiting gates'
    keys, ``logs`` the kept log events' dicts, oldest first, ``maintenance`` the
    latest maintenance event's dict (or None), ``outgoing`` the kept what-goes-out
    cards by key, ``transfers`` the hosts' transfer events, ``approvals`` (when any)
    who approved which gate."""
    finished = state._finished_json
    if finished is None and state.finished is not None:
        finished = state.finished.to_json()
    data = {
        "deploy_id": state.plan.deploy_id,
        "plan": state.plan.snapshot().to_json(),
        "finished": finished,
        "gates": sorted(state.gates),
        "logs": list(state.logs),
        "maintenance": None if state.maintenance is None else state.maintenance.to_json(),
        "outgoing": dict(state.outgoing),
        "transfers": dict(state.transfers),
    }
    if state.approvals:
        data["approvals"] = {k: [dict(a) for a in v] for k, v in state.approvals.items()}
    return data


def restore(state: RunState, data: dict[str, Any]) -> None:
    """What a snapshot holds besides the plan, into ``state`` (its plan loaded)."""
    for line in data.get("logs") or ():
        if isinstance(line, dict) and line.get("type") == "log":
            state._keep_log(line)
    state.gates = {
        key: None for key in data.get("gates") or () if isinstance(key, str) and key in state.plan
    }
    _approvals(state, data.get("approvals"))
    _finished(state, data.get("finished"))
    maintenance = _decoded(data.get("maintenance"), MaintenanceChanged)
    if maintenance is not None:
        state._maintenance(maintenance)
    outgoing = data.get("outgoing")
    if isinstance(outgoing, dict):
        for key, changes in outgoing.items():
            state._keep_outgoing(key, changes)
    transfers = data.get("transfers")
    for saved in transfers.values() if isinstance(transfers, dict) else ():
        event = _decoded(saved, Transfer)
        if event is not None:
            state._transfer(event, None)


def _decoded(saved: Any, kind: type[Any]) -> Any:
    """``saved`` as an event of ``kind``, or None if it does not read as one."""
    if not isinstance(saved, dict):
        return None
    try:
        event = event_from_json(saved)
    except ValueError:
        return None
    return event if isinstance(event, kind) else None


def _approvals(state: RunState, saved: Any) -> None:
    """A snapshot's approvals, those that read (gates of the plan, ``by`` a string)."""
    if not isinstance(saved, dict):
        return
    for key, given in saved.items():
        if key not in state.plan or not isinstance(given, list):
            continue
        kept = [
            {"by": a["by"], "at": a.get("at") if isinstance(a.get("at"), (int, float)) else 0.0}
            for a in given[:MAX_APPROVALS]
            if isinstance(a, dict) and isinstance(a.get("by"), str)
        ]
        if kept:
            state.approvals[key] = kept


def _finished(state: RunState, saved: Any) -> None:
    """A snapshot's finished event, if it reads as one (else none)."""
    event = _decoded(saved, DeployFinished)
    if event is not None:
        state.finished = event
        bounds = state.bounds
        state._finished_json = shrink_json(saved, bounds.finished_bytes) if bounds else saved

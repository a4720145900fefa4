"""A run's approval gates: after a wave, the next one starts only once approved
(``deploy.approve``), or the run stops when an abort comes first.

Four eyes (:mod:`engine.approvals`): a gate may need several distinct approvers, none
of them the deploying operator; an approval the rule does not count is refused
(:class:`~engine.approvals.ApprovalRefused`) and the gate keeps waiting. Every
approval counted is a ``control`` event (who, which gate, when): the transcript, the
room and the history's summary (``approvals``) keep it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from engine.approvals import ApprovalRefused, ApprovalRule
from engine.events import CANCELLED, OK, PENDING, SKIPPED, WAITING, Control, GateWaiting, now

if TYPE_CHECKING:
    from engine.run import Run

__all__ = ["ApprovalRefused", "ApprovalRule", "Gates", "gate_key"]


def gate_key(index: int) -> str:
    """The plan key of the gate after wave ``index`` (from 1)."""
    return f"release/gate-{index}"


class Gates:
    """The gates of ``run``: which one waits, and the approvals given."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.rule = ApprovalRule.of(run.config.deploy)
        self._approvals: dict[str, asyncio.Event] = {}
        #: who approved each gate, in order, with when (``{"by", "at"}``)
        self.given: dict[str, list[dict[str, Any]]] = {}
        #: the key of the gate waiting for an approval, if one does
        self.waiting: str | None = None

    def approve(self, by: str = "", key: str | None = None) -> bool:
        """Approve the waiting gate (or ``key``) as ``by`` (default: the deploying
        operator). Returns False if no gate waits. Raises :class:`ApprovalRefused`
        (said in the run's log too) when the rule does not count this approval; the
        gate keeps waiting."""
        run = self.run
        key = key or self.waiting
        if key is None or key not in self._approvals:
            return False
        event = self._approvals[key]
        if event.is_set():
            return False
        by = by or run.operator
        given = self.given.setdefault(key, [])
        why = self.rule.refusal(run.operator, by, [g["by"] for g in given])
        if why is not None:
            if by == run.operator and not self.others_can_approve():
                why += "; this run has no relay, so no other operator can approve it"
            run.log(key, f"approval refused: {why}", "stderr")
            raise ApprovalRefused(why)
        at = now()
        given.append({"by": by, "at": at})
        run.emit(Control(run.deploy_id, action="approve", by=by, key=key, at=at))
        if len(given) >= self.rule.count:
            event.set()
        else:
            left = self.rule.count - len(given)
            run.status(
                key,
                WAITING,
                f"approved by {', '.join(g['by'] for g in given)}; {left} more "
                f"({self.rule.text()})",
            )
        return True

    def others_can_approve(self) -> bool:
        """Whether other operators can approve (through the configured relay)."""
        run = self.run
        return run.config.relay is not None and not run.without_relay

    def close(self, index: int, status: str) -> None:
        """Close the gate after wave ``index`` (if the plan has one still open)."""
        key, plan = gate_key(index), self.run.plan
        if key in plan and plan[key].status in (PENDING, WAITING):
            self.run.status(key, status)

    async def wait(self, index: int) -> None:
        """Wait at the gate after wave ``index`` until it is approved or the run aborts."""
        run, key = self.run, gate_key(index)
        if key not in run.plan:
            return
        if run.aborting or run.stop_reason:
            self.close(index, CANCELLED if run.aborting else SKIPPED)
            return
        approved = self._approvals.setdefault(key, asyncio.Event())
        self.waiting = key
        waiting = "waiting for approval"
        if self.rule != ApprovalRule():
            waiting = f"waiting for {self.rule.needs()} ({self.rule.text()})"
        run.status(key, WAITING, waiting)
        run.emit(GateWaiting(run.deploy_id, key=key, at=now()))
        aborted = asyncio.ensure_future(run.abort_event.wait())
        approval = asyncio.ensure_future(approved.wait())
        await asyncio.wait({aborted, approval}, return_when=asyncio.FIRST_COMPLETED)
        aborted.cancel()
        approval.cancel()
        self.waiting = None
        if approved.is_set():
            run.status(key, OK, "approved")
        else:
            run.status(key, CANCELLED, run.stop_reason)

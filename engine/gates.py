"""A run's approval gates: after a wave, the next one starts only once an operator
approves (``deploy.gates``), or the run stops when an abort comes first.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from engine.events import CANCELLED, OK, PENDING, SKIPPED, WAITING, Control, GateWaiting, now

if TYPE_CHECKING:
    from engine.run import Run


def gate_key(index: int) -> str:
    """The plan key of the gate after wave ``index`` (from 1)."""
    return f"release/gate-{index}"


class Gates:
    """The gates of ``run``: which one waits, and the approvals given."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._approvals: dict[str, asyncio.Event] = {}
        #: the key of the gate waiting for an approval, if one does
        self.waiting: str | None = None

    def approve(self, by: str = "", key: str | None = None) -> bool:
        """Approve the waiting gate (or ``key``). Returns False if no gate waits."""
        run = self.run
        key = key or self.waiting
        if key is None or key not in self._approvals:
            return False
        event = self._approvals[key]
        if event.is_set():
            return False
        run.emit(Control(run.deploy_id, action="approve", by=by or run.operator, key=key, at=now()))
        event.set()
        return True

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
        run.status(key, WAITING, "waiting for approval")
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

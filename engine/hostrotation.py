"""One host's place in rotation during a run: a ``deploy.max_unavailable`` slot, and
the balancer's drain before the switch and undrain once healthy (``[balancer]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import Interrupted, StepFailed
from engine.events import CANCELLED, SKIPPED, WAITING
from engine.hostlock import Aborted

if TYPE_CHECKING:
    from engine.run import Run


class Rotation:
    """Whether host ``name`` (plan node ``key``) is out of rotation or holds a slot."""

    def __init__(self, run: Run, key: str, name: str) -> None:
        self.run = run
        self.key = key
        self.name = name
        #: out of rotation (drained) by this run; holding a ``max_unavailable`` slot
        self.drained = False
        self.slot = False

    def _status(self, step: str, status: str, detail: str = "") -> None:
        self.run.status(f"{self.key}/{step}", status, detail)

    async def take_out(self, env: dict[str, str]) -> None:
        """Before the switch: wait for a ``max_unavailable`` slot, then drain the host
        (when the run has a balancer). Raises Aborted, StepFailed."""
        sem, balancer = self.run.unavailable, self.run.balancer
        if sem is not None and not self.slot:
            if sem.locked():
                limit = self.run.config.deploy.max_unavailable
                step = "drain" if balancer is not None else "activate"
                self._status(step, WAITING, f"waiting: max_unavailable = {limit}")
            await sem.acquire()
            self.slot = True
            if self.run.aborting:
                raise Aborted()
        if balancer is not None:
            if self.run.aborting:
                raise Aborted()
            spec = self.run._spec(self.name)
            self.drained = True  # from the first command on (a failed drain is undone)
            work = balancer.drain(spec, env, self.run.abort_event)
            try:
                await self.run.step(f"{self.key}/drain", work)
            except Interrupted as exc:  # an abort while sessions ended: back in rotation
                self.drained = False
                self._status("drain", CANCELLED, str(exc))
                raise Aborted() from None

    async def put_back(self, env: dict[str, str], *, quiet: bool = False) -> None:
        """Undrain a host this run drained, then give back its slot. Raises StepFailed
        (unless ``quiet``: then the failure is logged)."""
        balancer = self.run.balancer
        if self.drained and balancer is not None:
            spec = self.run._spec(self.name)
            work = balancer.undrain(spec, env)
            try:
                await self.run.step(f"{self.key}/undrain", work, shielded=True)
            except StepFailed as exc:
                if not quiet:
                    raise
                self.run.log(self.key, f"could not put back in rotation: {exc}", "stderr")
                return
            self.drained = False
        self.free_slot()

    def free_slot(self) -> None:
        """Give back the host's ``max_unavailable`` slot, if it holds one."""
        if self.slot and self.run.unavailable is not None:
            self.run.unavailable.release()
            self.slot = False

    def left_out(self) -> str:
        """A failed host this run drained stays out of rotation: say so (the text to
        add to its reason, "" when it was not drained)."""
        if not self.drained:
            return ""
        self._status("undrain", SKIPPED, "left out of rotation")
        self.run.log(self.key, "left out of rotation (drained)", "stderr")
        return "; left out of rotation"

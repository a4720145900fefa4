"""How one host's release ends, decided in one place (:meth:`HostOutcome._guarded`),
for a deploy and a rollback alike. One of four ways:

- failed before activate: ``current`` is as it was; the host failed;
- lost after activate: the connection broke once the switch may have run; nothing
  is claimed (the host's own ``current`` and revisions.log are the truth);
- unhealthy after activate: a deploy switches the host back to its previous release;
- aborted: the host is cancelled (a host already switched and healthy is deployed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from engine.errors import Interrupted, LockHeld, StepFailed
from engine.events import CANCELLED, FAILED, OK, RUNNING, SKIPPED
from engine.hostchecks import HostChecks
from engine.hostlock import Aborted, HostState
from engine.hostrotation import Rotation
from engine.session import SSHError

if TYPE_CHECKING:
    from engine.run import Run

log = logging.getLogger("shipdeck.engine")


class Lost(Exception):
    """The connection broke once the switch may have run."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Unhealthy(Exception):
    """The host is switched but unhealthy (or a restart hook failed)."""

    def __init__(self, cause: StepFailed) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Deployed(Exception):
    """Switched and healthy when an abort came: the host is deployed, cleanup skipped."""

    def __init__(self, release_id: str) -> None:
        super().__init__(release_id)
        self.release_id = release_id


class HostOutcome(HostChecks):
    """The ending of one host's release (see the module's docstring)."""

    def __init__(self, run: Run, st: HostState) -> None:
        super().__init__(run, st)
        #: the flow wrote revisions.log and released the lock itself
        self._finished = False
        #: the environment of the release being deployed (a switch back starts from it)
        self._env: dict[str, str] = {}
        #: the host's place in rotation (drained, a ``max_unavailable`` slot)
        self.rotation = Rotation(run, st.key, st.name)

    def _fail(self, reason: str, *, outcome: str = "failed") -> None:
        """The host failed (``outcome`` in revisions.log): it counts against the budget."""
        st = self.st
        reason += self.rotation.left_out()
        st.status, st.outcome, st.reason = FAILED, outcome, reason
        self.run.budget.fail(st.name, reason)
        self.run.close_host(self.key, FAILED, reason)

    async def _guarded(
        self,
        flow: Awaitable[None],
        finish: Callable[[], Awaitable[None]],
        *,
        partial: bool = False,
    ) -> None:
        """Run the host's ``flow``; however it ends, end the host in one of the four
        ways (module docstring), then ``finish`` on the host unless the flow did.
        ``partial``: a flow that ends without error leaves the host going (not finished)."""
        st = self.st
        self.run.status(self.key, RUNNING)
        try:
            await flow
        except Aborted:
            st.status, st.outcome = CANCELLED, "cancelled"
            self.run.close_host(self.key, CANCELLED, self.run.stop_reason or "aborted")
        except Deployed as exc:
            st.status, st.outcome = OK, "ok"
            self._status("cleanup", CANCELLED, "skipped: aborted")
            self.run.close_host(self.key, OK, f"{exc.release_id} (cleanup skipped: aborted)")
        except Lost as exc:
            self._lost_after_activate(exc.cause)
        except Unhealthy as exc:
            await self._unhealthy(exc.cause)
        except StepFailed as exc:
            if isinstance(exc, LockHeld) and not self.run.stop_reason:
                self.run.stop_reason = f"{st.name}: {exc}"
            self._fail(str(exc))
        except Exception as exc:  # a bug or an unexpected library error: this host fails
            log.exception("host %s failed unexpectedly", st.name)
            self._fail(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self.rotation.free_slot()
            going = partial and st.status not in (OK, FAILED, CANCELLED)
            if st.host is not None and not self._finished and not going:
                await asyncio.shield(finish())

    def _lost_after_activate(self, exc: BaseException) -> None:
        """The connection broke once the switch may have run: say so, claim nothing.
        The host's own ``current`` and revisions.log are the truth (the next deploy,
        ``--dry-run`` and the TUI read them); its lock goes stale (no heartbeat)."""
        self.stop_heartbeat()
        during = self._step_status("activate") != OK
        reason = f"unknown: lost {'during' if during else 'after'} activate ({exc})"
        self.run.log(self.key, reason, "stderr")
        self._fail(reason, outcome="unknown")

    async def _unhealthy(self, exc: StepFailed) -> None:
        """The host is switched but unhealthy (or restart failed): roll it back."""
        st = self.st
        d = self.run.config.deploy
        reason = str(exc)
        st.status, st.reason, st.outcome = FAILED, reason, "failed"
        self.run.budget.fail(st.name, reason)
        rollback = "rollback"
        if d.rollback_on_failure and st.current:
            self._status(rollback, RUNNING, f"to {st.current}")
            env = {
                **self._env,
                "SHIPDECK_RELEASE": st.current,
                "SHIPDECK_RELEASE_DIR": f"{st.path}/releases/{st.current}",
            }
            detail = await self._switch_back(st.current, env)
            reason = f"{exc}; {detail}"
            healthy = "(healthy)" in detail
            st.outcome = "rolled-back" if healthy else "rollback-failed"
            self._status(
                rollback, OK if healthy else FAILED, f"to {st.current}" if healthy else detail
            )
            if healthy and isinstance(exc, Interrupted):  # aborted, not found unhealthy
                await self.rotation.put_back(env, quiet=True)
        elif d.rollback_on_failure:
            reason = f"{exc}; no previous release to roll back to"
            self._status(rollback, SKIPPED, "no previous release")
        reason += self.rotation.left_out()
        st.reason = reason
        self.run.close_host(self.key, FAILED, reason)

    async def _switch_back(self, target: str, env: dict[str, str]) -> str:
        """A deploy's host is unhealthy: switch it back to ``target``, restart and check
        it. Returns what happened, ``(healthy)`` in it when it is healthy again."""
        key = f"{self.key}/rollback" if f"{self.key}/rollback" in self.run.plan else self.key
        self.run.log(key, f"rolling back to {target}", "stderr")
        try:
            await self.switch(target)
        except StepFailed as exc:
            return f"rollback to {target} failed: {str(exc).split(': ', 1)[-1][:200]}"
        except SSHError as exc:  # never say "rolled back" unless the switch was confirmed
            return f"rollback to {target} not confirmed ({exc}): unknown"
        self.run.log(key, f"current -> releases/{target} (rolled back)")
        cur = f"{self.st.path}/current"
        try:
            await self.restart(key, env)
            # after an abort, one check says how the old release is; no retries
            healthy, detail = await self.health(key, cur, env, once=self.run.aborting)
        except (StepFailed, SSHError) as exc:
            return f"rolled back to {target}, but: {exc}"
        self.run.log(
            key,
            f"rollback to {target}: {'healthy' if healthy else 'UNHEALTHY'}",
            "info" if healthy else "stderr",
        )
        return f"rolled back to {target} ({'healthy' if healthy else 'unhealthy: ' + detail})"

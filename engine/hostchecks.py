"""The remote commands a host's release runs outside its phases, each fenced by the
run's lock: a hook, the restart hooks, the health check (retried until healthy or
``deploy.health_timeout``), and the switch of ``current`` to a release.
"""

from __future__ import annotations

import time

from engine.errors import Interrupted, StepFailed
from engine.hostphase import HostPhase
from engine.remote.hooks import client_timeout, failure_line, hooks_script
from engine.remote.lock import fenced, refused_line
from engine.remote.release import activate_script
from engine.session import CommandTimeout


class HostChecks(HostPhase):
    """Hooks, health checks and the switch on one locked host."""

    async def run_hook(
        self, key: str, cwd: str, command: str, env: dict[str, str], timeout: float
    ) -> None:
        """Run one hook while this run's lock still holds (checked in the same remote
        script). Raises StepFailed with what it said, CommandTimeout, SSHError."""
        self.run.log(key, f"$ {command}")
        script = fenced(
            self.st.path,
            self.run.deploy_id,
            hooks_script(cwd, (command,), env, echo=False, timeout=timeout),
        )
        res = await self.host.run(
            script, on_line=self.run.line_handler(key), timeout=client_timeout(timeout)
        )
        if res.ok:
            return
        taken = refused_line(res.stdout)
        if taken:
            raise StepFailed(f"`{command}` refused: {taken[:200]}")
        last = failure_line(res.stdout, res.stderr, res.exit_status)
        raise StepFailed(f"`{command}` exited {res.exit_status}" + (f": {last}" if last else ""))

    async def restart(self, key: str, env: dict[str, str]) -> str:
        """The after_activate hooks, in ``current``. Raises as :meth:`run_hook`."""
        d = self.run.config.deploy
        for command in d.after_activate:
            await self.run_hook(key, f"{self.st.path}/current", command, env, d.hook_timeout)
        return f"{len(d.after_activate)} hook(s)"

    async def health(
        self,
        key: str,
        cwd: str,
        env: dict[str, str],
        *,
        tried: int = 0,
        abortable: bool = False,
        once: bool = False,
    ) -> tuple[bool, str]:
        """Retry the health check until healthy or ``health_timeout``: (healthy, detail).
        With ``abortable``, an abort stops the retries (and a check that runs): the
        host counts as unhealthy. ``once``: one check, no retries."""
        d = self.run.config.deploy
        if not d.health:
            return True, ""
        deadline = time.monotonic() + d.health_timeout
        attempt, last = tried, ""
        if tried:
            await self.run.pause(d.health_interval, abortable)
        while True:
            if abortable and self.run.aborting:
                stop = self.run.stop_reason or "aborted"
                return False, f"{stop} while unhealthy ({last or 'not healthy yet'})"
            attempt += 1
            remaining = max(0.5, deadline - time.monotonic())
            try:
                last = await self._check(key, cwd, env, remaining, abortable)
            except Interrupted:
                return False, f"{self.run.stop_reason or 'aborted'} during a health check"
            if not last:
                return True, f"healthy after {attempt} attempt{'s' if attempt > 1 else ''}"
            if once:
                return False, f"unhealthy: {last}"
            if time.monotonic() + d.health_interval >= deadline:
                return False, f"unhealthy after {attempt} attempts in {d.health_timeout:g}s: {last}"
            await self.run.pause(d.health_interval, abortable)

    async def _check(
        self, key: str, cwd: str, env: dict[str, str], timeout: float, abortable: bool
    ) -> str:
        """One health check: ``""`` when healthy, else what it said."""
        d = self.run.config.deploy
        script = hooks_script(cwd, (d.health,), env, echo=False, timeout=timeout)
        run = self.host.run(
            script, on_line=self.run.line_handler(key), timeout=client_timeout(timeout)
        )
        try:
            res = await (self.run.abortable(self.host, run) if abortable else run)
        except CommandTimeout:
            return "health command timed out"
        if res.ok:
            return ""
        return failure_line(res.stdout, res.stderr, res.exit_status) or f"exit {res.exit_status}"

    async def switch(self, target: str) -> str:
        """Point ``current`` at release ``target`` (fenced by the lock). Raises
        StepFailed (refused: the lock names another run; or failed), SSHError."""
        st = self.st
        script = fenced(st.path, self.run.deploy_id, activate_script(st.path, target))
        res = await self.host.run(script, timeout=60)
        if not res.ok:
            taken = refused_line(res.stdout)
            if taken:
                raise StepFailed(f"switch refused: {taken[:200]}")
            raise StepFailed(f"switch failed: {(res.stderr or res.stdout).strip()[:300]}")
        return f"current -> {target}"

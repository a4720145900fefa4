"""One host's release within a run: connect, lock, stage, switch, settle, roll back.

A :class:`HostRelease` is made for every selected host when a run builds its plan.
The run locks every host first (:meth:`HostRelease.lock`), then, wave by wave,
deploys it (:meth:`HostRelease.deploy`) or rolls it back
(:meth:`HostRelease.roll_back`). Both end the host in one of four ways, decided in
one place (:meth:`HostRelease._guarded`):

- failed before activate: ``current`` is as it was; the host failed;
- lost after activate: the connection broke once the switch may have run; nothing
  is claimed (the host's own ``current`` and revisions.log are the truth);
- unhealthy after activate: a deploy switches the host back to its previous release;
- aborted: the host is cancelled (a host already switched and healthy is deployed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import ConnectionLost, Interrupted, LockHeld, StepFailed
from engine.events import CANCELLED, FAILED, OK, PENDING, RUNNING, SKIPPED, WAITING
from engine.hostlock import Aborted, HostState
from engine.hostphase import HostPhase
from engine.remote.hooks import client_timeout, failure_line, hooks_script
from engine.remote.lock import fenced, refused_line
from engine.remote.release import (
    activate_script,
    cleanup_script,
    finish_script,
    link_script,
    receive_script,
    unpack_script,
)
from engine.remote.revisions import (
    parse_releases,
    previous_release,
    releases_script,
    sha_of_release,
)
from engine.session import CommandTimeout, SSHError, q

if TYPE_CHECKING:
    from engine.build import Package
    from engine.run import Run

log = logging.getLogger("shipdeck.engine")


class _Lost(Exception):
    """The connection broke once the switch may have run."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Unhealthy(Exception):
    """The host is switched but unhealthy (or a restart hook failed)."""

    def __init__(self, cause: StepFailed) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Deployed(Exception):
    """Switched and healthy when an abort came: the host is deployed, cleanup skipped."""

    def __init__(self, release_id: str) -> None:
        super().__init__(release_id)
        self.release_id = release_id


@dataclass(frozen=True)
class Release:
    """What a deploy ships: the release id, its commit, the package."""

    release_id: str
    sha: str
    package: Package


class HostRelease(HostPhase):
    """One host's part of a run (see the module's docstring)."""

    def __init__(self, run: Run, st: HostState) -> None:
        super().__init__(run, st)
        #: the flow wrote revisions.log and released the lock itself
        self._finished = False
        #: the environment of the release being deployed (a switch back starts from it)
        self._env: dict[str, str] = {}
        #: out of rotation (drained) by this run; holding a ``max_unavailable`` slot
        self._drained = False
        self._slot = False
        #: staged (upload .. before) ahead of the switch, for the run-once stage
        self.staged = False

    # -- bookkeeping -----------------------------------------------------------

    def _fail(self, reason: str, *, outcome: str = "failed") -> None:
        st = self.st
        reason += self._left_out()
        st.status, st.outcome, st.reason = FAILED, outcome, reason
        self.run.budget.fail(st.name, reason)
        self.run.close_host(self.key, FAILED, reason)

    def env(self, release_id: str, sha: str) -> dict[str, str]:
        """The environment of the host's hooks and health checks for ``release_id``."""
        st = self.st
        return {
            "SHIPDECK_RELEASE": release_id,
            "SHIPDECK_RELEASE_DIR": f"{st.path}/releases/{release_id}",
            "SHIPDECK_DEPLOY_PATH": st.path,
            "SHIPDECK_SHA": sha,
            "SHIPDECK_PREVIOUS": st.current,
            "SHIPDECK_OPERATOR": self.run.operator,
        }

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
        except _Deployed as exc:
            st.status, st.outcome = OK, "ok"
            self._status("cleanup", CANCELLED, "skipped: aborted")
            self.run.close_host(self.key, OK, f"{exc.release_id} (cleanup skipped: aborted)")
        except _Lost as exc:
            self._lost_after_activate(exc.cause)
        except _Unhealthy as exc:
            await self._unhealthy(exc.cause)
        except StepFailed as exc:
            if isinstance(exc, LockHeld) and not self.run.stop_reason:
                self.run.stop_reason = f"{st.name}: {exc}"
            self._fail(str(exc))
        except Exception as exc:  # a bug or an unexpected library error: this host fails
            log.exception("host %s failed unexpectedly", st.name)
            self._fail(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self._free_slot()
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
                await self._put_back(env, quiet=True)
        elif d.rollback_on_failure:
            reason = f"{exc}; no previous release to roll back to"
            self._status(rollback, SKIPPED, "no previous release")
        reason += self._left_out()
        st.reason = reason
        self.run.close_host(self.key, FAILED, reason)

    # -- deploy ----------------------------------------------------------------

    async def deploy(self, release: Release) -> None:
        """Deploy ``release`` to the host, locked already (the fleet lock phase), in two
        remote commands: upload (over the command's own stdin) + unpack + link +
        before; activate + restart + health + cleanup + revisions.log + unlock. Each
        reports every step's start and end, so the tree keeps per-step status."""

        async def finish() -> None:
            outcome = self.st.outcome or self.st.status
            await self.finish(self.run.revision(release.release_id, release.sha, outcome))

        await self._guarded(self._deploy(release), finish)

    async def prepare(self, release: Release) -> None:
        """Only stage ``release`` (upload, unpack, link, before), for the run-once stage
        that waits for every host; :meth:`deploy` goes on from there. A host that fails
        here ends as a deploy's host does."""

        async def finish() -> None:
            outcome = self.st.outcome or self.st.status
            await self.finish(self.run.revision(release.release_id, release.sha, outcome))

        await self._guarded(self._prepare(release), finish, partial=True)

    async def _prepare(self, release: Release) -> None:
        st = self.st
        self._check_held()
        if self.run.aborting:
            raise Aborted()
        if st.current == release.release_id:
            raise StepFailed(
                f"release {release.release_id} is the live release on this host "
                "(the same sha deployed within the same second); retry in a second"
            )
        env = self._env = self.env(release.release_id, release.sha)
        self._remove = release.release_id
        await self._stage(release, env)
        self.staged = True

    async def unstage(self) -> None:
        """The run stops before any switch: drop the staged release, give the lock back."""
        await self.finish("")

    async def run_once(self, release: Release) -> str:
        """``deploy.once`` on this (staged, locked) host, in the new release. Raises
        StepFailed, SSHError."""
        d = self.run.config.deploy
        cwd = f"{self.st.path}/releases/{release.release_id}"
        for command in d.once:
            await self.run_hook("release/once", cwd, command, self._env, d.hook_timeout)
        return f"{len(d.once)} command(s) on {self.st.name}"

    async def _deploy(self, release: Release) -> None:
        st = self.st
        if not self.staged:
            await self._prepare(release)
        self._check_held()
        env = self._env
        if self.run.aborting:
            raise Aborted()
        try:
            await self._take_out(env)
            if self.run.aborting:
                raise Aborted()
            # from here on the new release may be live: it is never removed (finish_script
            # also refuses to remove `current`)
            self._remove = None
            done = await self._switch(release, env)
        except (Aborted, StepFailed):  # nothing switched: back in rotation
            await self._put_back(env, quiet=True)
            raise
        st.activated = True
        if "finish" not in done:
            await self._settle(release, env)
        self.stop_heartbeat()
        st.locked = False
        st.status, st.outcome = OK, "ok"
        self._finished = True
        self.run.close_host(self.key, OK, release.release_id)

    async def _stage(self, release: Release, env: dict[str, str]) -> None:
        """Phase 1: upload, unpack, link, before -- nothing live changes."""
        st, d, pkg = self.st, self.run.config.deploy, release.package
        steps: list[tuple[str, str]] = []
        upload = st.artifact_sha != pkg.sha256
        if upload:
            steps.append(("upload", receive_script(st.path, pkg.sha256, pkg.size)))
        else:
            self._status("upload", SKIPPED, f"already on host ({pkg.sha256[:12]})")
        steps.append(
            ("unpack", unpack_script(st.path, pkg.sha256, release.release_id, release.sha))
        )
        if d.shared:
            steps.append(("link", link_script(st.path, release.release_id, d.shared)))
        else:
            self._status("link", SKIPPED, "no shared entries")
        if d.before_activate:
            rel = f"{st.path}/releases/{release.release_id}"
            hooks = hooks_script(rel, d.before_activate, env, timeout=d.hook_timeout)
            steps.append(("before", hooks))
        else:
            self._status("before", SKIPPED, "no hooks")
        steps = [(name, self._fence(name, script)) for name, script in steps]
        try:
            timeout = self.run.config.ssh.command_timeout
            await self._phase(steps, timeout, upload=pkg if upload else None)
        except Interrupted:
            raise Aborted() from None  # nothing live changed
        except StepFailed as exc:
            if upload and self._step_status("upload") == FAILED:
                raise StepFailed(f"{exc}{await self._free_space_hint(pkg)}") from None
            raise

    def _tail(self, release: Release) -> list[tuple[str, str]]:
        """Cleanup, then revisions.log and unlock: what a healthy host ends with."""
        st, d = self.st, self.run.config.deploy
        line = self.run.revision(release.release_id, release.sha, "ok")
        deploy_id = self.run.deploy_id
        protect = [release.release_id, st.current]
        return [
            ("cleanup", cleanup_script(st.path, d.keep_releases, protect, deploy_id)),
            (
                "finish",
                finish_script(st.path, line, unlock=True, remove_release=None, deploy_id=deploy_id),
            ),
        ]

    async def _switch(self, release: Release, env: dict[str, str]) -> set[str]:
        """Phase 2: activate, restart, the first health check, then (healthy) cleanup,
        revisions.log and unlock. An abort during restart or health stops them and
        the host is rolled back; activate, cleanup and finish complete. Returns the
        steps that completed."""
        st, d = self.st, self.run.config.deploy
        cur = f"{st.path}/current"
        steps = [("activate", activate_script(st.path, release.release_id))]
        if d.after_activate:
            steps.append(
                ("restart", hooks_script(cur, d.after_activate, env, timeout=d.hook_timeout))
            )
        else:
            self._status("restart", SKIPPED, "no hooks")
        if d.health:
            health = hooks_script(cur, (d.health,), env, echo=False, timeout=d.health_timeout)
            steps.append(("health", health))
        else:
            self._status("health", SKIPPED, "no health check")
        steps = [(name, self._fence(name, script)) for name, script in steps]
        timeout = d.hook_timeout * max(1, len(d.after_activate)) + d.health_timeout + 120
        done: set[str] = set()
        # a drained host is put back in rotation (by _settle) before its cleanup
        tail = self._tail(release) if self.run.balancer is None else []
        try:
            await self._phase(steps + tail, timeout, keep_running={"health"}, done=done)
        except ConnectionLost as exc:
            if self._step_status("activate") == PENDING:
                raise  # lost before the switch: current is as it was
            raise _Lost(exc) from None
        except StepFailed as exc:
            if self._step_status("activate") == OK:
                st.activated = True
            if not st.activated:
                raise
            raise _Unhealthy(exc) from None
        return done

    async def _settle(self, release: Release, env: dict[str, str]) -> None:
        """The first health check failed (retry until ``health_timeout``), or the
        phase ended early: finish with cleanup, revisions.log and unlock."""
        d = self.run.config.deploy
        try:
            if d.health and self._step_status("health") == RUNNING:
                cur = f"{self.st.path}/current"
                healthy, detail = await self.health(
                    f"{self.key}/health", cur, env, tried=1, abortable=True
                )
                if not healthy:
                    self._status("health", FAILED, detail)
                    raise _Unhealthy(StepFailed(detail))
                self._status("health", OK, detail)
            try:
                await self._put_back(env)
            except StepFailed as exc:
                raise StepFailed(f"{exc} ({release.release_id} is live and healthy)") from None
            if self.run.aborting:
                raise _Deployed(release.release_id)
            await self._phase(self._tail(release), 120)
        except (ConnectionLost, SSHError) as exc:
            raise _Lost(exc) from None

    # -- out of rotation and back ---------------------------------------------------

    async def _take_out(self, env: dict[str, str]) -> None:
        """Before the switch: wait for a ``max_unavailable`` slot, then drain the host
        (when the run has a balancer). Raises Aborted, StepFailed."""
        sem, balancer = self.run.unavailable, self.run.balancer
        if sem is not None and not self._slot:
            if sem.locked():
                limit = self.run.config.deploy.max_unavailable
                step = "drain" if balancer is not None else "activate"
                self._status(step, WAITING, f"waiting: max_unavailable = {limit}")
            await sem.acquire()
            self._slot = True
            if self.run.aborting:
                raise Aborted()
        if balancer is not None:
            if self.run.aborting:
                raise Aborted()
            spec = self.run._spec(self.st.name)
            self._drained = True  # from the first command on (a failed drain is undone)
            work = balancer.drain(spec, env, self.run.abort_event)
            try:
                await self.run.step(f"{self.key}/drain", work)
            except Interrupted as exc:  # an abort while sessions ended: back in rotation
                self._drained = False
                self._status("drain", CANCELLED, str(exc))
                raise Aborted() from None

    async def _put_back(self, env: dict[str, str], *, quiet: bool = False) -> None:
        """Undrain a host this run drained, then give back its slot. Raises StepFailed
        (unless ``quiet``: then the failure is logged)."""
        balancer = self.run.balancer
        if self._drained and balancer is not None:
            spec = self.run._spec(self.st.name)
            work = balancer.undrain(spec, env)
            try:
                await self.run.step(f"{self.key}/undrain", work, shielded=True)
            except StepFailed as exc:
                if not quiet:
                    raise
                self.run.log(self.key, f"could not put back in rotation: {exc}", "stderr")
                return
            self._drained = False
        self._free_slot()

    def _free_slot(self) -> None:
        if self._slot and self.run.unavailable is not None:
            self.run.unavailable.release()
            self._slot = False

    def _left_out(self) -> str:
        """A failed host this run drained stays out of rotation: say so."""
        if not self._drained:
            return ""
        self._status("undrain", SKIPPED, "left out of rotation")
        self.run.log(self.key, "left out of rotation (drained)", "stderr")
        return "; left out of rotation"

    async def _free_space_hint(self, pkg: Package) -> str:
        path = self.st.path
        try:
            res = await self.host.run(f"df -Pk {q(path)} | awk 'NR==2{{print $4}}'", timeout=10)
            free = int(res.stdout.strip())
        except (SSHError, ValueError):
            return ""
        if free * 1024 < pkg.size:
            return f" (no space left on {path}: {free} KiB free, the package is {pkg.size // 1024} KiB)"
        return ""

    # -- hooks and health ------------------------------------------------------------

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

    # -- switching back ---------------------------------------------------------------

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

    # -- rollback ----------------------------------------------------------------------

    async def roll_back(self, to: str | None) -> None:
        """Switch the host back to ``to`` (or the release deployed before its current
        one), restart it and check its health."""
        chosen: dict[str, str] = {"target": "", "sha": ""}

        async def finish() -> None:
            st = self.st
            outcome = st.outcome
            st.outcome = "ok" if st.status == OK else outcome
            line = self.run.revision(chosen["target"] or "-", chosen["sha"], st.outcome)
            await self.finish(line)
            st.outcome = outcome

        await self._guarded(self._roll_back(to, chosen), finish)

    async def _roll_back(self, to: str | None, chosen: dict[str, str]) -> None:
        st = self.st
        self._check_held()
        res = await self.host.run(releases_script(st.path), timeout=60)
        releases, revisions = parse_releases(res.stdout)
        target = self._target(to, releases, revisions)
        sha = sha_of_release(target, revisions)
        chosen.update(target=target, sha=sha)
        self.run.found_sha(sha)
        env = self.env(target, sha)
        try:
            await self._take_out(env)
            await self.run.step(f"{self.key}/activate", self.switch(target), shielded=True)
        except (ConnectionLost, SSHError) as exc:  # the switch may have run
            raise _Lost(exc) from None
        except (StepFailed, Aborted):  # nothing switched: back in rotation
            await self._put_back(env, quiet=True)
            raise
        try:
            st.activated = True
            await self._restart_and_check(target, env)
        except (ConnectionLost, SSHError) as exc:  # once the switch may have run
            raise _Lost(exc) from None

    async def _restart_and_check(self, target: str, env: dict[str, str]) -> None:
        """After a rollback's switch: the after_activate hooks, the health check, then
        back in rotation."""
        st = self.st
        if self.run.config.deploy.after_activate:
            key = f"{self.key}/restart"
            await self.run.step(key, self.restart(key, env), shielded=True)
        else:
            self._status("restart", SKIPPED, "no hooks")
        if self.run.config.deploy.health:
            self._status("health", RUNNING)
            healthy, detail = await self.health(f"{self.key}/health", f"{st.path}/current", env)
            self._status("health", OK if healthy else FAILED, detail)
            if not healthy:
                raise StepFailed(detail)
        else:
            self._status("health", SKIPPED, "no health check")
        await self._put_back(env)
        st.status, st.outcome = OK, target
        self.run.close_host(self.key, OK, f"{st.current} -> {target}")

    def _target(self, to: str | None, releases: list[str], revisions: list[str]) -> str:
        """The release to go back to: ``to`` if the host has it, else the one deployed
        before its current release. Raises StepFailed when there is none."""
        if to:
            if to not in releases:
                self._status("activate", FAILED, f"release {to} is not on this host")
                has = ", ".join(releases[-5:]) or "none"
                raise StepFailed(f"release {to} is not on this host (has: {has})")
            return to
        target = previous_release(self.st.current, releases, revisions)
        if not target:
            self._status("activate", FAILED, "no previous release")
            raise StepFailed(
                f"no release deployed before {self.st.current or 'current'} to roll back to"
            )
        return target

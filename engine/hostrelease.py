"""One host's release within a run: connect, lock, stage, switch, settle, roll back.

A :class:`HostRelease` is made for every selected host when a run builds its plan.
The run locks every host first (:meth:`HostRelease.lock`, :mod:`engine.hostlock`),
then, wave by wave, deploys it (:meth:`HostRelease.deploy`) or rolls it back
(:meth:`HostRelease.roll_back`). Both end the host in one of four ways, decided in
one place (:mod:`engine.hostoutcome`); the hooks, health checks and switch are
:mod:`engine.hostchecks`, the drain and undrain :mod:`engine.hostrotation`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import BuildError, ConnectionLost, Interrupted, StepFailed
from engine.events import FAILED, OK, PENDING, RUNNING, SKIPPED, Transfer
from engine.hostlock import Aborted, HostState
from engine.hostoutcome import Deployed, HostOutcome, Lost, Unhealthy
from engine.hostphase import KILLABLE, transfer_text
from engine.peer import RebuildFailed, copy_from_peer
from engine.remote.envfile import env_file_result, env_file_script
from engine.remote.hooks import hooks_script
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
from engine.session import SSHError, q

if TYPE_CHECKING:
    from engine.build import Package
    from engine.run import Run
    from engine.upload import Upload


@dataclass(frozen=True)
class Release:
    """What a deploy ships: the release id, its commit, the package."""

    release_id: str
    sha: str
    package: Package


class HostRelease(HostOutcome):
    """One host's part of a run (see the module's docstring)."""

    def __init__(self, run: Run, st: HostState) -> None:
        super().__init__(run, st)
        #: staged (upload .. before) ahead of the switch, for the run-once stage
        self.staged = False

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
        await self._write_env_file()
        await self._stage(release, env)
        self.staged = True

    async def _write_env_file(self) -> None:
        """The ``secrets`` step: the app's env file (``[secrets]``) to
        ``<path>/<secrets.path>``, mode 0600, over this host's session, its bytes on
        the command's stdin; only when the host's copy has another sha256. Before the
        release is staged: a shared entry linking it, and ``before_activate``, find it
        there. Raises StepFailed, SSHError."""
        env_file, secrets = self.run.env_file, self.run.config.secrets
        if env_file is None or secrets is None:
            return
        st = self.st
        script = env_file_script(st.path, secrets.path, env_file.sha256)

        async def write() -> str:
            res = await self.host.run(
                script, stdin_file=env_file.content, timeout=self.run.config.ssh.command_timeout
            )
            done = env_file_result(res.stdout)
            if not res.ok or done is None:
                why = (res.stderr or res.stdout).strip()[-300:] or f"exit {res.exit_status}"
                raise StepFailed(f"could not write {secrets.path}: {why}")
            return f"{secrets.path} {done} (0600)"

        await self.run.step(f"{self.key}/secrets", write())

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
            await self.rotation.take_out(env)
            if self.run.aborting:
                raise Aborted()
            # from here on the new release may be live: it is never removed (finish_script
            # also refuses to remove `current`)
            self._remove = None
            done = await self._switch(release, env)
        except (Aborted, StepFailed):  # nothing switched: back in rotation
            await self.rotation.put_back(env, quiet=True)
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
        """Phase 1: upload, then unpack, link, before -- nothing live changes. A direct
        upload carries the steps after it in its own command (one round trip less per
        host), unless one of them is a hook (an abort signals a hook, but stops an
        upload at once)."""
        st, d, pkg = self.st, self.run.config.deploy, release.package
        steps: list[tuple[str, str]] = [
            ("unpack", unpack_script(st.path, pkg.sha256, release.release_id, release.sha))
        ]
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
        then = [] if any(name in KILLABLE for name, _ in steps) else steps
        ran = False
        try:
            if st.artifact_sha != pkg.sha256:
                ran = await self._upload(pkg, then)
            else:
                self._status("upload", SKIPPED, f"already on host ({pkg.sha256[:12]})")
                site = self.run.transfers.site(st.name, self.host.jump)
                if site is not None:
                    await site.holds(self.key)
        except Interrupted:
            raise Aborted() from None  # nothing live changed
        except StepFailed as exc:
            if self._step_status("upload") == FAILED:
                raise StepFailed(f"{exc}{await self._free_space_hint(pkg)}") from None
            raise
        if ran:
            return
        try:
            await self._phase(steps, self.run.config.ssh.command_timeout)
        except Interrupted:
            raise Aborted() from None  # nothing live changed

    async def _upload(self, pkg: Package, then: list[tuple[str, str]]) -> bool:
        """Get the artifact onto the host: from a host of its site that has it (see
        :class:`engine.upload.Site`), else through shipdeck's link; a copy that
        fails falls back to the link. Without a site the upload's command runs the
        steps ``then`` after it too: returns True when it did."""
        site = self.run.transfers.site(self.st.name, self.host.jump)
        if site is None:
            await self._send(pkg, then)
            return bool(then)
        st = self.st
        base = st.base_sha if st.delta == "zstd" and st.base_sha != pkg.sha256 else ""
        chosen = await site.source_for(self.key, lambda: self.run.aborting, base)
        if chosen is not None:
            source, patch_base = chosen
            src = self.run.hosts[source]
            self._status("upload", RUNNING, f"from {src.st.name}")
            started = time.monotonic()
            ok: bool | None = None
            told: list[asyncio.Future[None]] = []

            def has_patch() -> None:  # it can serve the patch on while it rebuilds
                told.append(asyncio.ensure_future(site.has_patch(self.key, patch_base)))

            try:
                await copy_from_peer(self, src, pkg, patch_base, has_patch)
                ok = True
            except RebuildFailed as exc:  # its base, not the peer: the slot is given back
                self.run.log(
                    f"{self.key}/upload",
                    f"the patch from {src.st.name} did not apply: {exc}; uploading directly",
                    "stderr",
                )
            except StepFailed as exc:
                ok = False
                self.run.log(
                    f"{self.key}/upload",
                    f"copy from {src.st.name} failed: {exc}; uploading directly",
                    "stderr",
                )
            finally:
                if told:
                    await asyncio.gather(*told, return_exceptions=True)
                    if not ok:
                        await site.drop(self.key)
                await site.copied(self.key, source, ok, patch_base)
            if ok:
                secs = time.monotonic() - started
                how = "patch" if patch_base else "artifact"
                detail = transfer_text("peer", 0, pkg.size, secs, f"{src.st.name} ({how})")
                self._status("upload", OK, detail)
                self.run.emit(
                    Transfer(
                        self.run.deploy_id,
                        key=f"{self.key}/upload",
                        mode="peer",
                        total=pkg.size,
                        seconds=round(secs, 3),
                        source=src.st.name,
                    )
                )
                return False
            await site.seed()
        used: Upload | None = None
        try:
            used = await self._send(pkg)
        finally:
            await site.seeded(
                self.key, used is not None, used.base if used and used.mode == "delta" else ""
            )
        return False

    async def _send(self, pkg: Package, then: list[tuple[str, str]] | None = None) -> Upload:
        """Send the artifact the cheapest way the host allows (see
        :mod:`engine.upload`): each attempt but the last (the whole artifact) runs as
        a step outside the tree, so a delta the host cannot use falls through to the
        next attempt without showing a failure. The steps ``then`` run in the same
        command once the upload is in (a failure there is theirs: no other attempt
        follows). Emits a Transfer event as the upload ends; returns the attempt that
        worked."""
        st = self.st
        try:
            attempts = await self.run.transfers.attempts(st, pkg)
        except BuildError as exc:
            raise StepFailed(str(exc)) from None
        timeout = self.run.config.ssh.command_timeout
        started = time.monotonic()
        sent = 0
        for n, up in enumerate(attempts):
            last = n == len(attempts) - 1
            name = "upload" if last else up.mode
            if not last:  # the last attempt's step says it runs itself
                self._status("upload", RUNNING, up.mode)
            script = receive_script(
                st.path, pkg.sha256, pkg.size, up.mode, offset=up.offset, base=up.base,
                codec=up.codec,
            )  # fmt: skip

            def uploaded(
                step: str, up: Upload = up, name: str = name, last: bool = last, before: int = sent
            ) -> None:
                if step != name:
                    return
                secs = time.monotonic() - started
                total = before + (self.last_watch.sent if self.last_watch else 0)
                if not last:  # a step outside the tree: its end is said here
                    self._status("upload", OK, transfer_text(up.mode, total, pkg.size, secs))
                self.run.emit(
                    Transfer(
                        self.run.deploy_id,
                        key=f"{self.key}/upload",
                        mode=up.mode,
                        sent=total,
                        total=pkg.size,
                        seconds=round(secs, 3),
                        jump=bool(self.host.jump),
                    )
                )

            self.last_watch = None
            try:
                try:
                    up = await self.run.transfers.ready(up, pkg)
                except BuildError as exc:
                    raise StepFailed(str(exc)) from None
                # the steps carried get the time they had as a command of their own
                limit = timeout * (2 if then else 1)
                await self._phase([(name, script), *(then or [])], limit, upload=up, on_ok=uploaded)
            except StepFailed as exc:
                watch = self.last_watch
                if last or (watch is not None and name in watch.succeeded):
                    raise
                nxt = attempts[n + 1].mode
                self.run.log(f"{self.key}/upload", f"{up.mode}: {exc}; now {nxt}", "stderr")
                continue
            finally:
                sent += self.last_watch.sent if self.last_watch is not None else 0
            break
        return up

    def _tail(self, release: Release) -> list[tuple[str, str]]:
        """Cleanup, then revisions.log and unlock: what a healthy host ends with."""
        st, d = self.st, self.run.config.deploy
        line = self.run.revision(release.release_id, release.sha, "ok")
        deploy_id = self.run.deploy_id
        protect = [release.release_id, st.current]
        return [
            (
                "cleanup",
                cleanup_script(
                    st.path, d.keep_releases, protect, deploy_id, release.package.sha256
                ),
            ),
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
            raise Lost(exc) from None
        except StepFailed as exc:
            if self._step_status("activate") == OK:
                st.activated = True
            if not st.activated:
                raise
            raise Unhealthy(exc) from None
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
                    raise Unhealthy(StepFailed(detail))
                self._status("health", OK, detail)
            try:
                await self.rotation.put_back(env)
            except StepFailed as exc:
                raise StepFailed(f"{exc} ({release.release_id} is live and healthy)") from None
            if self.run.aborting:
                raise Deployed(release.release_id)
            await self._phase(self._tail(release), 120)
        except (ConnectionLost, SSHError) as exc:
            raise Lost(exc) from None

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
            await self.rotation.take_out(env)
            await self.run.step(f"{self.key}/activate", self.switch(target), shielded=True)
        except (ConnectionLost, SSHError) as exc:  # the switch may have run
            raise Lost(exc) from None
        except (StepFailed, Aborted):  # nothing switched: back in rotation
            await self.rotation.put_back(env, quiet=True)
            raise
        try:
            st.activated = True
            await self._restart_and_check(target, env)
        except (ConnectionLost, SSHError) as exc:  # once the switch may have run
            raise Lost(exc) from None

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
        await self.rotation.put_back(env)
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

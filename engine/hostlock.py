"""One host's deploy lock, as a run holds it: take it (or take over a stale one),
keep its heartbeat fresh, fence every state-changing step by it, give it back with
the host's revisions.log line. The base of :class:`engine.hostrelease.HostRelease`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import LockHeld, StepFailed
from engine.remote.lock import (
    TAKEOVER_REFUSED,
    HeldLock,
    fenced,
    heartbeat_script,
    held_lock,
    lock_owner,
    parse_heartbeat,
    parse_kv,
    parse_takeover,
    probe_script,
    takeover_script,
)
from engine.remote.release import finish_script
from engine.session import BOOT, CommandResult, Host, SSHError, loader

if TYPE_CHECKING:
    from engine.run import Run

log = logging.getLogger("shipdeck.engine")


class Aborted(Exception):
    """The run is aborting: the host starts no new step."""


@dataclass
class HostState:
    """What the engine learnt about one host during a run."""

    name: str
    key: str
    host: Host | None = None
    path: str = ""
    current: str = ""  # release current before this run
    artifact_sha: str = ""  # sha256 of the artifact already there, if any
    part_size: int = 0  # bytes of a broken upload of this artifact on the host
    part_sha: str = ""  # their sha256 (empty: the host cannot hash)
    base_sha: str = ""  # the host's newest other artifact (a delta's base)
    delta: str = ""  # "zstd": the host can apply a zstd patch and check the result
    free_kb: int | None = None
    locked: bool = False
    activated: bool = False
    status: str = "pending"
    reason: str = ""
    outcome: str = ""  # for revisions.log
    lock_lost: str = ""  # "lock taken over by ..." once the heartbeat found another owner


class HostLock:
    """The lock of one host (``st``) within ``run``."""

    def __init__(self, run: Run, st: HostState) -> None:
        self.run = run
        self.st = st
        self.key = st.key
        self._heartbeat: asyncio.Future[None] | None = None
        #: the release a failed deploy leaves behind to remove (never once switched)
        self._remove: str | None = None

    @property
    def host(self) -> Host:
        if self.st.host is None:
            raise StepFailed("not connected")
        return self.st.host

    def _status(self, step: str, status: str, detail: str = "") -> None:
        self.run.status(f"{self.key}/{step}", status, detail)

    def _step_status(self, step: str) -> str:
        return self.run.plan[f"{self.key}/{step}"].status

    # -- lock ------------------------------------------------------------------

    async def lock(self, artifact_sha: str | None) -> str:
        """Take the host's lock (or take over a stale one). Raises LockHeld when another
        live deploy holds it, StepFailed when the path cannot hold a lock at all."""
        d = self.run.config.deploy
        owner = lock_owner(self.run.operator, self.run.deploy_id, d.lock_ttl)
        res = await self.host.run(probe_script(d.path, artifact_sha, owner), timeout=60)
        info = self._probed(res)
        if info.get("lock") == "acquired":
            self._locked()
            if info.get("layout_error"):
                raise StepFailed(info["layout_error"][:300])
            self._check_disk()
            return f"{self.st.path} (current: {self.st.current or 'none'})"
        return await self._take_over(held_lock(info, d.lock_ttl), owner)

    def _probed(self, res: CommandResult) -> dict[str, str]:
        """Read the probe's report into the host's state; raises StepFailed when the
        path cannot be prepared or cannot hold a lock."""
        st = self.st
        info = parse_kv(res.stdout)
        if not res.ok or "path" not in info:
            path = self.run.config.deploy.path
            raise StepFailed(f"cannot prepare {path}: {(res.stderr or res.stdout).strip()[:300]}")
        st.path = info["path"]
        st.current = info.get("current", "")
        st.artifact_sha = info.get("artifact_sha", "")
        part = info.get("part_size", "")
        st.part_size = int(part) if part.isdigit() else 0
        st.part_sha = info.get("part_sha", "")
        st.base_sha = info.get("base", "")
        st.delta = info.get("delta", "")
        st.free_kb = int(info["free_kb"]) if info.get("free_kb", "").isdigit() else None
        if info.get("lock_error"):
            # not a lock: the path cannot be written (permissions, read-only)
            raise StepFailed(info["lock_error"][:300])
        return info

    async def _take_over(self, held: HeldLock, owner: dict[str, object]) -> str:
        """Take over ``held`` if it is stale (or ``--force-unlock``); else LockHeld."""
        desc = held.describe()
        gone = not held.stale and held.owner_gone
        if not (held.stale or gone or self.run.force_unlock):
            raise LockHeld(
                f"locked by {desc}, heartbeat {held.age}s ago (stale after {held.ttl:g}s); "
                "if that deploy is dead and its host cannot be reached, rerun with --force-unlock",
                stale_in=held.stale_in,
            )
        if held.stale:
            why = f"stale: no heartbeat for {held.age}s, ttl {held.ttl:g}s"
        elif gone:
            why = f"its process {held.owner.get('pid')} on this machine has ended"
        else:
            why = "--force-unlock"
        self.run.log(f"{self.key}/lock", f"taking over the lock held by {desc} ({why})", "stderr")
        script = takeover_script(
            self.st.path, owner, held.deploy_id, held.ttl, force=not held.stale, old_line=held.line
        )
        res = await self.host.run(script, timeout=30)
        what = parse_takeover(res.stdout)
        if what == "acquired":
            self._locked()
            self.run.log(
                "release", f"{self.st.name}: took over the lock of {desc} ({why})", "stderr"
            )
            self._check_disk()
            return f"took over lock of {desc}"
        because = TAKEOVER_REFUSED.get(what) or (
            (res.stderr or res.stdout).strip()[:200] or "takeover failed"
        )
        raise LockHeld(f"locked by {desc}; not taken over: {because}")

    def _check_disk(self) -> None:
        st = self.st
        need = self.run.disk_needed(st)
        if need and st.free_kb is not None and st.free_kb * 1024 < need:
            raise StepFailed(
                f"not enough disk space on {st.path}: {st.free_kb} KiB free, "
                f"the release needs about {need // 1024} KiB"
            )

    def _locked(self) -> None:
        """The host holds its lock now: keep the lock's heartbeat fresh while it does."""
        self.st.locked = True
        self.st.lock_lost = ""
        self.stop_heartbeat()
        self._heartbeat = asyncio.ensure_future(self._beat())

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def _beat(self) -> None:
        """Write the host's clock into the lock every ttl/4, each time in a short command
        on its own channel of this run's connection: alive while this process and
        its connection are. Stops (and says so) once the lock names another deploy."""
        st = self.st
        interval = max(0.25, self.run.config.deploy.lock_ttl / 4)
        # through the session's boot line: any login shell (csh, fish) passes it on
        script = loader("hb", heartbeat_script(st.path, self.run.deploy_id)).decode()
        while True:
            await asyncio.sleep(interval)
            if st.host is None:
                return
            try:
                res = await asyncio.wait_for(
                    st.host.conn.run(BOOT, input=script, check=False), interval * 2
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost connection fails the host's own steps
                log.debug("heartbeat on %s failed: %s", st.name, exc)
                continue
            ours, who = parse_heartbeat(str(res.stdout or ""))
            if not ours:
                if who:
                    st.lock_lost = who
                    self.run.log(self.key, who, "stderr")
                return

    async def unlock(self) -> None:
        """Release the lock (fenced: only if it still names this run)."""
        await self.finish("", unlock_only=True)

    async def finish(self, line: str, *, unlock_only: bool = False) -> None:
        """Append ``line`` to revisions.log, drop an unactivated release, release the
        lock. Never on a host whose lock this run does not hold, nor over a lost
        connection (its lock goes stale: its heartbeat has stopped)."""
        st = self.st
        self.stop_heartbeat()
        if st.host is None or not st.path or not st.locked:
            return
        if not unlock_only and st.outcome == "unknown":
            return
        script = finish_script(
            st.path,
            line,
            unlock=True,
            remove_release=None if unlock_only else self._remove,
            deploy_id=self.run.deploy_id,
        )
        try:
            await st.host.run(script, timeout=30)
            st.locked = False
        except SSHError as exc:
            self.run.log(self.key, f"could not release the lock: {exc}", "stderr")

    def _fence(self, name: str, script: str) -> str:
        """A state-changing step runs only while the host's lock names this run
        (checked in the same remote script); reading steps run as they are."""
        if name in ("upload", "health"):
            return script
        return fenced(self.st.path, self.run.deploy_id, script)

    def _check_held(self) -> None:
        if not self.st.locked or self.st.host is None:
            raise StepFailed("the host's lock is not held")
        if self.st.lock_lost:
            raise StepFailed(self.st.lock_lost)

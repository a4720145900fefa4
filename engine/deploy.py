"""Running a release: :class:`Deployment` (fetch, build, package, release in waves)
and :class:`Rollback`. Both build their plan at construction, emit events to their
subscribers while they run, and can be aborted or approved from outside.

    d = Deployment(config)
    d.subscribe(print)
    result = await d.run()        # DeployResult(status, exit_code, summary)
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import random
import re
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import build as buildmod
from engine import git as gitmod
from engine.config import Config, HostSpec
from engine.errors import ConnectionLost, Interrupted, LockHeld, StepFailed
from engine.events import (
    CANCELLED,
    FAILED,
    OK,
    PENDING,
    RUNNING,
    SKIPPED,
    WAITING,
    Control,
    DeployFinished,
    DeployMeta,
    Event,
    GateWaiting,
    LogLine,
    NodeStatus,
    Progress,
    Summary,
    now,
)
from engine.history import History, TranscriptWriter
from engine.plan import ROLLBACK_STEPS, Plan, build_plan
from engine.session import BOOT, loader
from engine.ssh import CommandTimeout, Connector, Host, Prompter, SSHError, q
from engine.state import RunState
from engine.steps import (
    FENCED_EXIT,
    MARK,
    HostState,
    activate_script,
    cleanup_script,
    fenced,
    finish_script,
    heartbeat_script,
    hook_command,
    hooks_script,
    link_script,
    lock_owner,
    parse_kv,
    phase_script,
    probe_script,
    receive_script,
    releases_script,
    revision_line,
    takeover_script,
    unpack_script,
    utc_stamp,
)
from engine.strategy import Budget, wave_plan

log = logging.getLogger("shipdeck.engine")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3

__all__ = ["Deployment", "Rollback", "DeployResult", "Prompter", "default_operator", "Subscriber"]

Subscriber = Callable[[Event], None]

#: release stamps handed out by this process (history covers earlier processes)
_ISSUED_STAMPS: set[str] = set()


def default_operator() -> str:
    """SHIPDECK_OPERATOR, else user@hostname."""
    name = os.environ.get("SHIPDECK_OPERATOR", "").strip()
    if name:
        return name
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class DeployResult:
    status: str  # ok | failed | stopped
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)


class _Aborted(Exception):
    pass


#: steps an abort stops while they run (their remote processes are signalled); any
#: other step (unpack, activate, cleanup, finish) is short and finishes first
KILLABLE = frozenset({"upload", "before", "restart", "health"})


class _Run:
    """What deploys and rollbacks share: events, abort, approvals, host bookkeeping."""

    kind = "deploy"

    def __init__(
        self,
        config: Config,
        *,
        hosts: str | None = None,
        operator: str | None = None,
        prompter: Prompter | None = None,
        force_unlock: bool = False,
        history: History | None = None,
        without_relay: bool = False,
    ):
        self.config = config
        #: the run goes ahead without the configured relay (``--without-relay``): no
        #: room lease, no watchers; recorded in history, revisions.log and the summary
        self.without_relay = without_relay
        self.operator = operator or default_operator()
        self.prompter = prompter
        self.force_unlock = force_unlock
        self.history = history if history is not None else History()
        self.selected: list[HostSpec] = config.select_hosts(hosts)
        self.started_at = time.time()
        stamp = utc_stamp(self.started_at)
        self.deploy_id = f"{stamp}-{secrets.token_hex(3)}"
        self.stamp = stamp
        self._subscribers: list[Subscriber] = []
        self._abort = asyncio.Event()
        self.aborted_by = ""
        self._approvals: dict[str, asyncio.Event] = {}
        self.waiting_gate: str | None = None
        self.states: dict[str, HostState] = {}
        self.budget = Budget.from_config(config.deploy.max_fail, len(self.selected))
        self.stop_reason = ""
        self._early: dict[str, asyncio.Future[Host]] = {}
        self._heartbeats: dict[str, asyncio.Future[None]] = {}
        self.plan: Plan = self._build_plan()
        #: the run's state, from its own events (the one reducer every follower uses)
        self.state = RunState(self.plan)

    # -- plan and events -----------------------------------------------------

    def _build_plan(self) -> Plan:  # pragma: no cover - overridden
        raise NotImplementedError

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(event)`` for every event, in order, on the event loop."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def emit(self, event: Event) -> None:
        self.state.apply(event)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber never breaks a deploy
                log.exception("event subscriber failed")

    def status(self, key: str, status: str, detail: str = "") -> None:
        self.emit(NodeStatus(self.deploy_id, key=key, status=status, at=now(), detail=detail))

    def log(self, key: str, text: str, stream: str = "info") -> None:
        self.emit(LogLine(self.deploy_id, key=key, stream=stream, text=text, at=now()))

    def line_handler(self, key: str) -> Callable[[str, str], None]:
        return lambda stream, text: self.log(key, text, stream)

    # -- control -------------------------------------------------------------

    @property
    def aborting(self) -> bool:
        return self._abort.is_set()

    def abort(self, by: str = "", reason: str = "") -> None:
        """Stop at the next safe point: no new step starts; a host between activate
        and its health check (or rollback) finishes that first. Idempotent."""
        if self._abort.is_set():
            return
        self.aborted_by = by or self.operator
        self.stop_reason = reason or f"aborted by {self.aborted_by}"
        self._abort.set()
        self.emit(Control(self.deploy_id, action="abort", by=self.aborted_by, key="", at=now()))
        self.log(
            "release", f"abort requested by {self.aborted_by}" + (f": {reason}" if reason else "")
        )

    def approve(self, by: str = "", key: str | None = None) -> bool:
        """Approve the waiting gate (or ``key``). Returns False if no gate waits."""
        key = key or self.waiting_gate
        if key is None or key not in self._approvals:
            return False
        event = self._approvals[key]
        if event.is_set():
            return False
        self.emit(
            Control(self.deploy_id, action="approve", by=by or self.operator, key=key, at=now())
        )
        event.set()
        return True

    # -- hosts ---------------------------------------------------------------

    def _steps_of(self, hkey: str) -> list[str]:
        return [n.key for n in self.plan.kids(hkey)]

    def _close_host(self, hkey: str, status: str, detail: str = "") -> None:
        """Mark the host's unfinished steps and the host itself."""
        for skey in self._steps_of(hkey):
            if self.plan[skey].status in (PENDING, RUNNING, WAITING):
                never_ran = skey.endswith("/rollback") and self.plan[skey].status == PENDING
                self.status(skey, SKIPPED if never_ran or status == FAILED else status)
        self.status(hkey, status, detail)

    async def _step(self, key: str, work: Any, *, shielded: bool = False) -> Any:
        """Run one step: running -> ok/failed with timing. Checks abort first."""
        if self.aborting and not shielded:
            if asyncio.iscoroutine(work):
                work.close()
            raise _Aborted()
        self.status(key, RUNNING)
        try:
            result = await work
        except StepFailed as exc:
            self.status(key, FAILED, str(exc))
            raise
        except CommandTimeout as exc:
            self.status(key, FAILED, str(exc))
            raise StepFailed(str(exc)) from None
        except SSHError as exc:
            self.status(key, FAILED, str(exc))
            raise StepFailed(str(exc)) from None
        detail = result if isinstance(result, str) else ""
        if self.plan[key].status == RUNNING:
            self.status(key, OK, detail)
        return result

    async def _run_hook(
        self,
        host: Host,
        key: str,
        cwd: str,
        command: str,
        env: dict[str, str],
        timeout: float,
        *,
        fence: str = "",
    ) -> None:
        """Run one hook; with ``fence`` (a deploy path), only while this run's lock
        still holds there (checked in the same remote script)."""
        self.log(key, f"$ {command}")
        script = hook_command(cwd, command, env)
        if fence:
            script = fenced(fence, self.deploy_id, script)
        res = await host.run(script, on_line=self.line_handler(key), timeout=timeout)
        if not res.ok:
            taken = [line for line in res.stdout.splitlines() if line.startswith("lock taken over")]
            if res.exit_status == FENCED_EXIT and taken:
                raise StepFailed(f"`{command}` refused: {taken[-1][:200]}")
            last = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
            raise StepFailed(
                f"`{command}` exited {res.exit_status}" + (f": {last[0][:200]}" if last[0] else "")
            )

    async def _connect(self, connector: Connector, name: str) -> Host:
        """The host's connection: the one opened early (during fetch/build) if any."""
        early = self._early.pop(name, None)
        host = await early if early is not None else await connector.connect(self._spec(name))
        host.upload_stall = self.config.ssh.upload_stall
        self._connected(host)
        return host

    def _connected(self, host: Host) -> None:
        """A host's connection is open (before its lock is taken)."""

    def _spec(self, name: str) -> HostSpec:
        for h in self.selected:
            if h.name == name:
                return h
        raise KeyError(name)

    async def _lock(self, st: HostState, key: str, artifact_sha: str | None) -> str:
        """Take the host's lock (or take over a stale one). Raises LockHeld when another
        live deploy holds it, StepFailed when the path cannot hold a lock at all."""
        assert st.host is not None
        d = self.config.deploy
        owner = lock_owner(self.operator, self.deploy_id, d.lock_ttl)
        res = await st.host.run(probe_script(d.path, artifact_sha, owner), timeout=60)
        info = parse_kv(res.stdout)
        if not res.ok or "path" not in info:
            raise StepFailed(f"cannot prepare {d.path}: {(res.stderr or res.stdout).strip()[:300]}")
        st.path = info["path"]
        st.current = info.get("current", "")
        st.artifact_sha = info.get("artifact_sha", "")
        st.free_kb = int(info["free_kb"]) if info.get("free_kb", "").isdigit() else None
        if info.get("lock_error"):
            # not a lock: the path cannot be written (permissions, read-only)
            raise StepFailed(info["lock_error"][:300])
        if info.get("lock") == "acquired":
            self._locked(st)
            if info.get("layout_error"):
                raise StepFailed(info["layout_error"][:300])
            self._check_disk(st)
            return f"{st.path} (current: {st.current or 'none'})"
        held = info.get("owner", "").strip()
        try:
            who = json.loads(held) if held else {}
        except ValueError:
            who = {}
        if not isinstance(who, dict):
            who = {}
        desc = _describe_owner(who)
        try:
            age = int(info.get("lock_age", "0"))
        except ValueError:
            age = 0
        ttl = who.get("ttl")
        ttl = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else d.lock_ttl
        stale = age > ttl
        if not (stale or self.force_unlock):
            raise LockHeld(
                f"locked by {desc}, heartbeat {age}s ago (stale after {ttl:g}s); "
                "if that deploy is dead and its host cannot be reached, rerun with --force-unlock",
                stale_in=max(0.2, ttl - age + 1),
            )
        why = f"stale: no heartbeat for {age}s, ttl {ttl:g}s" if stale else "--force-unlock"
        self.log(key, f"taking over the lock held by {desc} ({why})", "stderr")
        old_id = str(who.get("deploy_id", "")) if who else ""
        res = await st.host.run(
            takeover_script(st.path, owner, old_id, ttl, force=not stale, old_line=held),
            timeout=30,
        )
        if "lock=acquired" in res.stdout:
            self._locked(st)
            self.log("release", f"{st.name}: took over the lock of {desc} ({why})", "stderr")
            self._check_disk(st)
            return f"took over lock of {desc}"
        what = parse_kv(res.stdout).get("takeover", "failed")
        because = {
            "lost": "another deploy is taking it over right now",
            "changed": "it changed hands meanwhile",
            "alive": "its heartbeat is fresh again",
        }.get(what, (res.stderr or res.stdout).strip()[:200] or "takeover failed")
        raise LockHeld(f"locked by {desc}; not taken over: {because}")

    def _check_disk(self, st: HostState) -> None:
        need = self._disk_needed(st)
        if need and st.free_kb is not None and st.free_kb * 1024 < need:
            raise StepFailed(
                f"not enough disk space on {st.path}: {st.free_kb} KiB free, "
                f"the release needs about {need // 1024} KiB"
            )

    # -- the fleet lock --------------------------------------------------------

    def _locked(self, st: HostState) -> None:
        """``st`` holds its lock now: keep the lock's heartbeat fresh while it does."""
        st.locked = True
        st.lock_lost = ""
        old = self._heartbeats.pop(st.key, None)
        if old is not None:
            old.cancel()
        self._heartbeats[st.key] = asyncio.ensure_future(self._heartbeat(st))

    def _stop_heartbeat(self, st: HostState) -> None:
        task = self._heartbeats.pop(st.key, None)
        if task is not None:
            task.cancel()

    async def _heartbeat(self, st: HostState) -> None:
        """Write the host's clock into the lock every ttl/4, each time in a short command
        on its own channel of this deploy's connection: alive while this process and
        its connection are. Stops (and says so) once the lock names another deploy."""
        interval = max(0.25, self.config.deploy.lock_ttl / 4)
        # through the session's boot line: any login shell (csh, fish) passes it on
        script = loader("hb", heartbeat_script(st.path, self.deploy_id)).decode()
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
            out = str(res.stdout or "")
            if "hb=lost" in out:
                lines = [line for line in out.splitlines() if line.startswith("lock taken over")]
                if lines and "by nobody" not in lines[0]:
                    st.lock_lost = lines[0][:300]
                    self.log(st.key, st.lock_lost, "stderr")
                return

    async def _unlock(self, st: HostState, line: str = "") -> None:
        """Release ``st``'s lock (fenced: only if it still names this deploy)."""
        self._stop_heartbeat(st)
        if st.host is None or not st.locked or not st.path:
            return
        try:
            await st.host.run(
                finish_script(
                    st.path, line, unlock=True, remove_release=None, deploy_id=self.deploy_id
                ),
                timeout=30,
            )
            st.locked = False
        except SSHError as exc:
            self.log(st.key, f"could not release the lock: {exc}", "stderr")

    async def _unlock_all(self) -> None:
        await asyncio.gather(*(self._unlock(st) for st in self.states.values() if st.locked))

    async def _lock_one(
        self,
        connector: Connector,
        st: HostState,
        artifact_sha: str | None,
        sem: asyncio.Semaphore,
        held: list[tuple[HostState, LockHeld]],
    ) -> None:
        if st.status == FAILED:
            return
        async with sem:
            if self.aborting:
                return
            try:
                if st.host is None:
                    st.host = await self._step(
                        f"{st.key}/connect", self._connect(connector, st.name)
                    )
                await self._step(f"{st.key}/lock", self._lock(st, f"{st.key}/lock", artifact_sha))
            except LockHeld as exc:
                held.append((st, exc))
            except StepFailed as exc:
                st.status, st.outcome, st.reason = FAILED, "failed", str(exc)
                self.budget.fail(st.name, st.reason)
                self._close_host(st.key, FAILED, st.reason)
            except _Aborted:
                pass

    async def _lock_all(self, connector: Connector, artifact_sha: str | None) -> bool:
        """Connect to and lock EVERY selected host (all waves) before anything changes.

        A host that cannot be reached or written fails alone (failure budget). A host
        whose lock another live deploy holds: every lock taken is released and, after
        ``deploy.lock_wait`` seconds of retrying, the run stops (False) with nothing
        changed anywhere."""
        d = self.config.deploy
        deadline = time.monotonic() + d.lock_wait
        sem = asyncio.Semaphore(d.parallel)
        states = list(self.states.values())
        attempt = 0
        while True:
            attempt += 1
            held: list[tuple[HostState, LockHeld]] = []

            await asyncio.gather(
                *(self._lock_one(connector, st, artifact_sha, sem, held) for st in states)
            )
            if self.aborting:
                await self._unlock_all()
                return False
            if not held:
                if self.budget.exceeded:
                    self.stop_reason = (
                        f"failure budget exceeded before anything changed: {len(self.budget.failed)} "
                        f"failed, max_fail allows {self.budget.allowed}"
                    )
                    self.log("release", self.stop_reason, "stderr")
                    await self._unlock_all()
                    return False
                return True
            # all or nothing: give back every lock taken, then wait or stop
            await self._unlock_all()
            first, exc = held[0]
            left = deadline - time.monotonic()
            if left > 0:
                for st, why in held:
                    self.status(f"{st.key}/lock", WAITING, f"waiting: {why}"[:300])
                self.log(
                    "release",
                    f"waiting for {first.name} ({exc}); {left:.0f}s of lock_wait left",
                )
                pause = random.uniform(0.5, 1.5) * min(0.25 * 2**attempt, 5.0)
                soonest = min((w.stale_in for _, w in held if w.stale_in is not None), default=None)
                if soonest is not None:  # a lock that may go stale: look again right then
                    pause = min(pause, soonest + random.uniform(0, 0.3))
                pause = min(left, pause)
                try:
                    await asyncio.wait_for(self._abort.wait(), pause)
                except TimeoutError:
                    pass
                continue
            self.stop_reason = f"{first.name}: {exc}"
            self.log("release", f"not starting: {self.stop_reason}", "stderr")
            for st, why in held:
                st.status, st.outcome, st.reason = FAILED, "failed", str(why)
                self._close_host(st.key, FAILED, st.reason)
            return False

    def _disk_needed(self, st: HostState) -> int:
        """Bytes a release needs on the host: the artifact (unless there) and its unpacked size."""
        return 0

    async def _finish_host(
        self, st: HostState, release_id: str, sha: str, remove_release: str | None
    ) -> None:
        """Append to revisions.log, drop an unactivated release, release the lock."""
        self._stop_heartbeat(st)
        if st.host is None or not st.path or not st.locked or st.outcome == "unknown":
            # never write to a host whose lock we do not hold, nor over a lost
            # connection (its lock goes stale: its heartbeat has stopped)
            return
        line = self._revision(release_id, sha, st.outcome or st.status)
        try:
            await st.host.run(
                finish_script(
                    st.path,
                    line,
                    unlock=st.locked,
                    remove_release=remove_release,
                    deploy_id=self.deploy_id,
                ),
                timeout=30,
            )
            st.locked = False
        except SSHError as exc:
            self.log(st.key, f"could not release the lock: {exc}", "stderr")

    def _fence(self, st: HostState, name: str, script: str) -> str:
        """A state-changing step runs only while the host's lock names this run
        (checked in the same remote script); reading steps run as they are."""
        if name in ("upload", "health"):
            return script
        return fenced(st.path, self.deploy_id, script)

    def _revision(self, release_id: str, sha: str, outcome: str) -> str:
        """The host's revisions.log line for this run."""
        line = revision_line(release_id, sha, self.operator, outcome, self.deploy_id, self.kind)
        return line + (" relay=skipped" if self.without_relay else "")

    async def _pause(self, seconds: float, abortable: bool) -> None:
        """Sleep, or less when an abort comes (if ``abortable``)."""
        if not abortable:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._abort.wait()), seconds)
        except TimeoutError:
            pass

    async def _abortable(self, host: Host, work: Any) -> Any:
        """Await ``work`` (a command on ``host``); an abort signals what runs on the
        host and raises Interrupted once it has stopped."""
        task = asyncio.ensure_future(work)
        aborted = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait({task, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if task.done():
            return task.result()
        await host.interrupt()
        try:
            await asyncio.wait_for(task, 5)
        except (SSHError, TimeoutError):
            pass
        finally:
            task.cancel()
        raise Interrupted(f"stopped: {self.stop_reason or 'aborted'}")

    async def _health(
        self,
        host: Host,
        key: str,
        cwd: str,
        env: dict[str, str],
        tried: int = 0,
        abortable: bool = False,
        once: bool = False,
    ) -> tuple[bool, str]:
        """Retry the health check until healthy or ``health_timeout``. With
        ``abortable``, an abort stops the retries (and a check that runs): the host
        counts as unhealthy."""
        d = self.config.deploy
        if not d.health:
            return True, ""
        deadline = time.monotonic() + d.health_timeout
        attempt = tried
        last = ""
        if tried:
            await self._pause(d.health_interval, abortable)
        while True:
            if abortable and self.aborting:
                return (
                    False,
                    f"{self.stop_reason or 'aborted'} while unhealthy ({last or 'not healthy yet'})",
                )
            attempt += 1
            remaining = max(0.5, deadline - time.monotonic())
            try:
                run = host.run(
                    hook_command(cwd, d.health, env),
                    on_line=self.line_handler(key),
                    timeout=remaining,
                )
                res = await (self._abortable(host, run) if abortable else run)
                if res.ok:
                    return True, f"healthy after {attempt} attempt{'s' if attempt > 1 else ''}"
                last = (res.stderr or res.stdout).strip().splitlines()[-1:] or [
                    f"exit {res.exit_status}"
                ]
                last = last[0][:200]
            except CommandTimeout:
                last = "health command timed out"
            except Interrupted:
                return False, f"{self.stop_reason or 'aborted'} during a health check"
            if once:
                return False, f"unhealthy: {last}"
            if time.monotonic() + d.health_interval >= deadline:
                return False, f"unhealthy after {attempt} attempts in {d.health_timeout:g}s: {last}"
            await self._pause(d.health_interval, abortable)

    def _env(self, st: HostState, release_id: str, sha: str) -> dict[str, str]:
        return {
            "SHIPDECK_RELEASE": release_id,
            "SHIPDECK_RELEASE_DIR": f"{st.path}/releases/{release_id}",
            "SHIPDECK_DEPLOY_PATH": st.path,
            "SHIPDECK_SHA": sha,
            "SHIPDECK_PREVIOUS": st.current,
            "SHIPDECK_OPERATOR": self.operator,
        }

    # -- waves ---------------------------------------------------------------

    async def _run_waves(self, connector: Connector, flow: Callable[[HostState], Any]) -> None:
        sem = asyncio.Semaphore(self.config.deploy.parallel)
        waves = self.plan.waves()
        for index, wave in enumerate(waves, start=1):
            hosts = self.plan.kids(wave.key)
            if self.aborting or self.budget.exceeded or self.stop_reason:
                status = CANCELLED if self.aborting else SKIPPED
                for h in hosts:
                    if h.status in (PENDING, RUNNING, WAITING):
                        self._close_host(h.key, status, self.stop_reason)
                self.status(wave.key, status, self.stop_reason)
                self._close_gate(index, status)
                continue
            self.status(wave.key, RUNNING)

            async def one(hnode: Any) -> None:
                st = self.states[hnode.key]
                if st.status == FAILED:  # failed while connecting or locking
                    return
                async with sem:
                    if (
                        self.aborting
                        or self.budget.exceeded
                        or (self.stop_reason and not self.aborting)
                    ):
                        status = CANCELLED if self.aborting else SKIPPED
                        self._close_host(hnode.key, status, self.stop_reason)
                        return
                    await flow(st)

            await asyncio.gather(*(one(h) for h in hosts))
            counts = self.plan.counts(wave.key)
            failed = counts.get(FAILED, 0)
            detail = f"{counts.get(OK, 0)}/{len(hosts)} ok" + (
                f", {failed} failed" if failed else ""
            )
            if self.budget.exceeded and not self.stop_reason:
                self.stop_reason = f"failure budget exceeded: {len(self.budget.failed)} failed, max_fail allows {self.budget.allowed}"
                self.log("release", self.stop_reason, "stderr")
            if hosts and failed == len(hosts) and not self.stop_reason and index < len(waves):
                # a wave where every host failed (a failed canary) is not "done and
                # healthy": the next wave does not start, whatever the budget says
                self.stop_reason = f"every host of {wave.label} failed; not starting the next wave"
                self.log("release", self.stop_reason, "stderr")
            self.status(
                wave.key,
                FAILED if failed else (CANCELLED if self.aborting and not counts.get(OK) else OK),
                detail,
            )
            if index < len(waves):
                await self._gate(index)

    def _close_gate(self, index: int, status: str) -> None:
        key = f"release/gate-{index}"
        if key in self.plan and self.plan[key].status in (PENDING, WAITING):
            self.status(key, status)

    async def _gate(self, index: int) -> None:
        key = f"release/gate-{index}"
        if key not in self.plan:
            return
        if self.aborting or self.stop_reason:
            self._close_gate(index, CANCELLED if self.aborting else SKIPPED)
            return
        approved = self._approvals.setdefault(key, asyncio.Event())
        self.waiting_gate = key
        self.status(key, WAITING, "waiting for approval")
        self.emit(GateWaiting(self.deploy_id, key=key, at=now()))
        aborted = asyncio.ensure_future(self._abort.wait())
        approval = asyncio.ensure_future(approved.wait())
        await asyncio.wait({aborted, approval}, return_when=asyncio.FIRST_COMPLETED)
        aborted.cancel()
        approval.cancel()
        self.waiting_gate = None
        if approved.is_set():
            self.status(key, OK, "approved")
        else:
            self.status(key, CANCELLED, self.stop_reason)

    # -- summary -------------------------------------------------------------

    def _summary(self, release_id: str) -> tuple[str, int, Summary]:
        status, summary = self.state.summarize(
            reason=self.stop_reason,
            release_id=release_id,
            duration=round(time.time() - self.started_at, 3),
            relay="skipped (--without-relay)" if self.without_relay else "",
        )
        assert summary.exit_code is not None
        return status, summary.exit_code, summary

    def _host_rows(self, release_id: str) -> list[dict[str, Any]]:
        rows = []
        for h in self.plan.hosts():
            st = self.states.get(h.key)
            rows.append(
                {
                    "host": h.label,
                    "status": h.status,
                    "detail": h.detail,
                    "release_id": release_id if h.status == OK else "",
                    "previous": st.current if st else "",
                }
            )
        return rows

    async def _finish(
        self, release_id: str, sha: str, writer: TranscriptWriter | None
    ) -> DeployResult:
        for task in self._heartbeats.values():
            task.cancel()
        self._heartbeats.clear()
        status, code, report = self._summary(release_id)
        self.status(
            "release",
            {OK: OK, "failed": FAILED}.get(status, FAILED if report.failed else CANCELLED),
            _count_text(report),
        )
        summary = report.to_json()
        self.emit(DeployFinished(self.deploy_id, status=status, summary=summary, at=now()))
        try:
            self.history.update(self.deploy_id, sha=sha, release_id=release_id)
            self.history.finish(self.deploy_id, status, code, summary, self._host_rows(release_id))
        except Exception as exc:  # history must not turn a deploy into a crash
            log.warning("could not record history: %s", exc)
        if writer is not None:
            self.unsubscribe(writer)
            writer.close()
        return DeployResult(status=status, exit_code=code, summary=summary)

    def _start_history(self, ref: str) -> TranscriptWriter | None:
        try:
            self.history.start(
                self.deploy_id,
                self.kind,
                self.config.project.name,
                ref,
                self.operator,
                str(self.config.path),
            )
            if self.without_relay:  # recorded from the start, even if the run dies
                self.history.update(
                    self.deploy_id, summary=json.dumps({"relay": "skipped (--without-relay)"})
                )
            writer = TranscriptWriter(self.history, self.deploy_id)
        except Exception as exc:
            log.warning("could not record history: %s", exc)
            return None
        self.subscribe(writer)
        return writer


class Deployment(_Run):
    """Deploy ``ref`` (default: the config's) to the selected hosts."""

    kind = "deploy"

    def __init__(
        self,
        config: Config,
        *,
        ref: str | None = None,
        hosts: str | None = None,
        operator: str | None = None,
        prompter: Prompter | None = None,
        force_unlock: bool = False,
        auto_approve: bool = False,
        history: History | None = None,
        early_fetch: gitmod.EarlyFetch | None = None,
        without_relay: bool = False,
    ):
        self.ref = ref or config.project.ref
        self.auto_approve = auto_approve
        #: a mirror fetch already running (see :func:`engine.git.start_fetch`)
        self.early_fetch = early_fetch
        super().__init__(
            config,
            hosts=hosts,
            operator=operator,
            prompter=prompter,
            force_unlock=force_unlock,
            history=history,
            without_relay=without_relay,
        )
        self.sha = ""
        self.release_id = ""
        self.package: buildmod.Package | None = None

    def _build_plan(self) -> Plan:
        waves, labels, gates = wave_plan(self.selected, self.config.deploy)
        if self.auto_approve:
            gates = set()
        plan = build_plan(
            self.deploy_id,
            [[h.name for h in w] for w in waves],
            meta={
                "kind": "deploy",
                "project": self.config.project.name,
                "ref": self.ref,
                "sha": "",
                "release_id": "",
                "operator": self.operator,
                "hosts": len(self.selected),
            },
            build=bool(self.config.build.commands),
            gates=gates,
            wave_labels=labels,
        )
        for w, wave in enumerate(waves, start=1):
            for h in wave:
                key = f"release/wave-{w}/{h.name}"
                self.states[key] = HostState(name=h.name, key=key)
        return plan

    async def run(self) -> DeployResult:
        """Run the whole deploy. Never raises for host failures; see DeployResult."""
        writer = self._start_history(self.ref)
        self.emit(self.plan.to_event())
        if self.without_relay:
            self.log("release", "deploying without the relay (--without-relay)", "stderr")
        connector = Connector(
            self.config.ssh,
            self.config.base_dir,
            prompter=self.prompter,
            on_log=lambda m: self.log("release", m),
        )
        self._preconnect(connector)
        try:
            ok = await self._source()
            if ok:
                await self._release(connector)
            else:
                for n in self.plan:
                    if n.status in (PENDING,) and n.key != "release":
                        self.status(n.key, SKIPPED if not self.aborting else CANCELLED)
            return await self._finish(self.release_id, self.sha, writer)
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        finally:
            for task in self._early.values():
                task.cancel()
            if self._early:
                await asyncio.gather(*self._early.values(), return_exceptions=True)
            self._early.clear()
            if self.early_fetch is not None:
                self.early_fetch.close()
            await connector.close()

    def _preconnect(self, connector: Connector) -> None:
        """Open the first wave's first connections while fetch and build run: their
        handshakes (and the first-command cost) overlap the local work."""
        waves = self.plan.waves()
        if not waves:
            return
        first = [n.label for n in self.plan.kids(waves[0].key) if n.kind == "host"]

        async def early(name: str) -> Host:
            host = await connector.connect(self._spec(name))
            host.warm()  # its shell session opens while fetch and build run too
            return host

        for name in first[: self.config.deploy.parallel]:
            task = asyncio.ensure_future(early(name))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved later
            self._early[name] = task

    # -- fetch, build, package -------------------------------------------------

    def _secret_env(self) -> set[str]:
        """Environment variables a build (code from the repo) must not see."""
        names = {"SHIPDECK_TOKEN"}
        if self.config.ssh.password_env:
            names.add(self.config.ssh.password_env)
        if self.config.ssh.passphrase_env:
            names.add(self.config.ssh.passphrase_env)
        if self.config.relay is not None:
            names.add(self.config.relay.token_env)
        return names

    def _new_release_id(self, sha: str) -> str:
        """``<UTC stamp>-<short sha>``. Each deploy from this machine takes its own
        second (a deploy started within a second of the last moves to the next one;
        the host lock serialises other machines), so ids are unique and sort in deploy
        order, which cleanup relies on."""
        at = self.started_at
        for _ in range(60):
            stamp = utc_stamp(at)
            taken = stamp in _ISSUED_STAMPS
            if not taken:
                try:
                    taken = self.history.has_stamp(stamp)
                except (sqlite3.Error, OSError) as exc:
                    log.warning("history unreadable while choosing a release id: %s", exc)
                    taken = False
            if not taken:
                _ISSUED_STAMPS.add(stamp)
                return f"{stamp}-{sha[:7]}"
            at += 1
        # a stopped clock: the host-side guards refuse to touch a live release
        return f"{utc_stamp(self.started_at)}-{sha[:7]}"

    async def _source(self) -> bool:
        cfg = self.config
        repo = gitmod.normalise_repo(cfg.project.repo, cfg.base_dir)
        self.status("fetch", RUNNING)
        self.log("fetch", f"git fetch {cfg.project.repo} ({self.ref})")
        try:
            mirror, sha, cloned, info = await gitmod.fetch_described(
                repo, self.ref, early=self.early_fetch
            )
        except gitmod.GitError as exc:
            self.log("fetch", str(exc), "stderr")
            self.status("fetch", FAILED, str(exc))
            self.stop_reason = f"fetch failed: {exc}"
            return False
        self.sha = sha
        self.release_id = self._new_release_id(sha)
        try:  # recorded now, so even a killed deploy's id is never reused
            self.history.update(self.deploy_id, sha=sha, release_id=self.release_id)
        except Exception as exc:
            log.warning("could not record history: %s", exc)
        self.emit(
            DeployMeta(
                self.deploy_id,
                meta={"sha": sha, "release_id": self.release_id, "subject": info["subject"]},
            )
        )
        self.log("fetch", f"{self.ref} -> {sha[:12]} {info['subject']}")
        self.status(
            "fetch", OK, f"{sha[:7]} {info['subject'][:60]}" + (" (cloned)" if cloned else "")
        )
        if self.aborting:
            return False

        cached = buildmod.cached_package(sha, cfg.build)
        if cached is not None:
            self.package = cached
            self.status("build", SKIPPED, "reused the package of an identical build")
            self.status("package", OK, f"reused {cached.sha256[:12]} ({_size(cached.size)})")
            self.log("package", f"reusing {cached.path}")
            return True
        self.status("build", RUNNING)
        try:
            building = asyncio.ensure_future(
                buildmod.build_package(
                    mirror, sha, cfg.build, self.line_handler("build"), hide_env=self._secret_env()
                )
            )
            aborted = asyncio.ensure_future(self._abort.wait())
            await asyncio.wait({building, aborted}, return_when=asyncio.FIRST_COMPLETED)
            aborted.cancel()
            if not building.done():  # abort: stop the build now (its process group is killed)
                building.cancel()
                try:
                    await building
                except (asyncio.CancelledError, Exception):
                    pass
                self.status("build", CANCELLED, "aborted")
                return False
            self.package = building.result()
        except (buildmod.BuildError, gitmod.GitError) as exc:
            self.log("build", str(exc), "stderr")
            self.status("build", FAILED, str(exc))
            self.stop_reason = f"build failed: {exc}"
            return False
        self.status(
            "build",
            OK if cfg.build.commands else SKIPPED,
            f"{len(cfg.build.commands)} command(s)" if cfg.build.commands else "no build commands",
        )
        self.status(
            "package",
            OK,
            f"{self.package.sha256[:12]} ({_size(self.package.size)}, {self.package.files} files)",
        )
        self.log("package", f"{self.package.path}")
        return not self.aborting

    # -- release ---------------------------------------------------------------

    def _connected(self, host: Host) -> None:
        host.prepare_upload()  # its channel opens while the host is probed and locked

    async def _release(self, connector: Connector) -> None:
        self.status("release", RUNNING)
        assert self.package is not None
        try:
            # every host's lock first; if that stops, the waves only close the hosts
            await self._lock_all(connector, self.package.sha256)
            await self._run_waves(connector, lambda st: self._deploy_host(connector, st))
        finally:
            # hosts locked but never started (stopped, budget, abort): nothing changed
            # there, so no revisions.log line; just their locks back
            await asyncio.shield(self._unlock_all())

    async def _gate(self, index: int) -> None:
        key = f"release/gate-{index}"
        if self.auto_approve and key in self.plan and not (self.aborting or self.stop_reason):
            self.status(key, OK, "approved (--yes)")
            return
        await super()._gate(index)

    async def _deploy_host(self, connector: Connector, st: HostState) -> None:
        """One host, locked already (the fleet lock phase), in two remote commands:
        upload (over the command's own stdin) + unpack + link + before; activate +
        restart + health + cleanup + revisions.log + unlock. Each reports every step's start and end, so the tree
        keeps per-step status while sshd starts one shell per phase."""
        d = self.config.deploy
        hk = st.key
        pkg = self.package
        assert pkg is not None
        self.status(hk, RUNNING)
        remove_release: str | None = None
        finished = False
        try:
            if not st.locked or st.host is None:
                raise StepFailed("the host's lock is not held")
            if st.lock_lost:
                raise StepFailed(st.lock_lost)
            env = self._env(st, self.release_id, self.sha)
            rel = f"{st.path}/releases/{self.release_id}"
            cur = f"{st.path}/current"
            if self.aborting:
                raise _Aborted()

            # phase 1: upload, unpack, link, before -- nothing live changes
            if st.current == self.release_id:
                raise StepFailed(
                    f"release {self.release_id} is the live release on this host "
                    "(the same sha deployed within the same second); retry in a second"
                )
            remove_release = self.release_id
            phase: list[tuple[str, str]] = []
            upload = st.artifact_sha != pkg.sha256
            if upload:
                phase.append(("upload", receive_script(st.path, pkg.sha256, pkg.size)))
            else:
                self.status(f"{hk}/upload", SKIPPED, f"already on host ({pkg.sha256[:12]})")
            phase.append(("unpack", unpack_script(st.path, pkg.sha256, self.release_id, self.sha)))
            if d.shared:
                phase.append(("link", link_script(st.path, self.release_id, d.shared)))
            else:
                self.status(f"{hk}/link", SKIPPED, "no shared entries")
            if d.before_activate:
                phase.append(
                    ("before", hooks_script(rel, d.before_activate, env, timeout=d.hook_timeout))
                )
            else:
                self.status(f"{hk}/before", SKIPPED, "no hooks")
            phase = [(name, self._fence(st, name, script)) for name, script in phase]
            try:
                await self._phase(
                    st,
                    phase,
                    self.config.ssh.command_timeout,
                    upload=pkg if upload else None,
                )
            except Interrupted:
                raise _Aborted() from None  # nothing live changed
            except StepFailed as exc:
                if upload and self.plan[f"{hk}/upload"].status == FAILED:
                    raise StepFailed(f"{exc}{await self._free_space_hint(st)}") from None
                raise
            if self.aborting:
                raise _Aborted()

            # phase 2: activate, restart, first health check, then (healthy) cleanup,
            # revisions.log and unlock. An abort during restart or health stops them
            # and the host is rolled back; activate, cleanup and finish complete. From here on the new release may be live:
            # it is never removed (finish_script also refuses to remove `current`).
            remove_release = None
            line = self._revision(self.release_id, self.sha, "ok")
            tail = [
                (
                    "cleanup",
                    cleanup_script(
                        st.path, d.keep_releases, [self.release_id, st.current], self.deploy_id
                    ),
                ),
                (
                    "finish",
                    finish_script(
                        st.path, line, unlock=True, remove_release=None, deploy_id=self.deploy_id
                    ),
                ),
            ]
            phase = [("activate", activate_script(st.path, self.release_id))]
            if d.after_activate:
                phase.append(
                    ("restart", hooks_script(cur, d.after_activate, env, timeout=d.hook_timeout))
                )
            else:
                self.status(f"{hk}/restart", SKIPPED, "no hooks")
            if d.health:
                phase.append(
                    (
                        "health",
                        hooks_script(cur, (d.health,), env, echo=False, timeout=d.health_timeout),
                    )
                )
            else:
                self.status(f"{hk}/health", SKIPPED, "no health check")
            phase = [(name, self._fence(st, name, script)) for name, script in phase]
            done: set[str] = set()
            try:
                await self._phase(
                    st,
                    phase + tail,
                    d.hook_timeout * max(1, len(d.after_activate)) + d.health_timeout + 120,
                    keep_running={"health"},
                    done=done,
                )
            except ConnectionLost as exc:
                if self.plan[f"{hk}/activate"].status == PENDING:
                    raise  # lost before the switch: current is as it was
                self._lost_after_activate(st, exc)
                return
            except StepFailed as exc:
                if self.plan[f"{hk}/activate"].status == OK:
                    st.activated = True
                if not st.activated:
                    raise
                await self._unhealthy(st, env, exc)
                return
            st.activated = True
            if "finish" not in done:
                try:
                    # the first health check failed: retry until health_timeout
                    if d.health and self.plan[f"{hk}/health"].status == RUNNING:
                        healthy, detail = await self._health(
                            st.host, f"{hk}/health", cur, env, tried=1, abortable=True
                        )
                        if not healthy:
                            self.status(f"{hk}/health", FAILED, detail)
                            await self._unhealthy(st, env, StepFailed(detail))
                            return
                        self.status(f"{hk}/health", OK, detail)
                    if self.aborting:
                        # switched and healthy: the host is deployed; only cleanup is skipped
                        st.status, st.outcome = OK, "ok"
                        self.status(f"{hk}/cleanup", CANCELLED, "skipped: aborted")
                        self._close_host(hk, OK, f"{self.release_id} (cleanup skipped: aborted)")
                        return
                    await self._phase(st, tail, 120)
                except (ConnectionLost, SSHError) as exc:
                    self._lost_after_activate(st, exc)
                    return
            self._stop_heartbeat(st)
            st.locked = False
            st.status, st.outcome = OK, "ok"
            finished = True
            self._close_host(hk, OK, f"{self.release_id}")
        except _Aborted:
            st.status, st.outcome = CANCELLED, "cancelled"
            self._close_host(hk, CANCELLED, self.stop_reason or "aborted")
        except StepFailed as exc:
            st.status, st.outcome = FAILED, "failed"
            st.reason = str(exc)
            self.budget.fail(st.name, st.reason)
            if isinstance(exc, LockHeld) and not self.stop_reason:
                self.stop_reason = f"{st.name}: {exc}"
            self._close_host(hk, FAILED, st.reason)
        except (
            Exception
        ) as exc:  # a bug or an unexpected library error: this host fails, not the deploy
            log.exception("host %s failed unexpectedly", st.name)
            st.status, st.outcome = FAILED, "failed"
            st.reason = f"unexpected error: {type(exc).__name__}: {exc}"
            self.budget.fail(st.name, st.reason)
            self._close_host(hk, FAILED, st.reason)
        finally:
            if st.host is not None and not finished:
                await asyncio.shield(
                    self._finish_host(st, self.release_id, self.sha, remove_release)
                )

    async def _phase(
        self,
        st: HostState,
        steps: list[tuple[str, str]],
        timeout: float,
        keep_running: set[str] | frozenset[str] = frozenset(),
        upload: buildmod.Package | None = None,
        done: set[str] | None = None,
    ) -> None:
        """Run several steps as one remote script; each step reports its start and end,
        so the tree keeps per-step status while sshd spawns one shell."""
        assert st.host is not None
        hk = st.key
        current = [hk]
        failed: list[tuple[str, str]] = []
        soft: set[str] = set()
        tails: dict[str, list[str]] = {}
        started = [time.monotonic()]
        stepped = asyncio.Event()  # a step started (an abort waits for a killable one)

        def on_line(stream: str, text: str) -> None:
            if text.startswith(MARK):
                parts = text[len(MARK) :].split(" ", 2)
                name, what = parts[0], parts[1] if len(parts) > 1 else ""
                key = f"{hk}/{name}"
                if what == "start":
                    current[0] = key
                    stepped.set()
                    tails[name] = []
                    if name == "upload":
                        started[0] = time.monotonic()
                    if key in self.plan:
                        self.status(key, RUNNING)
                elif what == "end":
                    rc = (
                        int(parts[2])
                        if len(parts) > 2 and parts[2].strip().lstrip("-").isdigit()
                        else 255
                    )
                    current[0] = hk
                    out = tails.get(name, [])
                    if rc == 0 and done is not None:
                        done.add(name)
                    if key not in self.plan:
                        if rc:
                            failed.append(
                                (name, f"{name} failed (exit {rc}): {out[-1] if out else ''}")
                            )
                        return
                    if rc == 0:
                        if name == "upload" and upload is not None:
                            secs = max(time.monotonic() - started[0], 1e-6)
                            detail = f"{_size(upload.size)} in {secs:.2f}s ({upload.size / secs / 1e6:.1f} MB/s)"
                        else:
                            detail = _step_detail(name, out)
                        self.status(key, OK, detail)
                    elif name in keep_running:
                        soft.add(name)
                        self.log(key, f"attempt 1 failed (exit {rc})", "stderr")
                    else:
                        reason = f"{name} failed (exit {rc})" + (
                            f": {out[-1][:200]}" if out else ""
                        )
                        if rc == FENCED_EXIT and out and out[-1].startswith("lock taken over"):
                            reason = f"{name} refused: {out[-1][:200]}"
                        elif any("no space left on device" in line.lower() for line in out):
                            reason = f"{name} failed: no space left on device on {st.path}"
                        self.status(key, FAILED, reason)
                        failed.append((name, reason))
                return
            name = current[0].rsplit("/", 1)[-1]
            if name in tails:
                tails[name].append(text)
                del tails[name][:-5]
            self.log(current[0], text, stream)

        last = [0.0]

        def progress(sent: int, total: int) -> None:
            t = time.monotonic()
            if sent == total or t - last[0] >= 0.1:
                last[0] = t
                self.emit(Progress(self.deploy_id, key=f"{hk}/upload", done=sent, total=total))

        run = asyncio.ensure_future(
            st.host.run(
                phase_script(steps, stdin_step="upload" if upload is not None else None),
                on_line=on_line,
                timeout=timeout,
                stdin_file=upload.path if upload is not None else None,
                progress=progress if upload is not None else None,
            )
        )
        interrupted = ""
        try:
            # an abort stops an upload at once (nothing is live yet) and signals a
            # running hook or health check; any other step of the phase finishes first
            aborted = asyncio.ensure_future(self._abort.wait())
            try:
                while not run.done():
                    await asyncio.wait({run, aborted}, return_when=asyncio.FIRST_COMPLETED)
                    if run.done():
                        break
                    stepped.clear()
                    step = current[0].rsplit("/", 1)[-1] if current[0] != hk else ""
                    if upload is not None and step in ("", "upload"):
                        run.cancel()
                        try:
                            await run
                        except (asyncio.CancelledError, SSHError, CommandTimeout):
                            pass
                        self.status(f"{hk}/upload", CANCELLED, "aborted")
                        raise _Aborted()
                    if step in KILLABLE:
                        interrupted = step
                        await st.host.interrupt()
                        await asyncio.wait({run}, timeout=5)
                        run.cancel()
                        break
                    # a short step runs: wait for it, or for the next step to start
                    nxt = asyncio.ensure_future(stepped.wait())
                    try:
                        await asyncio.wait({run, nxt}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        nxt.cancel()
            finally:
                aborted.cancel()
            if interrupted:
                try:
                    await run
                except (asyncio.CancelledError, SSHError, CommandTimeout):
                    pass
                key = f"{hk}/{interrupted}"
                reason = f"stopped: {self.stop_reason or 'aborted'}"
                if key in self.plan:
                    self.status(key, CANCELLED, reason)
                raise Interrupted(f"{interrupted} {reason}")
            res = await run
        except (CommandTimeout, SSHError) as exc:
            key = current[0]
            if key != hk and key in self.plan:
                self.status(key, FAILED, str(exc))
            if not isinstance(exc, CommandTimeout):
                raise ConnectionLost(str(exc)) from None
            raise StepFailed(str(exc)) from None
        if failed:
            raise StepFailed(failed[0][1])
        if not res.ok and not soft:
            raise StepFailed(
                f"remote script failed (exit {res.exit_status}): {(res.stderr or res.stdout)[-200:]}"
            )

    def _lost_after_activate(self, st: HostState, exc: Exception) -> None:
        """The connection broke once the switch may have run: say so, claim nothing.
        The host's own ``current`` and revisions.log are the truth (the next deploy,
        ``--dry-run`` and the TUI read them); its lock goes stale (no heartbeat)."""
        self._stop_heartbeat(st)
        during = self.plan[f"{st.key}/activate"].status != OK
        st.status, st.outcome = FAILED, "unknown"
        st.reason = f"unknown: lost {'during' if during else 'after'} activate ({exc})"
        self.budget.fail(st.name, st.reason)
        self.log(st.key, st.reason, "stderr")
        self._close_host(st.key, FAILED, st.reason)

    async def _unhealthy(self, st: HostState, env: dict[str, str], exc: StepFailed) -> None:
        """The host is switched but unhealthy (or restart failed): roll it back."""
        d = self.config.deploy
        hk = st.key
        st.status, st.reason, st.outcome = FAILED, str(exc), "failed"
        self.budget.fail(st.name, st.reason)
        rkey = f"{hk}/rollback"
        if d.rollback_on_failure and st.current:
            self.status(rkey, RUNNING, f"to {st.current}")
            detail = await self._rollback_host(st, st.current, env)
            st.reason = f"{exc}; {detail}"
            st.outcome = "rolled-back" if "(healthy)" in detail else "rollback-failed"
            healthy = st.outcome == "rolled-back"
            self.status(rkey, OK if healthy else FAILED, f"to {st.current}" if healthy else detail)
        elif d.rollback_on_failure:
            st.reason = f"{exc}; no previous release to roll back to"
            self.status(rkey, SKIPPED, "no previous release")
        self._close_host(hk, FAILED, st.reason)

    async def _rollback_host(self, st: HostState, target: str, env: dict[str, str]) -> str:
        hk = f"{st.key}/rollback" if f"{st.key}/rollback" in self.plan else st.key
        host = st.host
        assert host is not None
        self.log(hk, f"rolling back to {target}", "stderr")
        switched = False
        try:
            res = await host.run(
                fenced(st.path, self.deploy_id, activate_script(st.path, target)), timeout=60
            )
            if not res.ok:
                why = (res.stdout.strip().splitlines()[-1:] or [""])[0]
                why = why if why.startswith("lock taken over") else res.stderr.strip()
                return f"rollback to {target} failed: {why[:200]}"
            switched = True
            self.log(hk, f"current -> releases/{target} (rolled back)")
            env = {
                **env,
                "SHIPDECK_RELEASE": target,
                "SHIPDECK_RELEASE_DIR": f"{st.path}/releases/{target}",
            }
            for command in self.config.deploy.after_activate:
                await self._run_hook(
                    host,
                    hk,
                    f"{st.path}/current",
                    command,
                    env,
                    self.config.deploy.hook_timeout,
                    fence=st.path,
                )
            # after an abort, one check says how the old release is; no retries
            healthy, detail = await self._health(
                host, hk, f"{st.path}/current", env, once=self.aborting
            )
        except (StepFailed, SSHError) as exc:
            if not switched:  # never say "rolled back" unless the switch was confirmed
                return f"rollback to {target} not confirmed ({exc}): unknown"
            return f"rolled back to {target}, but: {exc}"
        self.log(
            hk,
            f"rollback to {target}: {'healthy' if healthy else 'UNHEALTHY'}",
            "info" if healthy else "stderr",
        )
        return f"rolled back to {target} ({'healthy' if healthy else 'unhealthy: ' + detail})"

    def _disk_needed(self, st: HostState) -> int:
        pkg = self.package
        if pkg is None:
            return 0
        upload = 0 if st.artifact_sha == pkg.sha256 else pkg.size
        # the files' bytes, and a block per file for what the filesystem rounds up
        return upload + pkg.unpacked + 4096 * pkg.files

    async def _free_space_hint(self, st: HostState) -> str:
        try:
            res = await st.host.run(f"df -Pk {q(st.path)} | awk 'NR==2{{print $4}}'", timeout=10)  # type: ignore[union-attr]
            free = int(res.stdout.strip())
        except (SSHError, ValueError):
            return ""
        pkg = self.package
        if pkg is not None and free * 1024 < pkg.size:
            return f" (no space left on {st.path}: {free} KiB free, the package is {pkg.size // 1024} KiB)"
        return ""


class Rollback(_Run):
    """Switch ``current`` back to the previous release (or ``to``) on the selected hosts."""

    kind = "rollback"

    def __init__(
        self,
        config: Config,
        *,
        to: str | None = None,
        hosts: str | None = None,
        operator: str | None = None,
        prompter: Prompter | None = None,
        force_unlock: bool = False,
        history: History | None = None,
        without_relay: bool = False,
        all_at_once: bool = False,
    ):
        self.to = to
        #: switch every host at once instead of following the deploy's waves
        self.all_at_once = all_at_once
        super().__init__(
            config,
            hosts=hosts,
            operator=operator,
            prompter=prompter,
            force_unlock=force_unlock,
            history=history,
            without_relay=without_relay,
        )
        self.release_id = to or ""

    def _build_plan(self) -> Plan:
        """The deploy's waves (and failure budget), without its gates: a rollback does
        not wait for approvals. ``all_at_once``: one wave."""
        target = self.to or "previous release"
        if self.all_at_once:
            waves = [list(self.selected)]
            labels = [f"rollback to {target} (all at once)"]
        else:
            waves, labels, _ = wave_plan(self.selected, self.config.deploy)
            if len(waves) == 1:
                labels = [f"rollback to {target}"]
            else:
                labels = [f"{label}: rollback to {target}" for label in labels]
        plan = build_plan(
            self.deploy_id,
            [[h.name for h in w] for w in waves],
            meta={
                "kind": "rollback",
                "project": self.config.project.name,
                "ref": "",
                "sha": "",
                "release_id": self.to or "previous",
                "operator": self.operator,
                "hosts": len(self.selected),
            },
            steps=ROLLBACK_STEPS,
            wave_labels=labels,
            with_source=False,
        )
        for w, wave in enumerate(waves, start=1):
            for h in wave:
                key = f"release/wave-{w}/{h.name}"
                self.states[key] = HostState(name=h.name, key=key)
        return plan

    async def run(self) -> DeployResult:
        writer = self._start_history(self.to or "previous")
        self.emit(self.plan.to_event())
        if self.without_relay:
            self.log("release", "rolling back without the relay (--without-relay)", "stderr")
        connector = Connector(self.config.ssh, self.config.base_dir, prompter=self.prompter)
        self.status("release", RUNNING)
        try:
            await self._lock_all(connector, None)
            if not self.to and not self.stop_reason and not self.aborting:
                await self._choose_target()
            await self._run_waves(connector, lambda st: self._rollback(connector, st))
        finally:
            await asyncio.shield(self._unlock_all())
            await connector.close()
        targets = {st.outcome for st in self.states.values() if st.status == OK}
        return await self._finish(",".join(sorted(targets)), "", writer)

    async def _choose_target(self) -> None:
        """Without ``--to``: the newest release before the current one that EVERY
        selected host still has (read over the locked hosts' connections), so no host
        fails for lack of it and the fleet ends on one release."""
        from engine.releases import HostReleases, default_target, parse_probe

        locked = [st for st in self.states.values() if st.locked and st.host is not None]

        async def read(st: HostState) -> HostReleases:
            assert st.host is not None
            res = await st.host.run(releases_script(st.path), timeout=60)
            return parse_probe(st.name, res.stdout)

        found = await asyncio.gather(*(read(st) for st in locked), return_exceptions=True)
        hosts = [f for f in found if isinstance(f, HostReleases)]
        target = default_target(hosts, total=len(self.states))
        if target is None:
            self.stop_reason = (
                "no earlier release is on every selected host; choose one with --to "
                "(the TUI's picker shows which hosts have each)"
            )
            self.log("release", self.stop_reason, "stderr")
            return
        self.to = target
        self.log("release", f"rolling back to {target}: the newest earlier release on every host")
        self.emit(DeployMeta(self.deploy_id, meta={"release_id": target}))

    async def _rollback(self, connector: Connector, st: HostState) -> None:
        hk = st.key
        self.status(hk, RUNNING)
        target = sha = ""
        try:
            if not st.locked or st.host is None:
                raise StepFailed("the host's lock is not held")
            if st.lock_lost:
                raise StepFailed(st.lock_lost)
            res = await st.host.run(releases_script(st.path), timeout=60)
            releases = [line[8:] for line in res.stdout.splitlines() if line.startswith("release=")]
            revisions = [
                line[9:] for line in res.stdout.splitlines() if line.startswith("revision=")
            ]
            if self.to:
                if self.to not in releases:
                    self.status(f"{hk}/activate", FAILED, f"release {self.to} is not on this host")
                    raise StepFailed(
                        f"release {self.to} is not on this host (has: {', '.join(releases[-5:]) or 'none'})"
                    )
                target = self.to
            else:
                target = previous_release(st.current, releases, revisions)
                if not target:
                    self.status(f"{hk}/activate", FAILED, "no previous release")
                    raise StepFailed(
                        f"no release deployed before {st.current or 'current'} to roll back to"
                    )
            sha = sha_of_release(target, revisions)
            if sha and not self.plan.meta.get("sha"):
                self.emit(DeployMeta(self.deploy_id, meta={"sha": sha}))
            env = self._env(st, target, sha)
            await self._step(f"{hk}/activate", self._switch(st, target), shielded=True)
            st.activated = True
            cur = f"{st.path}/current"
            if self.config.deploy.after_activate:
                await self._step(
                    f"{hk}/restart", self._hooks(st, f"{hk}/restart", cur, env), shielded=True
                )
            else:
                self.status(f"{hk}/restart", SKIPPED, "no hooks")
            if self.config.deploy.health:
                self.status(f"{hk}/health", RUNNING)
                healthy, detail = await self._health(st.host, f"{hk}/health", cur, env)
                self.status(f"{hk}/health", OK if healthy else FAILED, detail)
                if not healthy:
                    raise StepFailed(detail)
            else:
                self.status(f"{hk}/health", SKIPPED, "no health check")
            st.status, st.outcome = OK, target
            self._close_host(hk, OK, f"{st.current} -> {target}")
        except _Aborted:
            st.status, st.outcome = CANCELLED, "cancelled"
            self._close_host(hk, CANCELLED, self.stop_reason or "aborted")
        except StepFailed as exc:
            st.status, st.outcome, st.reason = FAILED, "failed", str(exc)
            self.budget.fail(st.name, st.reason)
            if isinstance(exc, LockHeld) and not self.stop_reason:
                self.stop_reason = f"{st.name}: {exc}"
            self._close_host(hk, FAILED, st.reason)
        except Exception as exc:
            log.exception("host %s failed unexpectedly", st.name)
            st.status, st.outcome = FAILED, "failed"
            st.reason = f"unexpected error: {type(exc).__name__}: {exc}"
            self.budget.fail(st.name, st.reason)
            self._close_host(hk, FAILED, st.reason)
        finally:
            if st.host is not None:
                outcome = st.outcome
                st.outcome = "ok" if st.status == OK else outcome
                await self._finish_host(st, target or "-", sha, None)
                st.outcome = outcome

    async def _switch(self, st: HostState, target: str) -> str:
        assert st.host is not None
        res = await st.host.run(
            fenced(st.path, self.deploy_id, activate_script(st.path, target)), timeout=60
        )
        if not res.ok:
            last = (res.stdout.strip().splitlines()[-1:] or [""])[0]
            if last.startswith("lock taken over"):
                raise StepFailed(f"switch refused: {last[:200]}")
            raise StepFailed(f"switch failed: {(res.stderr or res.stdout).strip()[:300]}")
        return f"current -> {target}"

    async def _hooks(self, st: HostState, key: str, cwd: str, env: dict[str, str]) -> str:
        assert st.host is not None
        for command in self.config.deploy.after_activate:
            await self._run_hook(
                st.host, key, cwd, command, env, self.config.deploy.hook_timeout, fence=st.path
            )
        return f"{len(self.config.deploy.after_activate)} hook(s)"


_REVISION = re.compile(r"^\S+ (?P<kind>\w+) release=(?P<release>\S+) .*\boutcome=(?P<outcome>\S+)")


def sha_of_release(release: str, revisions: list[str]) -> str:
    """The commit a release was built from, from the newest revisions.log line naming it."""
    for line in reversed(revisions):
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("release") == release and fields.get("sha"):
            return fields["sha"]
    return ""


def previous_release(current: str, releases: list[str], revisions: list[str]) -> str:
    """The release deployed successfully just before ``current`` that is still on the
    host: by the order of successful deploys in revisions.log (not by names or times,
    which a same-second redeploy or a file written into a release can disturb);
    without a usable log, the newest release whose name sorts before ``current``."""
    deployed: list[str] = []
    for line in revisions:
        m = _REVISION.match(line)
        if m and m["kind"] == "deploy" and m["outcome"] == "ok" and m["release"] not in deployed:
            deployed.append(m["release"])
    present = set(releases)
    if current in deployed:
        for release in reversed(deployed[: deployed.index(current)]):
            if release in present:
                return release
        return ""
    older = sorted(r for r in releases if current and r < current)
    return older[-1] if older else ""


def _describe_owner(who: dict[str, Any]) -> str:
    if not who:
        return "an unknown owner (empty lock)"
    return f"{who.get('operator', '?')} (pid {who.get('pid', '?')} on {who.get('host', '?')}, since {who.get('since', '?')})"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _count_text(summary: Summary) -> str:
    parts = [f"{summary.ok}/{summary.hosts} ok"]
    for k in ("failed", "skipped", "cancelled"):
        if getattr(summary, k):
            parts.append(f"{getattr(summary, k)} {k}")
    return ", ".join(parts)


def _step_detail(name: str, out: list[str]) -> str:
    if name == "unpack":
        return out[-1] if out else ""
    if name == "activate":
        return out[-1] if out else ""
    if name == "health":
        return "healthy after 1 attempt"
    if name == "link":
        return f"{sum(1 for line in out if line.startswith('linked '))} shared linked"
    if name in ("before", "restart"):
        hooks = sum(1 for line in out if line.startswith("$ "))
        return f"{hooks} hook{'s' if hooks != 1 else ''}"
    if name == "cleanup":
        removed = [line for line in out if line.startswith("removed release")]
        return f"removed {len(removed)} old release(s)" if removed else "nothing to remove"
    return ""

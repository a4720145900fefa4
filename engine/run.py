"""Run control: what a deploy and a rollback share.

A :class:`Run` emits events to its subscribers, takes an abort or an approval from
outside, locks every selected host before anything changes (all or nothing,
:mod:`engine.fleetlock`), may run ``deploy.once`` (:mod:`engine.once`), moves through
the waves (failure budget, :mod:`engine.waves`; gates, :mod:`engine.gates`), and ends
with a summary, an exit code and a history row. What happens on one host is
:class:`engine.hostrelease.HostRelease`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.approvals import META_KEY as GATE_RULE_KEY
from engine.appsecrets import EnvFile, Redactor
from engine.balancer import Balancer
from engine.config import Config, HostSpec, resolve_size
from engine.errors import ConnectionLost, ExitCode, Interrupted, StepFailed
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
    Event,
    LogLine,
    NodeStatus,
    Summary,
    now,
)
from engine.fleetlock import lock_all, unlock_all
from engine.freeze import FREEZE_OVERRIDE, Hit, Override, check
from engine.gates import Gates
from engine.history import History, TranscriptWriter
from engine.hostlock import Aborted, HostState
from engine.hostrelease import HostRelease, Release
from engine.notify import Notifier
from engine.once import once_label, run_once
from engine.operator import default_operator
from engine.plan import Plan
from engine.remote.revisions import revision_line
from engine.remote.shell import utc_stamp
from engine.ssh import CommandTimeout, Connector, Host, Prompter, SSHError
from engine.state import RunState
from engine.strategy import Budget
from engine.upload import Transfers
from engine.waves import run_waves

log = logging.getLogger("shipdeck.engine")


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = (
    ExitCode.OK,
    ExitCode.FAILED,
    ExitCode.USAGE,
    ExitCode.STOPPED,
)

Subscriber = Callable[[Event], None]


@dataclass
class DeployResult:
    """How a run ended: ``status`` ok | failed | stopped, its exit code, its summary."""

    status: str
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)


class Run:
    """What deploys and rollbacks share: events, abort, approvals, the fleet lock,
    waves and gates, the summary and history."""

    kind = "deploy"
    #: the release this run goes to (a deploy's, once fetched; a rollback's target)
    release_id: str = ""

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
        freeze_override: Override | None = None,
    ):
        self.config = config
        #: ``--override-freeze --reason``: who asks, why, with which role (see
        #: :func:`engine.freeze.check`); the window it overrides is :attr:`freeze_hit`
        self.freeze_override = freeze_override
        self.freeze_hit: Hit | None = None
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
        #: set once an abort is requested (never cleared)
        self.abort_event = asyncio.Event()
        self.aborted_by = ""
        #: the approval gates between waves: which one waits, the approvals given
        self.gates = Gates(self)
        self.states: dict[str, HostState] = {}
        self.hosts: dict[str, HostRelease] = {}
        self.budget = Budget.from_config(config.deploy.max_fail, len(self.selected))
        self.stop_reason = ""
        self._early: dict[str, asyncio.Future[Host]] = {}
        #: the hosts' connections while the run holds them (their wire counters go
        #: into the summary)
        self.connector: Connector | None = None
        self.plan: Plan = self._build_plan()
        if config.env:  # the room, the transcript and the TUI header say which environment
            self.plan.meta["env"] = config.env
        rule = self.gates.rule.to_meta()
        if rule is not None and any(n.kind == "gate" for n in self.plan):
            # the room's relay refuses what the rule does not count, as the engine does
            self.plan.meta[GATE_RULE_KEY] = rule
        #: takes hosts out of rotation and back (None: no balancer, no drain hooks)
        self.balancer = Balancer.of(
            config, lambda: Connector(config.ssh, config.base_dir, prompter=self.prompter)
        )
        limit = config.deploy.max_unavailable
        #: at most ``deploy.max_unavailable`` hosts of the fleet drained or restarting
        self.unavailable = (
            asyncio.Semaphore(max(1, resolve_size(limit, len(self.selected)))) if limit else None
        )
        #: hides the app's secret values from every event (``[secrets]``; none until
        #: the env file is made)
        self.redactor = Redactor()
        #: the app's env file, once made (``[secrets]``): each host gets it
        self.env_file: EnvFile | None = None
        #: the run's state, from its own events (the one reducer every follower uses)
        self.state = RunState(self.plan)
        #: runs the ``[[notify]]`` commands (None: the config has none)
        self.notifier = Notifier.of(self)
        if self.notifier is not None:
            self.subscribe(self.notifier)
        #: how the artifact gets to each host (patches made once, sites' copies)
        self.transfers = Transfers(config)

    # -- plan and events -----------------------------------------------------

    def _build_plan(self) -> Plan:  # pragma: no cover - overridden
        raise NotImplementedError

    def _add_hosts(self, waves: list[list[HostSpec]]) -> None:
        """One :class:`HostRelease` per host of the plan, keyed by its node."""
        for w, wave in enumerate(waves, start=1):
            for h in wave:
                key = f"release/wave-{w}/{h.name}"
                st = self.states[key] = HostState(name=h.name, key=key)
                self.hosts[key] = HostRelease(self, st)

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(event)`` for every event, in order, on the event loop."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def hide(self, values: tuple[str, ...]) -> None:
        """Mask these values in every event from now on (the app's secrets)."""
        self.redactor = Redactor((*self.redactor.values, *values))

    def emit(self, event: Event) -> None:
        if self.redactor:  # nobody (transcript, room, terminal, notify) sees a secret
            event = self.redactor.event(event)
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
        return self.abort_event.is_set()

    def abort(self, by: str = "", reason: str = "") -> None:
        """Stop at the next safe point: no new step starts; a host between activate
        and its health check (or rollback) finishes that first. Idempotent."""
        if self.abort_event.is_set():
            return
        self.aborted_by = by or self.operator
        self.stop_reason = reason or f"aborted by {self.aborted_by}"
        self.abort_event.set()
        self.emit(Control(self.deploy_id, action="abort", by=self.aborted_by, key="", at=now()))
        self.log(
            "release", f"abort requested by {self.aborted_by}" + (f": {reason}" if reason else "")
        )

    def approve(self, by: str = "", key: str | None = None) -> bool:
        """Approve the waiting gate (or ``key``). Returns False if no gate waits."""
        return self.gates.approve(by, key)

    @property
    def waiting_gate(self) -> str | None:
        """The key of the gate waiting for an approval, if one does."""
        return self.gates.waiting

    async def pause(self, seconds: float, abortable: bool) -> None:
        """Sleep, or less when an abort comes (if ``abortable``)."""
        if not abortable:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.abort_event.wait()), seconds)
        except TimeoutError:
            pass

    async def abortable(self, host: Host, work: Awaitable[Any]) -> Any:
        """Await ``work`` (a command on ``host``); an abort signals what runs on the
        host and raises Interrupted once it has stopped."""
        task = asyncio.ensure_future(work)
        aborted = asyncio.ensure_future(self.abort_event.wait())
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

    # -- hosts ---------------------------------------------------------------

    def close_host(self, hkey: str, status: str, detail: str = "") -> None:
        """Mark the host's unfinished steps and the host itself."""
        for node in self.plan.kids(hkey):
            if node.status in (PENDING, RUNNING, WAITING):
                never_ran = node.key.endswith("/rollback") and node.status == PENDING
                self.status(node.key, SKIPPED if never_ran or status == FAILED else status)
        self.status(hkey, status, detail)

    async def step(self, key: str, work: Any, *, shielded: bool = False) -> Any:
        """Run one step: running -> ok/failed with timing. Checks abort first (unless
        ``shielded``). Raises Aborted, StepFailed for a failed or timed-out step,
        ConnectionLost when the host's connection broke."""
        if self.aborting and not shielded:
            if asyncio.iscoroutine(work):
                work.close()
            raise Aborted()
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
            raise ConnectionLost(str(exc)) from None
        detail = result if isinstance(result, str) else ""
        if self.plan[key].status == RUNNING:
            self.status(key, OK, detail)
        return result

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

    def disk_needed(self, st: HostState) -> int:
        """Bytes a release needs on the host: the artifact (unless there) and its unpacked size."""
        return 0

    def revision(self, release_id: str, sha: str, outcome: str) -> str:
        """The host's revisions.log line for this run."""
        hit, override = self.freeze_hit, self.freeze_override
        line = revision_line(
            release_id,
            sha,
            self.operator,
            outcome,
            self.deploy_id,
            self.kind,
            env=self.config.env,
            freeze_override=override.reason if hit is not None and override is not None else None,
        )
        return line + (" relay=skipped" if self.without_relay else "")

    def found_sha(self, sha: str) -> None:
        """A host told the commit of the release this run goes to."""

    # -- the fleet lock, the run-once stage, waves and gates ---------------------

    @property
    def stopping(self) -> bool:
        """No host starts: aborted, the failure budget spent, or a stop reason given."""
        return self.aborting or self.budget.exceeded or bool(self.stop_reason)

    def budget_reason(self, *, before_change: bool = False) -> str:
        """Why the run stops once the failure budget is spent."""
        when = " before anything changed" if before_change else ""
        return (
            f"failure budget exceeded{when}: {len(self.budget.failed)} failed, "
            f"max_fail allows {self.budget.allowed}"
        )

    async def _lock_all(self, connector: Connector, artifact_sha: str | None) -> bool:
        """Connect to and lock every selected host: :func:`engine.fleetlock.lock_all`."""
        return await lock_all(self, connector, artifact_sha)

    async def _unlock_all(self) -> None:
        """Give back every lock this run holds."""
        await unlock_all(self)

    async def _run_once(self, release: Release) -> None:
        """The ``deploy.once`` stage: :func:`engine.once.run_once`."""
        await run_once(self, release)

    async def _run_waves(self, flow: Callable[[HostRelease], Awaitable[None]]) -> None:
        """Run ``flow`` on every host, wave after wave: :func:`engine.waves.run_waves`."""
        await run_waves(self, flow)

    async def _gate(self, index: int) -> None:
        """Wait at the gate after wave ``index`` (approved, or the run aborts)."""
        await self.gates.wait(index)

    # -- summary -------------------------------------------------------------

    def _summary(self, release_id: str) -> tuple[str, int, Summary]:
        status, summary = self.state.summarize(
            reason=self.redactor.text(self.stop_reason),
            release_id=release_id,
            duration=round(time.time() - self.started_at, 3),
            relay="skipped (--without-relay)" if self.without_relay else "",
            wire=self.connector.wire_summary() if self.connector is not None else None,
        )
        assert summary.exit_code is not None
        if self.gates.given:  # who approved each gate, and when (the history keeps it)
            summary.extra["approvals"] = {k: list(v) for k, v in self.gates.given.items()}
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
        for hr in self.hosts.values():
            hr.stop_heartbeat()
        if self.balancer is not None:
            await self.balancer.close()
        status, code, report = self._summary(release_id)
        self.status(
            "release",
            {OK: OK, "failed": FAILED}.get(status, FAILED if report.failed else CANCELLED),
            _count_text(report),
        )
        summary = report.to_json()
        self.emit(DeployFinished(self.deploy_id, status=status, summary=summary, at=now()))
        if self.notifier is not None:  # the last commands, each within its timeout
            await self.notifier.drain()
        try:
            self.history.update(self.deploy_id, sha=sha, release_id=release_id)
            self.history.finish(self.deploy_id, status, code, summary, self._host_rows(release_id))
        except Exception as exc:  # history must not turn a deploy into a crash
            log.warning("could not record history: %s", exc)
        if writer is not None:
            self.unsubscribe(writer)
            writer.close()
        return DeployResult(status=status, exit_code=code, summary=summary)

    # -- freeze windows ------------------------------------------------------------

    def check_freeze(self, at: datetime.datetime | None = None) -> Hit | None:
        """Whether this run may start at ``at`` (default: now) under the config's
        ``[[freeze]]`` windows: None, or the window its override lets it through
        (kept in :attr:`freeze_hit`, recorded everywhere). Raises
        :class:`engine.freeze.Frozen` (exit 3) naming the window otherwise."""
        moment = at or datetime.datetime.now(datetime.UTC)
        self.freeze_hit = check(
            self.config.freeze,
            moment,
            kind=self.kind,
            override=self.freeze_override,
            relay=self.config.relay is not None,
        )
        return self.freeze_hit

    def announce_freeze_override(self) -> None:
        """After the plan: the override as a control event (the room records it, the
        transcript keeps it) and a line in the release's log."""
        hit, override = self.freeze_hit, self.freeze_override
        if hit is None or override is None:
            return
        role = f" ({override.role})" if override.role else ""
        self.emit(
            Control(
                self.deploy_id,
                action=FREEZE_OVERRIDE,
                by=override.by,
                key=hit.window.title,
                at=now(),
                reason=override.reason,
            )
        )
        self.log("release", f"{hit.text()}; overridden by {override.by}{role}: {override.reason}", "stderr")

    def _freeze_record(self) -> dict[str, Any] | None:
        hit, override = self.freeze_hit, self.freeze_override
        if hit is None or override is None:
            return None
        return {**hit.to_json(), "override_reason": override.reason, "by": override.by, "role": override.role}

    def _start_history(self, ref: str) -> TranscriptWriter | None:
        """Check the freeze windows (raises :class:`engine.freeze.Frozen`), then record
        the run as started."""
        self.check_freeze()
        try:
            self.history.start(
                self.deploy_id,
                self.kind,
                self.config.project.name,
                ref,
                self.operator,
                str(self.config.path),
                env=self.config.env,
                freeze_override=self._freeze_record(),
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


def _count_text(summary: Summary) -> str:
    parts = [f"{summary.ok}/{summary.hosts} ok"]
    for k in ("failed", "skipped", "cancelled"):
        if getattr(summary, k):
            parts.append(f"{getattr(summary, k)} {k}")
    return ", ".join(parts)


__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "DeployResult",
    "Run",
    "Subscriber",
    "default_operator",
    "once_label",
]

"""An ad-hoc command across the fleet (``shipdeck exec``): waves, the failure
budget, one connection per host, every line of output as an event.

:func:`run_exec` runs :func:`~engine.remote.exec.exec_script` on the selected
hosts wave by wave (:func:`engine.strategy.wave_plan`; no approval gates), at most
``parallel`` hosts at once. A host whose command exits non-zero, or that cannot be
reached, counts against ``deploy.max_fail`` (:class:`engine.strategy.Budget`); once
the budget is exceeded (or the run is stopped) the waves not started are skipped.

An exec is a plan like a deploy's (:func:`exec_plan`: ``release`` labelled with the
command, its waves, a host node per host, no steps), so every follower draws it with
the one reducer (:class:`engine.state.RunState`): events (the one vocabulary:
:class:`~engine.events.PlanReady` first, then :class:`~engine.events.NodeStatus` of
the run, waves and hosts, each host's output as :class:`~engine.events.LogLine`, and
:class:`~engine.events.DeployFinished`) go to ``emit``, which the headless printer,
the history transcript and the TUI share. A host node's detail is its exit status (how long it ran is the
times of its events). :class:`ExecRunner` is the run as the TUI drives it (plan
first, then ``run()``, ``abort()``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import ExitCode
from engine.events import (
    FAILED,
    OK,
    RUNNING,
    SKIPPED,
    DeployFinished,
    Event,
    LogLine,
    NodeStatus,
    Summary,
)
from engine.plan import Plan, build_plan, host_key
from engine.remote.exec import NO_DIR_EXIT, exec_script
from engine.remote.shell import utc_stamp
from engine.strategy import Budget, wave_plan

__all__ = ["ExecResult", "ExecRunner", "HostRun", "exec_plan", "new_exec_id", "run_exec"]

#: the command as the plan's root label shows it (the whole one is in meta)
LABEL_CHARS = 80


def new_exec_id() -> str:
    """``exec-<UTC stamp>-<hex>``: the history id of one exec."""
    return f"exec-{utc_stamp()}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class HostRun:
    """One host's run: its exit status (None: it never ran), how long, why not."""

    host: str
    exit_status: int | None = None
    duration: float = 0.0
    error: str = ""
    status: str = SKIPPED

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "status": self.status,
            "exit_status": self.exit_status,
            "duration": round(self.duration, 3),
            "error": self.error,
        }


@dataclass
class ExecResult:
    """Every selected host's run, in config order; whether the budget stopped it."""

    exec_id: str
    hosts: list[HostRun] = field(default_factory=list)
    stopped: bool = False

    @property
    def status(self) -> str:
        """``ok``, ``failed`` or ``stopped``, as a deploy's."""
        code = self.exit_code
        return OK if code == ExitCode.OK else "stopped" if code == ExitCode.STOPPED else FAILED

    @property
    def exit_code(self) -> int:
        """0 only if every host returned 0; 3 when the budget stopped it; else 1."""
        if self.stopped:
            return ExitCode.STOPPED
        return ExitCode.OK if all(h.status == OK for h in self.hosts) else ExitCode.FAILED


def exec_plan(
    exec_id: str,
    waves: list[list[Any]],
    command: str,
    *,
    labels: list[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> Plan:
    """The exec's tree: ``release`` (labelled ``exec: <command>``) -> waves -> a host
    node per host (keys :func:`engine.plan.host_key`); ``meta`` has ``kind: exec`` and
    the whole command."""
    label = " ".join(command.split())
    if len(label) > LABEL_CHARS:
        label = label[: LABEL_CHARS - 1] + "…"
    plan = build_plan(
        exec_id,
        [[spec.name for spec in wave] for wave in waves],
        meta={**(meta or {}), "kind": "exec", "command": command},
        steps=(),
        wave_labels=labels,
        with_source=False,
    )
    plan["release"].label = f"exec: {label}"
    return plan


class ExecRunner:
    """One exec as the TUI drives a run: ``plan`` before it starts, ``subscribe``
    (and ``unsubscribe``), ``await run()`` (an :class:`ExecResult` with ``status``),
    ``abort()`` (the waves not started are skipped; running hosts finish); linked to
    a relay room like a deploy (:func:`relay.publish.link_deployment`)."""

    def __init__(
        self,
        config: Any,
        specs: list[Any],
        command: str,
        *,
        operator: str,
        cwd: str | None = None,
        parallel: int | None = None,
        prompter: Any = None,
        history: Any = None,
    ) -> None:
        self.config = config
        self.specs = list(specs)
        self.command = command
        self.operator = operator
        self.cwd = cwd
        self.parallel = parallel
        self.prompter = prompter
        self.history = history
        self.deploy_id = new_exec_id()
        waves, labels, _ = wave_plan(self.specs, config.deploy)
        meta = {
            "project": config.project.name,
            "operator": operator,
            "cwd": cwd or "current",
            "env": getattr(config, "env", "") or "",
        }
        self.plan = exec_plan(self.deploy_id, waves, command, labels=labels, meta=meta)
        self.waves = waves
        self.stop = asyncio.Event()
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Event], None]) -> None:
        """Stop calling ``callback`` (a relay room's link, when the run is over)."""
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def approve(self, by: str = "", key: str | None = None) -> None:
        """An exec has no gates: a room's approval changes nothing."""

    def _emit(self, event: Event) -> None:
        for callback in self._subscribers:
            callback(event)

    def abort(self, by: str = "", reason: str = "") -> None:
        self.stop.set()

    async def run(self) -> ExecResult:
        """Run it; recorded in history (with its transcript) when there is one."""
        emit = self._emit
        transcript = None
        if self.history is not None:
            from engine.history import TranscriptWriter

            self.history.start(
                self.deploy_id, "exec", self.config.project.name, "", self.operator,
                str(self.config.path),
            )  # fmt: skip
            transcript = TranscriptWriter(self.history, self.deploy_id)

            def emit(event: Event) -> None:
                transcript(event)
                self._emit(event)

        result: ExecResult | None = None
        try:
            result = await run_exec(
                self.config, self.specs, self.command, emit=emit, exec_id=self.deploy_id,
                operator=self.operator, cwd=self.cwd, parallel=self.parallel,
                prompter=self.prompter, plan=self.plan, waves=self.waves, stop=self.stop,
            )  # fmt: skip
            return result
        finally:
            if transcript is not None:
                transcript.close()
                record(self.history, self.deploy_id, self.command, self.cwd, result)


def host_outcome(h: HostRun) -> str:
    """A host's outcome as its node's detail: the error, ``not run``, or ``exit N``
    (how long it took is the node's own: its running and done events' times)."""
    if h.error:
        return h.error
    if h.exit_status is None:
        return "not run"
    return f"exit {h.exit_status}"


def host_detail(h: HostRun) -> str:
    """A host's outcome in words where nothing else says how long it took (history,
    the failure budget): the error, ``not run``, or ``exit N in 1.2s``."""
    if h.error or h.exit_status is None:
        return host_outcome(h)
    return f"exit {h.exit_status} in {h.duration:.1f}s"


def record(history: Any, exec_id: str, command: str, cwd: str | None, result: Any) -> None:
    """The exec's end in history: status, exit code, the command and each host."""
    code = int(result.exit_code) if result else int(ExitCode.STOPPED)
    status = "ok" if code == 0 else "failed" if code == 1 else "stopped"
    summary = {"command": command, "cwd": cwd or "current"}
    hosts = [
        {"host": h.host, "status": h.status, "detail": host_detail(h)}
        for h in (result.hosts if result else [])
    ]
    history.finish(exec_id, status, code, summary, hosts)


async def run_exec(
    config: Any,
    specs: list[Any],
    command: str,
    *,
    emit: Callable[[Event], None],
    exec_id: str,
    operator: str,
    cwd: str | None = None,
    parallel: int | None = None,
    batches: tuple[str, ...] | None = None,
    prompter: Any = None,
    plan: Plan | None = None,
    waves: list[list[Any]] | None = None,
    stop: asyncio.Event | None = None,
) -> ExecResult:
    """Run ``command`` on ``specs`` (see the module docstring). ``plan``/``waves``:
    the :func:`exec_plan` already made (else made here); ``stop``: when set, the waves
    not started are skipped. Never raises for a host: one that fails or cannot be
    reached has ``error`` or a non-zero status."""
    from engine.ssh import Connector

    if waves is None or plan is None:
        plan, waves = _planned(config, specs, command, exec_id, operator, batches)
    script = exec_script(config.deploy.path, command, cwd=cwd, operator=operator, exec_id=exec_id)
    run = _ExecRun(
        exec_id,
        emit,
        Connector(config.ssh, config.base_dir, prompter=prompter),
        script,
        Budget.from_config(config.deploy.max_fail, len(specs)),
        asyncio.Semaphore(max(1, parallel or config.deploy.parallel)),
        waves,
    )
    return await run.run(plan, stop)


class _ExecRun:
    """One ``exec``: its hosts' runs, wave after wave, within the failure budget."""

    def __init__(
        self,
        exec_id: str,
        emit: Callable[[Event], None],
        connector: Any,
        script: str,
        budget: Budget,
        limit: asyncio.Semaphore,
        waves: list[list[Any]],
    ) -> None:
        self.exec_id, self.emit, self.connector, self.script = exec_id, emit, connector, script
        self.budget, self.limit, self.waves = budget, limit, waves
        self.runs = {spec.name: HostRun(spec.name) for wave in waves for spec in wave}
        self.keys = {s.name: host_key(n, s.name) for n, wave in enumerate(waves, 1) for s in wave}
        self.result = ExecResult(exec_id, list(self.runs.values()))

    def status(self, key: str, state: str, detail: str = "") -> None:
        self.emit(NodeStatus(self.exec_id, key=key, status=state, at=time.time(), detail=detail))

    async def run(self, plan: Plan, stop: asyncio.Event | None) -> ExecResult:
        started = time.monotonic()
        result = self.result
        self.emit(plan.to_event())
        self.status("release", RUNNING)
        try:
            for number, wave in enumerate(self.waves, 1):
                wkey = f"release/wave-{number}"
                if self.budget.exceeded or (stop is not None and stop.is_set()):
                    result.stopped = True
                    for key in (wkey, *(self.keys[spec.name] for spec in wave)):
                        self.status(key, SKIPPED)
                    continue
                self.status(wkey, RUNNING)
                await asyncio.gather(*(self.one(spec) for spec in wave))
                ok = all(self.runs[s.name].status == OK for s in wave)
                self.status(wkey, OK if ok else FAILED)
        finally:
            await self.connector.close()
        result.stopped = result.stopped or self.budget.exceeded
        self.status("release", OK if result.exit_code == 0 else FAILED)
        self.emit(_finished(result, self.budget, time.monotonic() - started))
        return result

    async def one(self, spec: Any) -> None:
        run, key = self.runs[spec.name], self.keys[spec.name]
        async with self.limit:
            self.status(key, RUNNING)
            await _exec_on(self.connector, spec, self.script, run, key, self.exec_id, self.emit)
        run.status = OK if run.exit_status == 0 else FAILED
        if run.status == FAILED:
            self.budget.fail(spec.name, host_detail(run))
        self.status(key, run.status, host_outcome(run))


def _planned(
    config: Any,
    specs: list[Any],
    command: str,
    exec_id: str,
    operator: str,
    batches: tuple[str, ...] | None,
) -> tuple[Plan, list[list[Any]]]:
    deploy = replace(config.deploy, batches=batches) if batches else config.deploy
    waves, labels, _ = wave_plan(list(specs), deploy)
    return exec_plan(exec_id, waves, command, labels=labels, meta={"operator": operator}), waves


async def _exec_on(
    connector: Any,
    spec: Any,
    script: str,
    run: HostRun,
    key: str,
    exec_id: str,
    emit: Callable[[Event], None],
) -> None:
    """The command on one host: its output as log lines of ``key``, its exit status
    (or why it could not run) and duration into ``run``."""
    from engine.ssh import SSHError

    def on_line(stream: str, text: str) -> None:
        emit(LogLine(exec_id, key=key, stream=stream, text=text, at=time.time()))

    t0 = time.monotonic()
    try:
        host = await connector.connect(spec)
        res = await host.run(script, on_line=on_line)
        run.exit_status = res.exit_status
        if res.exit_status == NO_DIR_EXIT:
            run.error = (res.stderr.strip().splitlines() or ["no such directory"])[-1][:300]
    except (TimeoutError, SSHError, OSError) as exc:
        run.error = str(exc)[:300] or type(exc).__name__
    run.duration = time.monotonic() - t0


def _finished(result: ExecResult, budget: Budget, duration: float) -> DeployFinished:
    hosts = result.hosts
    summary = Summary(
        hosts=len(hosts),
        ok=sum(h.status == OK for h in hosts),
        failed=sum(h.status == FAILED for h in hosts),
        skipped=sum(h.status == SKIPPED for h in hosts),
        failures=dict(budget.failed),
        reason=(
            "failure budget exceeded"
            if budget.exceeded
            else "stopped before every wave ran"
            if result.stopped
            else ""
        ),
        exit_code=int(result.exit_code),
        duration=round(duration, 3),
    )
    status = "stopped" if result.stopped else OK if result.exit_code == 0 else FAILED
    return DeployFinished(result.exec_id, status=status, summary=summary.to_json(), at=time.time())

"""An ad-hoc command across the fleet (``shipdeck exec``): waves, the failure
budget, one connection per host, every line of output as an event.

:func:`run_exec` runs :func:`~engine.remote.exec.exec_script` on the selected
hosts wave by wave (:func:`engine.strategy.wave_plan`; no approval gates), at most
``parallel`` hosts at once. A host whose command exits non-zero, or that cannot be
reached, counts against ``deploy.max_fail`` (:class:`engine.strategy.Budget`); once
the budget is exceeded the waves not started are skipped. Events (the one
vocabulary: :class:`~engine.events.LogLine`, :class:`~engine.events.NodeStatus`,
:class:`~engine.events.DeployFinished`) go to ``emit``, which the headless printer
and the history transcript share.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import ExitCode
from engine.events import FAILED, OK, SKIPPED, DeployFinished, Event, LogLine, NodeStatus, Summary
from engine.remote.exec import NO_DIR_EXIT, exec_script
from engine.remote.shell import utc_stamp
from engine.strategy import Budget, wave_plan

__all__ = ["ExecResult", "HostRun", "new_exec_id", "run_exec"]


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
    def exit_code(self) -> int:
        """0 only if every host returned 0; 3 when the budget stopped it; else 1."""
        if self.stopped:
            return ExitCode.STOPPED
        return ExitCode.OK if all(h.status == OK for h in self.hosts) else ExitCode.FAILED


def _detail(run: HostRun) -> str:
    if run.error:
        return run.error
    return f"exit {run.exit_status} in {run.duration:.1f}s"


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
) -> ExecResult:
    """Run ``command`` on ``specs`` (see the module docstring). Never raises for a
    host: one that fails or cannot be reached has ``error`` or a non-zero status."""
    from engine.ssh import Connector, SSHError

    deploy = replace(config.deploy, batches=batches) if batches else config.deploy
    waves, _, _ = wave_plan(list(specs), deploy)
    budget = Budget.from_config(config.deploy.max_fail, len(specs))
    limit = asyncio.Semaphore(max(1, parallel or config.deploy.parallel))
    script = exec_script(config.deploy.path, command, cwd=cwd, operator=operator, exec_id=exec_id)
    connector = Connector(config.ssh, config.base_dir, prompter=prompter)
    runs = {spec.name: HostRun(spec.name) for spec in specs}
    result = ExecResult(exec_id, list(runs.values()))
    started = time.monotonic()

    async def one(spec: Any) -> None:
        run = runs[spec.name]

        def on_line(stream: str, text: str) -> None:
            emit(LogLine(exec_id, key=spec.name, stream=stream, text=text, at=time.time()))

        async with limit:
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
        run.status = OK if run.exit_status == 0 else FAILED
        if run.status == FAILED:
            budget.fail(spec.name, _detail(run))
        emit(
            NodeStatus(
                exec_id, key=spec.name, status=run.status, at=time.time(), detail=_detail(run)
            )
        )

    try:
        for wave in waves:
            if budget.exceeded:
                result.stopped = True
                for spec in wave:
                    emit(NodeStatus(exec_id, key=spec.name, status=SKIPPED, at=time.time()))
                continue
            await asyncio.gather(*(one(spec) for spec in wave))
    finally:
        await connector.close()
    result.stopped = result.stopped or budget.exceeded
    emit(_finished(result, budget, time.monotonic() - started))
    return result


def _finished(result: ExecResult, budget: Budget, duration: float) -> DeployFinished:
    hosts = result.hosts
    summary = Summary(
        hosts=len(hosts),
        ok=sum(h.status == OK for h in hosts),
        failed=sum(h.status == FAILED for h in hosts),
        skipped=sum(h.status == SKIPPED for h in hosts),
        failures=dict(budget.failed),
        reason="failure budget exceeded" if result.stopped else "",
        exit_code=int(result.exit_code),
        duration=round(duration, 3),
    )
    status = "stopped" if result.stopped else OK if result.exit_code == 0 else FAILED
    return DeployFinished(result.exec_id, status=status, summary=summary.to_json(), at=time.time())

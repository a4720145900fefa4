"""A run's waves: every host's flow, wave after wave, at most ``deploy.parallel`` at
once; a wave starts only when the one before is done and healthy (the failure
budget, a failed canary) and its gate (:mod:`engine.gates`) is approved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from engine.events import CANCELLED, FAILED, OK, PENDING, RUNNING, SKIPPED, WAITING
from engine.plan import Node

if TYPE_CHECKING:
    from engine.hostrelease import HostRelease
    from engine.run import Run


async def run_waves(run: Run, flow: Callable[[HostRelease], Awaitable[None]]) -> None:
    """Run ``flow`` on every host of ``run``, wave after wave (see the module)."""
    sem = asyncio.Semaphore(run.config.deploy.parallel)
    waves = run.plan.waves()

    async def one(hnode: Node) -> None:
        hr = run.hosts[hnode.key]
        if hr.st.status == FAILED:  # failed while connecting or locking
            return
        async with sem:
            if run.stopping:
                skip_host(run, hnode.key)
                return
            await flow(hr)

    for index, wave in enumerate(waves, start=1):
        hosts = run.plan.kids(wave.key)
        if run.stopping:
            _skip_wave(run, index, wave, hosts)
            continue
        run.status(wave.key, RUNNING)
        await asyncio.gather(*(one(h) for h in hosts))
        _wave_done(run, wave, hosts, last=index == len(waves))
        if index < len(waves):
            await run._gate(index)


def skip_host(run: Run, key: str) -> None:
    """Close host ``key`` without starting it: cancelled (abort) or skipped."""
    run.close_host(key, CANCELLED if run.aborting else SKIPPED, run.stop_reason)


def _skip_wave(run: Run, index: int, wave: Node, hosts: list[Node]) -> None:
    status = CANCELLED if run.aborting else SKIPPED
    for h in hosts:
        if h.status in (PENDING, RUNNING, WAITING):
            run.close_host(h.key, status, run.stop_reason)
    run.status(wave.key, status, run.stop_reason)
    run.gates.close(index, status)


def _wave_done(run: Run, wave: Node, hosts: list[Node], *, last: bool) -> None:
    """Close a wave that ran; decide whether the next one may start."""
    counts = run.plan.counts(wave.key)
    failed = counts.get(FAILED, 0)
    detail = f"{counts.get(OK, 0)}/{len(hosts)} ok" + (f", {failed} failed" if failed else "")
    if run.budget.exceeded and not run.stop_reason:
        run.stop_reason = run.budget_reason()
        run.log("release", run.stop_reason, "stderr")
    if hosts and failed == len(hosts) and not run.stop_reason and not last:
        # a wave where every host failed (a failed canary) is not "done and
        # healthy": the next wave does not start, whatever the budget says
        run.stop_reason = f"every host of {wave.label} failed; not starting the next wave"
        run.log("release", run.stop_reason, "stderr")
    if failed:
        status = FAILED
    else:
        status = CANCELLED if run.aborting and not counts.get(OK) else OK
    run.status(wave.key, status, detail)

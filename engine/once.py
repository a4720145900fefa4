"""The run-once stage (``deploy.once``): stage every locked host (all waves), then run
the commands on one host, every lock still held. If that fails (or no host can run
them) the run stops with nothing switched anywhere: the staged releases are removed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from engine.errors import StepFailed
from engine.events import CANCELLED, FAILED, SKIPPED, WAITING
from engine.hostlock import Aborted

if TYPE_CHECKING:
    from engine.config import Config, HostSpec
    from engine.hostrelease import HostRelease, Release
    from engine.run import Run

KEY = "release/once"


def once_label(config: Config, waves: list[list[HostSpec]]) -> str:
    """The run-once stage's node label ("" when ``deploy.once`` is empty)."""
    d = config.deploy
    if not d.once:
        return ""
    first = waves[0][0].name if waves and waves[0] else "?"
    return f"once on {d.once_host or first}: {'; '.join(d.once)}"


async def run_once(run: Run, release: Release) -> None:
    """The stage, when ``deploy.once`` is set (see the module). Never raises for a
    failure: the run's ``stop_reason`` says why it stops."""
    if not run.config.deploy.once:
        return
    if run.stopping:
        _close(run)
        return
    run.status(KEY, WAITING, "waiting for every host to be unpacked")
    await _stage_all(run, release)
    hr = once_host(run)
    if run.budget.exceeded and not run.stop_reason:
        run.stop_reason = run.budget_reason(before_change=True)
    await _run_on(run, hr, release)
    if run.stopping:
        run.log("release", f"nothing switched: {run.stop_reason}", "stderr")
        staged = [h for h in run.hosts.values() if h.staged and h.st.locked]
        await asyncio.gather(*(h.unstage() for h in staged))


def once_host(run: Run) -> HostRelease | None:
    """``deploy.once_host`` (by name or address), else the first host of the first
    wave unpacked; None when that host is not there (or not unpacked)."""
    want = run.config.deploy.once_host
    for hr in run.hosts.values():
        spec = run._spec(hr.st.name)
        if (want is None or want in (spec.name, spec.host)) and hr.staged:
            return hr
        if want is not None and want in (spec.name, spec.host):
            return None
    return None


def _close(run: Run) -> None:
    run.status(KEY, CANCELLED if run.aborting else SKIPPED, run.stop_reason)


async def _stage_all(run: Run, release: Release) -> None:
    """Stage the release on every locked host that has not failed."""
    sem = asyncio.Semaphore(run.config.deploy.parallel)

    async def stage(hr: HostRelease) -> None:
        if hr.st.status != FAILED and hr.st.locked:
            async with sem:
                await hr.prepare(release)

    await asyncio.gather(*(stage(hr) for hr in run.hosts.values()))


async def _run_on(run: Run, hr: HostRelease | None, release: Release) -> None:
    """Run the commands on ``hr``, unless the run stops or there is no host to run them."""
    if not run.stopping and hr is None:
        run.stop_reason = (
            f"no unpacked host to run deploy.once on ({run.config.deploy.once_host or 'first'})"
        )
        run.status(KEY, FAILED, run.stop_reason)
    elif run.stopping or hr is None:
        _close(run)
    else:
        try:
            await run.step(KEY, hr.run_once(release))
        except (StepFailed, Aborted) as exc:
            run.stop_reason = run.stop_reason or f"deploy.once failed on {hr.st.name}: {exc}"

"""The fleet lock: every selected host is connected to and locked before anything
changes anywhere, all or nothing.

A host that cannot be reached or written fails alone (the failure budget). A host
whose lock another live deploy holds makes the run give back every lock it took and
try again, backing off, for ``deploy.lock_wait`` seconds; then the run stops with
nothing changed. One host's lock is :class:`engine.hostlock.HostLock`.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from engine.errors import LockHeld, StepFailed
from engine.events import FAILED, WAITING
from engine.hostlock import Aborted, HostState

if TYPE_CHECKING:
    from engine.hostrelease import HostRelease
    from engine.run import Run
    from engine.ssh import Connector

#: hosts whose lock another run holds, with what their lock said
Held = list[tuple[HostState, LockHeld]]


async def unlock_all(run: Run) -> None:
    """Give back every lock ``run`` holds."""
    await asyncio.gather(*(hr.unlock() for hr in run.hosts.values() if hr.st.locked))


async def lock_all(run: Run, connector: Connector, artifact_sha: str | None) -> bool:
    """Connect to and lock EVERY selected host of ``run`` (all waves). True when the
    run may go on; False when it stops (aborted, the failure budget spent, or a lock
    still held after ``deploy.lock_wait``), every lock given back."""
    deadline = time.monotonic() + run.config.deploy.lock_wait
    sem = asyncio.Semaphore(run.config.deploy.parallel)
    attempt = 0
    while True:
        attempt += 1
        held: Held = []
        await asyncio.gather(
            *(_lock_one(run, connector, hr, artifact_sha, sem, held) for hr in run.hosts.values())
        )
        if run.aborting:
            await unlock_all(run)
            return False
        if not held:
            if run.budget.exceeded:
                run.stop_reason = run.budget_reason(before_change=True)
                run.log("release", run.stop_reason, "stderr")
                await unlock_all(run)
                return False
            return True
        # all or nothing: give back every lock taken, then wait or stop
        await unlock_all(run)
        left = deadline - time.monotonic()
        if left <= 0:
            _given_up(run, held)
            return False
        await _wait(run, held, left, attempt)


async def _lock_one(
    run: Run,
    connector: Connector,
    hr: HostRelease,
    artifact_sha: str | None,
    sem: asyncio.Semaphore,
    held: Held,
) -> None:
    st = hr.st
    if st.status == FAILED:
        return
    async with sem:
        if run.aborting:
            return
        try:
            if st.host is None:
                st.host = await run.step(f"{st.key}/connect", run._connect(connector, st.name))
            await run.step(f"{st.key}/lock", hr.lock(artifact_sha))
        except LockHeld as exc:
            held.append((st, exc))
        except StepFailed as exc:
            st.status, st.outcome, st.reason = FAILED, "failed", str(exc)
            run.budget.fail(st.name, st.reason)
            run.close_host(st.key, FAILED, st.reason)
        except Aborted:
            pass


async def _wait(run: Run, held: Held, left: float, attempt: int) -> None:
    """Say who holds the locks, then wait (backing off, or until a lock may go
    stale, or an abort) before trying again."""
    first, exc = held[0]
    for st, why in held:
        run.status(f"{st.key}/lock", WAITING, f"waiting: {why}"[:300])
    run.log("release", f"waiting for {first.name} ({exc}); {left:.0f}s of lock_wait left")
    pause = random.uniform(0.5, 1.5) * min(0.25 * 2**attempt, 5.0)
    soonest = min((w.stale_in for _, w in held if w.stale_in is not None), default=None)
    if soonest is not None:  # a lock that may go stale: look again right then
        pause = min(pause, soonest + random.uniform(0, 0.3))
    try:
        await asyncio.wait_for(run.abort_event.wait(), min(left, pause))
    except TimeoutError:
        pass


def _given_up(run: Run, held: Held) -> None:
    first, exc = held[0]
    run.stop_reason = f"{first.name}: {exc}"
    run.log("release", f"not starting: {run.stop_reason}", "stderr")
    for st, why in held:
        st.status, st.outcome, st.reason = FAILED, "failed", str(why)
        run.close_host(st.key, FAILED, st.reason)

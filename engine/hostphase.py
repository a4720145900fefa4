"""Several steps of one host as one remote script (:mod:`engine.remote.phase`), run
with per-step status, upload progress, and an abort that stops an upload at once,
signals a running hook or health check, and lets a short step finish.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from engine.errors import ConnectionLost, Interrupted, StepFailed
from engine.events import CANCELLED, FAILED, OK, RUNNING, Progress
from engine.hostlock import Aborted, HostLock
from engine.remote.phase import PhaseReader, phase_script, step_failure
from engine.remote.release import step_detail
from engine.session import CommandTimeout, SSHError

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.upload import Upload

#: steps an abort stops while they run (their remote processes are signalled); any
#: other step (unpack, activate, cleanup, finish) is short and finishes first
KILLABLE = frozenset({"upload", "peer", "rebuild", "before", "restart", "health"})


class HostPhase(HostLock):
    """Runs phases on one locked host."""

    #: the watch of the last phase started (an upload's bytes sent, even if it failed)
    last_watch: _PhaseWatch | None = None

    async def _phase(
        self,
        steps: list[tuple[str, str]],
        timeout: float,
        *,
        keep_running: set[str] | frozenset[str] = frozenset(),
        upload: Upload | None = None,
        done: set[str] | None = None,
        on_ok: Callable[[str], None] | None = None,
    ) -> _PhaseWatch:
        """Run several steps as one remote script; each step reports its start and end,
        so the tree keeps per-step status while sshd spawns one shell. Raises
        StepFailed (a step failed, or the script timed out), ConnectionLost,
        Interrupted (an abort signalled a running hook or health check) or Aborted
        (an abort stopped the upload). With ``upload``, the phase is that one upload
        step (whatever its name); the watch returned counts the bytes it sent.
        ``on_ok(name)`` is called as each step ends with exit 0, while the rest of the
        phase runs."""
        names = [name for name, _ in steps]
        watch = self.last_watch = _PhaseWatch(self, keep_running, upload, done, names, on_ok)
        stdin = {}
        if upload is not None:
            stdin = {
                "stdin_file": upload.path,
                "progress": watch.progress,
                "stdin_offset": upload.offset,
            }
        script = phase_script(steps, stdin_step=steps[0][0] if upload is not None else None)
        run = asyncio.ensure_future(
            self.host.run(script, on_line=watch.on_line, timeout=timeout, **stdin)
        )
        try:
            interrupted = await self._watch_abort(run, watch)
            if interrupted:
                await _settled(run)
                reason = f"stopped: {self.run.stop_reason or 'aborted'}"
                if f"{self.key}/{interrupted}" in self.run.plan:
                    self._status(interrupted, CANCELLED, reason)
                raise Interrupted(f"{interrupted} {reason}")
            res = await run
        except (CommandTimeout, SSHError) as exc:
            self._phase_lost(watch, exc)
            return watch
        ended_by_abort = watch.nothing_to_stop and self.run.aborting
        if watch.failed:
            raise StepFailed(watch.failed[0])
        if not res.ok and not watch.soft and not ended_by_abort:
            raise StepFailed(
                f"remote script failed (exit {res.exit_status}): {(res.stderr or res.stdout)[-200:]}"
            )
        return watch

    def _phase_lost(self, watch: _PhaseWatch, exc: CommandTimeout | SSHError) -> None:
        """The phase's command timed out or its connection was lost: raises StepFailed
        or ConnectionLost, unless an abort's signal ended the session after the last
        step it stops (the steps that ended are in ``done``, the caller finishes the
        rest)."""
        if watch.nothing_to_stop and self.run.aborting:
            return
        key = watch.current_key
        if key != self.key and key in self.run.plan:
            self.run.status(key, FAILED, str(exc))
        if not isinstance(exc, CommandTimeout):
            raise ConnectionLost(str(exc)) from None
        raise StepFailed(str(exc)) from None

    async def _watch_abort(self, run: asyncio.Future[Any], watch: _PhaseWatch) -> str:
        """Wait for the phase; on an abort, stop an upload at once (nothing is live
        yet: raises Aborted) and signal a running hook or health check (returns its
        step); any other step of the phase finishes first."""
        aborted = asyncio.ensure_future(self.run.abort_event.wait())
        try:
            while not run.done():
                await asyncio.wait({run, aborted}, return_when=asyncio.FIRST_COMPLETED)
                if run.done():
                    break
                watch.stepped.clear()
                step = watch.reader.step
                if watch.upload is not None and watch.names[0] not in watch.succeeded:
                    run.cancel()  # the upload itself: stopped at once, nothing is live yet
                    await _settled(run)
                    self._status("upload", CANCELLED, "aborted")
                    raise Aborted()
                if step in KILLABLE:
                    await self.host.interrupt()
                    await asyncio.wait({run}, timeout=5)
                    if watch.nothing_to_stop or (step in watch.succeeded and _ran_out(run)):
                        # the hook or check ended before the signal: only short steps
                        # were left (cleanup, revisions.log, unlock), and a host that
                        # is switched and healthy is not undone, however the signal
                        # ended the session
                        return ""
                    run.cancel()
                    return step
                # a short step runs: wait for it, or for the next step to start
                nxt = asyncio.ensure_future(watch.stepped.wait())
                try:
                    await asyncio.wait({run, nxt}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    nxt.cancel()
        finally:
            aborted.cancel()
        return ""


def _ran_out(run: asyncio.Future[Any]) -> bool:
    """The phase's command ended by itself (not cancelled, no connection error)."""
    return run.done() and not run.cancelled() and run.exception() is None


async def _settled(run: asyncio.Future[Any]) -> None:
    """Wait for a stopped command to end; how it ended no longer matters."""
    try:
        await run
    except (asyncio.CancelledError, SSHError, CommandTimeout):
        pass


class _PhaseWatch:
    """Turns one phase's output into step statuses, log lines and upload progress."""

    def __init__(
        self,
        hr: HostPhase,
        keep_running: set[str] | frozenset[str],
        upload: Upload | None,
        done: set[str] | None,
        names: list[str] | None = None,
        on_ok: Callable[[str], None] | None = None,
    ) -> None:
        self.hr = hr
        self.on_ok = on_ok
        self.names = names or []  # the phase's steps, in order
        self.run = hr.run
        self.reader = PhaseReader()
        self.keep_running = keep_running
        self.upload = upload
        self.done = done
        self.failed: list[str] = []  # reasons of the steps that failed
        self.succeeded: set[str] = set()  # steps that ended with exit 0
        self.soft: set[str] = set()  # keep_running steps whose first attempt failed
        self.stepped = asyncio.Event()  # a step started (an abort waits for a killable one)
        self._upload_started = time.monotonic()
        self._progress_at = 0.0
        #: bytes of the upload sent so far, and how long it took once it ended
        self.sent = 0
        self.seconds = 0.0

    @property
    def nothing_to_stop(self) -> bool:
        """Every step an abort stops (:data:`KILLABLE`) of the phase ended with exit 0
        (for an upload carrying further steps: every step)."""
        if self.upload is not None and len(self.names) > 1:
            return all(n in self.succeeded for n in self.names)
        killable = [n for n in self.names if n in KILLABLE]
        return bool(killable) and all(n in self.succeeded for n in killable)

    @property
    def current_key(self) -> str:
        step = self.reader.step
        return f"{self.hr.key}/{step}" if step else self.hr.key

    def on_line(self, stream: str, text: str) -> None:
        key = self.current_key
        marker = self.reader.feed(text)
        if marker is None:
            self.run.log(key, text, stream)
        elif marker.what == "start":
            self._started(marker.name)
        elif marker.what == "end":
            self._ended(marker.name, marker.rc)

    def _started(self, name: str) -> None:
        self.stepped.set()
        if name == "upload":
            self._upload_started = time.monotonic()
        key = f"{self.hr.key}/{name}"
        if key in self.run.plan:
            self.run.status(key, RUNNING)

    def _ended(self, name: str, rc: int) -> None:
        key = f"{self.hr.key}/{name}"
        out = self.reader.tail(name)
        if rc == 0:
            self.succeeded.add(name)
            if self.done is not None:
                self.done.add(name)
        if key not in self.run.plan:
            if rc:
                self.failed.append(step_failure(name, rc, out, self.hr.st.path))
        elif rc == 0:
            self.run.status(key, OK, self._detail(name, out))
        elif name in self.keep_running:
            self.soft.add(name)
            self.run.log(key, f"attempt 1 failed (exit {rc})", "stderr")
        else:
            reason = step_failure(name, rc, out, self.hr.st.path)
            self.run.status(key, FAILED, reason)
            self.failed.append(reason)
        if rc == 0 and self.on_ok is not None:
            self.on_ok(name)

    def _detail(self, name: str, out: list[str]) -> str:
        if self.upload is not None and self.names and name == self.names[0]:
            self.seconds = max(time.monotonic() - self._upload_started, 1e-6)
            return transfer_text(self.upload.mode, self.sent, self.upload.total, self.seconds)
        return step_detail(name, out)

    def progress(self, sent: int, total: int) -> None:
        self.sent = sent
        t = time.monotonic()
        if sent == total or t - self._progress_at >= 0.1:
            self._progress_at = t
            key = f"{self.hr.key}/upload"
            self.run.emit(Progress(self.run.deploy_id, key=key, done=sent, total=total))


def transfer_text(mode: str, sent: int, total: int, seconds: float, source: str = "") -> str:
    """``delta: 1.0 MiB sent for 100.0 MiB in 0.41s (2.6 MB/s)``; a copy from a peer
    says where from."""
    rate = f" ({sent / max(seconds, 1e-6) / 1e6:.1f} MB/s)" if seconds else ""
    what = f"{mode} from {source}" if source else mode
    return f"{what}: {size_text(sent)} sent for {size_text(total)} in {seconds:.2f}s{rate}"


def size_text(n: float) -> str:
    """``123 B``, ``1.5 KiB``, ``2.0 MiB``, ``3.1 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"

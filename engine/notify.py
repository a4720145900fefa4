"""Notifications: ``[[notify]]`` commands run on this machine when a run reaches an
event someone outside the terminal should hear of.

Each entry names the events it wants (``on``) and a shell ``command``; the command
gets one JSON object on stdin (what happened, the project, environment, operator,
deploy and the engine's event itself) and has ``timeout`` seconds. A command that
fails, times out or cannot start is reported as a line of the run's log (the
transcript, the room and the terminal show it) and never fails, stops or holds up
the deploy: commands run beside it, and only the run's end waits for the last ones
(each at most its timeout).

The events (:data:`EVENTS`):

- ``gate``: a gate waits for approval;
- ``finished``: the run ended ok; ``failed``: it ended failed or stopped;
- ``lock``: the run waits for a host lock another deploy holds (once per run);
- ``freeze_override``: the run started inside a freeze window, overridden.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.configschema import key
from engine.events import OK, WAITING, Control, DeployFinished, Event, GateWaiting, NodeStatus

if TYPE_CHECKING:
    from engine.run import Run

__all__ = ["EVENTS", "NotifyEntry", "Notifier", "notify_name"]

log = logging.getLogger("shipdeck.engine")

EVENTS = ("gate", "finished", "failed", "lock", "freeze_override")
#: characters of a failed command's stderr kept in the report
_STDERR_CHARS = 300


def _event_name(value: str) -> None:
    if value not in EVENTS:
        raise ValueError(f"{value!r} is not an event (expected one of {', '.join(EVENTS)})")


def _on(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError(f"expected at least one event ({', '.join(EVENTS)})")
    return value


def _command(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


_ON = "events that run it: " + ", ".join(f"`{e}`" for e in EVENTS) + " (see Notifications)"
_COMMAND = "shell command run on this machine, the event's JSON on stdin"


@dataclass(frozen=True, kw_only=True)
class NotifyEntry:
    """``[[notify]]``: a command run locally on some events."""

    on: tuple[str, ...] = key(..., _ON, check=_on, each=_event_name)
    command: str = key(..., _COMMAND, check=_command)
    timeout: float = key(
        10.0, "seconds the command may run; then it is killed and reported", min=0.1
    )


def notify_name(event: Event, seen_lock: bool = False) -> str | None:
    """The ``[[notify]]`` event ``event`` is, if any (``lock`` only when not
    ``seen_lock`` already)."""
    if isinstance(event, GateWaiting):
        return "gate"
    if isinstance(event, DeployFinished):
        return "finished" if event.status == OK else "failed"
    if isinstance(event, Control) and event.action == "freeze_override":
        return "freeze_override"
    if (
        isinstance(event, NodeStatus)
        and event.status == WAITING
        and event.key.endswith("/lock")
        and not seen_lock
    ):
        return "lock"
    return None


class Notifier:
    """A run's subscriber running the ``[[notify]]`` entries that want each event.

    ``report(text)`` says that a command failed (the run logs it); ``context`` is
    sent with every event. :meth:`drain` waits for the commands still running."""

    def __init__(
        self,
        entries: tuple[NotifyEntry, ...],
        context: dict[str, Any],
        report: Callable[[str], None],
    ) -> None:
        self.entries = entries
        self.context = context
        self.report = report
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen_lock = False

    @classmethod
    def of(cls, run: Run) -> Notifier | None:
        """The notifier of ``run`` (None when the config has no ``[[notify]]``)."""
        config = run.config
        if not config.notify:
            return None
        context = {
            "project": config.project.name,
            "env": config.env,
            "operator": run.operator,
            "kind": run.kind,
            "deploy_id": run.deploy_id,
        }
        return cls(config.notify, context, lambda text: run.log("release", text, "stderr"))

    def __call__(self, event: Event) -> None:
        name = notify_name(event, self._seen_lock)
        if name is None:
            return
        if name == "lock":
            self._seen_lock = True
        wanted = [e for e in self.entries if name in e.on]
        if not wanted:
            return
        payload = json.dumps(
            {"on": name, **self.context, "event": event.to_json()}, ensure_ascii=False
        ).encode()
        for entry in wanted:
            task = asyncio.ensure_future(self._run(entry, name, payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every command still running (each ends by its timeout)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, entry: NotifyEntry, name: str, payload: bytes) -> None:
        what = f"notify ({name}) `{_short(entry.command)}`"
        try:
            proc = await asyncio.create_subprocess_shell(
                entry.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its children are killed with it on a timeout
            )
        except OSError as exc:
            self.report(f"{what} could not start: {exc}")
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(payload), entry.timeout)
        except TimeoutError:
            _kill(proc)
            await proc.wait()
            self.report(f"{what} timed out after {entry.timeout:g}s (killed); the deploy goes on")
            return
        except Exception as exc:  # a notification never breaks a deploy
            _kill(proc)
            await proc.wait()
            self.report(f"{what} failed: {exc}")
            return
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-_STDERR_CHARS:]
            self.report(f"{what} failed (exit {proc.returncode})" + (f": {tail}" if tail else ""))


def _short(command: str) -> str:
    one = " ".join(command.split())
    return one if len(one) <= 60 else one[:57] + "..."


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

"""Plain-text output for headless runs: the plan as a tree, one line per stage change,
or the events as JSON lines. No terminal UI library involved."""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from engine.events import (
    FAILED,
    OK,
    RUNNING,
    Control,
    DeployFinished,
    DeployMeta,
    Event,
    GateWaiting,
    LogLine,
    NodeStatus,
)
from engine.plan import Plan

#: Exit status of a command whose stdout was closed early (``shipdeck history | head``):
#: 128 + SIGPIPE, what a shell reports for ``yes | head``.
EXIT_PIPE = 141


def is_broken_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` says the reader of our output went away."""
    return isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET)
    )


def stdout_gone() -> None:
    """Point stdout at /dev/null after its reader went away, so that nothing written
    later (or flushed at exit) raises again. Quiet: there is nobody to tell."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


GLYPHS = {
    "pending": "○",
    "running": "●",
    "waiting": "⏸",
    "ok": "✓",
    "failed": "✗",
    "skipped": "–",
    "cancelled": "–",
}


def render_tree(plan: Plan, *, collapse_steps: bool = False) -> list[str]:
    """The plan as box-drawing lines, e.g. for ``--dry-run``."""
    meta = plan.meta
    head = f"{meta.get('kind', 'deploy')} {meta.get('project', '')}@{meta.get('ref', '')}"
    if meta.get("sha"):
        head += f" (sha {str(meta['sha'])[:7]})"
    lines = [head]

    def walk(key: str | None, prefix: str) -> None:
        kids = plan.kids(key)
        for i, node in enumerate(kids):
            last = i == len(kids) - 1
            branch = "└── " if last else "├── "
            label = node.label
            if node.kind == "host" and collapse_steps:
                label += f"  ({', '.join(k.label for k in plan.kids(node.key))})"
            extra = f"  {node.detail}" if node.detail else ""
            lines.append(f"{prefix}{branch}{label}{extra}")
            if not (node.kind == "host" and collapse_steps):
                walk(node.key, prefix + ("    " if last else "│   "))

    walk(None, "")
    return lines


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A finished run's summary as text: the counts, then why it stopped and each
    failed host's reason, e.g. ``2/3 hosts ok, 1 failed in 4.2s (exit 1)`` and
    ``  ✗ web2: unhealthy after 30s``. Missing fields are left out, never guessed."""
    if not isinstance(summary, dict):
        return [str(summary)]
    parts = [f"{summary.get('ok', 0)}/{summary.get('hosts', 0)} hosts ok"]
    for k in ("failed", "skipped", "cancelled"):
        if summary.get(k):
            parts.append(f"{summary[k]} {k}")
    head = ", ".join(parts)
    if isinstance(summary.get("duration"), (int, float)):
        head += f" in {summary['duration']:.1f}s"
    if summary.get("exit_code") is not None:
        head += f" (exit {summary['exit_code']})"
    lines = [head]
    if summary.get("reason"):
        lines.append(f"  stopped: {summary['reason']}")
    if summary.get("relay"):
        lines.append(f"  relay: {summary['relay']}")
    failures = summary.get("failures")
    if isinstance(failures, dict):
        lines.extend(f"  ✗ {host}: {why}" for host, why in failures.items())
    return lines


def transcript_lines(raw: str) -> list[str]:
    """One transcript line (an event as JSON) as text for a person: a time, a glyph and
    words; a plan or a summary never shows as a raw dict. Unreadable lines are shown as
    they are."""
    try:
        ev = json.loads(raw)
    except json.JSONDecodeError:
        return [raw.rstrip("\n")]
    if not isinstance(ev, dict):
        return [raw.rstrip("\n")]
    kind = ev.get("type")
    at = ev.get("at")
    stamp = (
        time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, (int, float)) else " " * 8
    )
    if kind == "status":
        detail = f"  {ev['detail']}" if ev.get("detail") else ""
        glyph = GLYPHS.get(str(ev.get("status")), "?")
        return [f"{stamp} {glyph} {ev.get('key')} {ev.get('status')}{detail}"]
    if kind == "log":
        return [f"{stamp}   {ev.get('key')} │ {ev.get('text')}"]
    if kind == "plan":
        meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
        what = f"{meta.get('kind', 'deploy')} {meta.get('project', '')}@{meta.get('ref') or meta.get('release_id') or ''}"
        hosts = f" to {meta['hosts']} host(s)" if meta.get("hosts") is not None else ""
        who = f" by {meta['operator']}" if meta.get("operator") else ""
        return [f"{stamp} plan: {what}{hosts}{who} ({len(ev.get('nodes') or [])} nodes)"]
    if kind == "meta":
        meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
        if meta.get("release_id"):
            sha = str(meta.get("sha") or "")[:12]
            subject = f"  {meta['subject']}" if meta.get("subject") else ""
            return [f"{stamp} release {meta['release_id']}  sha {sha}{subject}"]
        return [f"{stamp} " + "  ".join(f"{k} {v}" for k, v in meta.items())]
    if kind == "finished":
        head, *rest = summary_lines(ev.get("summary") or {})
        return [f"{stamp} finished: {ev.get('status')} — {head}", *rest]
    if kind == "control":
        return [f"{stamp} {ev.get('action')} by {ev.get('by')} {ev.get('key') or ''}".rstrip()]
    if kind == "progress":
        return [f"{stamp}   {ev.get('key')} {ev.get('done')}/{ev.get('total')} bytes"]
    if kind == "gate":
        return [f"{stamp} ⏸ {ev.get('key')} waiting for approval"]
    rest = "  ".join(f"{k} {v}" for k, v in ev.items() if k not in ("type", "v", "at", "deploy_id"))
    return [f"{stamp} {kind} {rest}".rstrip()]


class HeadlessPrinter:
    """Prints one line per node status change, plus failures' output."""

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        verbose: bool = False,
        color: bool | None = None,
        on_closed: Callable[[], None] | None = None,
    ):
        self.out = out or sys.stdout
        self.verbose = verbose
        self.plan: Plan | None = None
        self.started: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.on_closed = on_closed
        #: the reader of ``out`` went away (``| head``): nothing more is written
        self.closed = False

    def _write(self, text: str) -> None:
        self.closed = _write_line(self, text)

    def __call__(self, event: Event) -> None:
        if event.type == "plan":
            self.plan = Plan.from_event(event)  # type: ignore[arg-type]
            meta = self.plan.meta
            self._write(
                f"{meta.get('kind', 'deploy')} {meta.get('project')}@{meta.get('ref') or meta.get('release_id')} "
                f"to {meta.get('hosts')} host(s) as {meta.get('operator')}  [{event.deploy_id}]"
            )
            return
        if isinstance(event, DeployMeta):
            if "release_id" in event.meta:
                self._write(
                    f"release {event.meta['release_id']}  sha {event.meta.get('sha', '')[:12]}  {event.meta.get('subject', '')}"
                )
            return
        if isinstance(event, NodeStatus):
            if self.plan is not None:
                self.plan.apply(event)
            if event.status == "skipped" and not event.detail and event.key.endswith("/rollback"):
                return  # the rollback step a host never needed
            if event.status in (RUNNING, "waiting"):
                self.started[event.key] = event.at
                if event.status == "waiting" or self.verbose:
                    self._write(self._line(event, ""))
                return
            dur = ""
            if event.key in self.started:
                dur = f"{event.at - self.started.pop(event.key):.2f}s"
            self._write(self._line(event, dur))
            return
        if isinstance(event, LogLine):
            if self.verbose or event.stream == "stderr":
                self._write(f"    {event.key}: {event.text}")
            return
        if isinstance(event, GateWaiting):
            self._write(f"gate {event.key}: waiting for approval")
            return
        if isinstance(event, Control):
            self._write(f"{event.action} by {event.by}" + (f" ({event.key})" if event.key else ""))
            return
        if isinstance(event, DeployFinished):
            head, *rest = summary_lines(event.summary)
            self._write(f"{event.status.upper()}: {head}")
            for line in rest:
                self._write(line)

    def _line(self, event: NodeStatus, dur: str) -> str:
        glyph = GLYPHS.get(event.status, "?")
        key = event.key
        parts = key.split("/")
        if parts[0] == "release" and len(parts) >= 3:
            where = "  ".join(parts[2:]) if not parts[1].startswith("gate") else parts[1]
        else:
            where = key
        detail = f"  {event.detail}" if event.detail else ""
        mark = "" if event.status in (OK, FAILED) else ""
        return f"{glyph} {event.status:<9} {where:<40} {dur:>7}{detail}{mark}"


class JsonPrinter:
    """Prints every event as one JSON line."""

    def __init__(self, out: TextIO | None = None, *, on_closed: Callable[[], None] | None = None):
        self.out = out or sys.stdout
        self.on_closed = on_closed
        self.closed = False

    def __call__(self, event: Event) -> None:
        self.closed = _write_line(self, event.dumps())


def _write_line(printer: HeadlessPrinter | JsonPrinter, text: str) -> bool:
    """Write and flush one line; returns whether the output is closed. The first time
    the reader is found gone, stdout is pointed at /dev/null and ``on_closed`` runs
    (once: it may emit events, which come back here and are dropped)."""
    if printer.closed:
        return True
    try:
        printer.out.write(text + "\n")
        printer.out.flush()
        return False
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and not is_broken_pipe(exc):
            raise
    printer.closed = True
    if printer.out is sys.stdout:
        stdout_gone()
    if printer.on_closed is not None:
        printer.on_closed()
    return True

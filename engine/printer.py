"""Plain-text output for headless runs: the plan as a tree, one line per stage change,
or the events as JSON lines. No terminal UI library involved."""

from __future__ import annotations

import sys
import time
from typing import TextIO

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


class HeadlessPrinter:
    """Prints one line per node status change, plus failures' output."""

    def __init__(
        self, out: TextIO | None = None, *, verbose: bool = False, color: bool | None = None
    ):
        self.out = out or sys.stdout
        self.verbose = verbose
        self.plan: Plan | None = None
        self.started: dict[str, float] = {}
        self.t0 = time.monotonic()

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

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
            s = event.summary
            parts = [f"{s.get('ok', 0)}/{s.get('hosts', 0)} hosts ok"]
            for k in ("failed", "skipped", "cancelled"):
                if s.get(k):
                    parts.append(f"{s[k]} {k}")
            self._write(
                f"{event.status.upper()}: {', '.join(parts)} in {s.get('duration', 0):.1f}s (exit {s.get('exit_code')})"
            )
            if s.get("reason"):
                self._write(f"  stopped: {s['reason']}")
            for host, why in (s.get("failures") or {}).items():
                self._write(f"  ✗ {host}: {why}")

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

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        self.out.write(event.dumps() + "\n")
        self.out.flush()

"""Status glyphs, colours and node labels as ``rich.text.Text`` (never markup).

Every status has a glyph *and* a colour so it reads in NO_COLOR and 8-colour
terminals. Colours are the 8 ANSI names so the terminal's palette decides.
"""

from __future__ import annotations

import re

from rich.text import Text

from engine.events import CANCELLED, FAILED, OK, PENDING, RUNNING, SKIPPED, WAITING
from engine.plan import Node

GLYPH = {
    PENDING: "○",
    RUNNING: "●",
    WAITING: "⏸",
    OK: "✓",
    FAILED: "✗",
    SKIPPED: "–",
    CANCELLED: "–",
}
STYLE = {
    PENDING: "dim",
    RUNNING: "bold yellow",
    WAITING: "bold magenta",
    OK: "green",
    FAILED: "bold red",
    SKIPPED: "dim",
    CANCELLED: "dim",
}
NAME_STYLE = {
    PENDING: "",
    RUNNING: "bold",
    WAITING: "bold",
    OK: "",
    FAILED: "bold red",
    SKIPPED: "dim",
    CANCELLED: "dim strike",
}


_COUNT_TEXT = re.compile(r"^\d+/\d+ ok\b")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{n}B"


def counts_text(counts: dict[str, int], total: int | None = None) -> Text:
    """ "1 ✗ 37/50 ✓ 2 ●" from host status counts: failures first, so a narrow pane
    that cuts the line never cuts them."""
    text = Text()
    if total is None:
        total = sum(counts.values())
    failed = counts.get(FAILED, 0)
    if failed:
        text.append(f"{failed} {GLYPH[FAILED]} ", style=STYLE[FAILED])
    ok = counts.get(OK, 0)
    text.append(f"{ok}/{total} ✓", style=STYLE[OK] if ok else "dim")
    for status in (RUNNING, WAITING, CANCELLED):
        n = counts.get(status, 0)
        if n:
            text.append(f" {n} {GLYPH[status]}", style=STYLE[status])
    return text


def status_text(status: str) -> Text:
    return Text(GLYPH.get(status, "?"), style=STYLE.get(status, ""))


def node_label(
    node: Node,
    *,
    elapsed: float | None = None,
    counts: dict[str, int] | None = None,
    current_step: str | None = None,
    progress: tuple[int, int] | None = None,
    note: str | None = None,
) -> Text:
    """One tree line. ``note`` replaces a failed host's long reason with what the
    operator needs at a glance ("rolled back to <id>"); the log pane header has the rest."""
    status = node.status
    text = Text(no_wrap=True, end="")
    text.append(GLYPH.get(status, "?"), style=STYLE.get(status, ""))
    text.append(" ")
    if counts is not None and node.kind in ("wave", "stage") and sum(counts.values()):
        # counts before the label: a narrow pane cuts a long wave label, never them
        text.append_text(counts_text(counts))
        text.append("  ")
    text.append(node.label, style=NAME_STYLE.get(status, ""))
    if node.kind == "host" and status == RUNNING and current_step:
        text.append(f"  {current_step}", style="yellow")
    if progress is not None and progress[1] and node.status == RUNNING:
        done, total = progress
        pct = min(100, int(done * 100 / total)) if total else 0
        text.append(f"  {pct}%", style="bold cyan")
    elif node.total and node.status == OK and node.kind == "step":
        text.append(f"  {fmt_bytes(node.total)}", style="dim")
    if elapsed is not None and status != PENDING:
        text.append(f"  {fmt_duration(elapsed)}", style="dim" if status != RUNNING else "yellow")
    if node.kind == "gate" and status == WAITING:
        text.append("  press g to approve", style="bold magenta")
    # waves and the release show their own counts; the engine's count text would repeat them
    show_detail = (
        status in (FAILED, SKIPPED, CANCELLED) or (node.kind == "stage" and counts is None)
    ) and not (counts is not None and _COUNT_TEXT.match(node.detail or ""))
    if note:
        text.append(f"  {note}", style="yellow")
    elif (
        node.kind == "step" and node.name == "rollback" and status in (RUNNING, OK) and node.detail
    ):
        text.append(f"  {node.detail}", style="yellow" if status == RUNNING else "dim")
    elif node.detail and show_detail:
        text.append(f"  {node.detail}", style="red" if status == FAILED else "dim")
    return text

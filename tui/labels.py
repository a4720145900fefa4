"""Status glyphs, colours and node labels as ``rich.text.Text`` (never markup).

Every status has a glyph *and* a colour so it reads in NO_COLOR and 8-colour
terminals. Colours are the 8 ANSI names so the terminal's palette decides.
"""

from __future__ import annotations

from rich.text import Text

from engine.events import CANCELLED, FAILED, OK, PENDING, RUNNING, SKIPPED, WAITING
from engine.plan import Node
from engine.state import Counts
from tui.render import GLYPH, fmt_bytes, fmt_duration, glyph

__all__ = [
    "GLYPH",
    "STYLE",
    "NAME_STYLE",
    "counts_text",
    "fmt_bytes",
    "fmt_duration",
    "node_label",
    "status_text",
]

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


def counts_text(counts: Counts, total: int | None = None) -> Text:
    """ "1 ✗ 37/50 ✓ 2 ●" from host status counts: failures first, so a narrow pane
    that cuts the line never cuts them."""
    text = Text()
    if total is None:
        total = counts.total
    failed = counts.failed
    if failed:
        text.append(f"{failed} {GLYPH[FAILED]} ", style=STYLE[FAILED])
    ok = counts.ok
    text.append(f"{ok}/{total} ✓", style=STYLE[OK] if ok else "dim")
    for status in (RUNNING, WAITING, CANCELLED):
        n = counts.get(status)
        if n:
            text.append(f" {n} {GLYPH[status]}", style=STYLE[status])
    return text


def status_text(status: str) -> Text:
    return Text(glyph(status), style=STYLE.get(status, ""))


def node_label(
    node: Node,
    *,
    elapsed: float | None = None,
    counts: Counts | None = None,
    current_step: str | None = None,
    progress: tuple[int, int] | None = None,
    note: str | None = None,
) -> Text:
    """One tree line. ``note`` replaces a failed host's long reason with what the
    operator needs at a glance ("rolled back to <id>"); the log pane header has the rest."""
    status = node.status
    text = Text(no_wrap=True, end="")
    text.append(glyph(status), style=STYLE.get(status, ""))
    text.append(" ")
    if counts is not None and node.kind in ("wave", "stage") and counts.total:
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
    # a wave or the release with hosts shows its own counts; its detail (the engine's
    # words for the same counts) is shown only for a wave that never ran (why it was
    # skipped or cancelled)
    if counts is not None and counts.total:
        show_detail = (
            node.kind == "wave" and node.started is None and status in (SKIPPED, CANCELLED)
        )
    else:
        show_detail = status in (FAILED, SKIPPED, CANCELLED) or node.kind == "stage"
    if note:
        text.append(f"  {note}", style="yellow")
    elif (
        node.kind == "step" and node.name == "rollback" and status in (RUNNING, OK) and node.detail
    ):
        text.append(f"  {node.detail}", style="yellow" if status == RUNNING else "dim")
    elif node.detail and show_detail:
        text.append(f"  {node.detail}", style="red" if status == FAILED else "dim")
    return text

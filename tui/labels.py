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
    "amount_part",
    "counts_text",
    "detail_part",
    "elapsed_part",
    "fmt_bytes",
    "fmt_duration",
    "gate_part",
    "node_label",
    "shows_detail",
    "status_text",
    "step_part",
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


Part = tuple[str, str] | None  # (text, style) appended after two spaces, or nothing


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
    parts = (
        step_part(node, current_step),
        amount_part(node, progress),
        elapsed_part(status, elapsed),
        gate_part(node),
        detail_part(node, counts, note),
    )
    for part in parts:
        if part is not None:
            text.append(f"  {part[0]}", style=part[1])
    return text


def step_part(node: Node, current_step: str | None) -> Part:
    """A running host's current step."""
    if node.kind == "host" and node.status == RUNNING and current_step:
        return current_step, "yellow"
    return None


def amount_part(node: Node, progress: tuple[int, int] | None) -> Part:
    """How far a running transfer is (``42%``), or the size of a finished step."""
    if progress is not None and progress[1] and node.status == RUNNING:
        done, total = progress
        return f"{min(100, int(done * 100 / total))}%", "bold cyan"
    if node.total and node.status == OK and node.kind == "step":
        return fmt_bytes(node.total), "dim"
    return None


def elapsed_part(status: str, elapsed: float | None) -> Part:
    """How long the node has run (ran): yellow while it runs."""
    if elapsed is None or status == PENDING:
        return None
    return fmt_duration(elapsed), "yellow" if status == RUNNING else "dim"


def gate_part(node: Node) -> Part:
    """What to press at a waiting gate."""
    if node.kind == "gate" and node.status == WAITING:
        return "press g to approve", "bold magenta"
    return None


def shows_detail(node: Node, counts: Counts | None) -> bool:
    """Whether a node's detail is on its line. A wave or the release with hosts shows
    its own counts; its detail (the engine's words for the same counts) is shown only
    for a wave that never ran (why it was skipped or cancelled)."""
    if counts is not None and counts.total:
        return node.kind == "wave" and node.started is None and node.status in (SKIPPED, CANCELLED)
    return node.status in (FAILED, SKIPPED, CANCELLED) or node.kind == "stage"


def detail_part(node: Node, counts: Counts | None, note: str | None) -> Part:
    """The operator's note, else a rollback step's target, else the node's detail
    where :func:`shows_detail` says so."""
    status = node.status
    if note:
        return note, "yellow"
    if node.kind == "step" and node.name == "rollback" and status in (RUNNING, OK) and node.detail:
        return node.detail, "yellow" if status == RUNNING else "dim"
    if node.detail and shows_detail(node, counts):
        return node.detail, "red" if status == FAILED else "dim"
    if node.kind == "host" and status == OK and node.detail.startswith("exit "):
        return node.detail, "dim"  # an exec's host: its exit status and duration
    return None

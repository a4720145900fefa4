"""Two-line header: who/what (project, ref → sha and release, or an exec's command
and hosts; operator, relay) and state.

The app gathers what the header says into a plain :class:`HeaderFacts`;
:func:`identity_line` and :func:`state_line` turn it into the two lines (pure
functions of plain data, tested without an app); :class:`DeckHeader` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from engine.events import RUNNING, MaintenanceChanged
from engine.state import Counts
from tui.labels import GLYPH, STYLE, counts_text, fmt_duration
from tui.render import MAINTENANCE_MARK, glyph, plural

#: an exec's command as the header shows it (the whole one is in the tree's root)
COMMAND_CHARS = 40


@dataclass(frozen=True, slots=True)
class HeaderFacts:
    """What the header says, as plain data."""

    operator: str
    project: str = ""
    #: the config's environment (``-e NAME``); "" when the file has none
    env: str = ""
    ref: str = ""
    sha: str = ""
    release_id: str = ""
    #: the relay connection's state; None: no relay is configured
    relay: str | None = None
    #: operators in the relay room
    presence: tuple[str, ...] = ()
    kind: str = "deploy"
    #: an exec's command line and where it runs (kind exec; "current" is not named)
    command: str = ""
    cwd: str = ""
    #: how the run ended (``ok``, ``failed``, ``stopped``); None while it has not
    finished: str | None = None
    exit_code: int | None = None
    running: bool = False
    #: host counts of the plan; None: there is no plan (yet)
    totals: Counts | None = None
    #: watching a relay room (no backend of our own): nothing to plan here
    spectator: bool = False
    elapsed: float | None = None
    gate_waiting: bool = False
    following: bool = False
    filter_text: str = ""
    #: hosts the filter keeps
    filtered: int = 0
    #: maintenance mode, when it is on (the room's, or found by the run at its start)
    maintenance: MaintenanceChanged | None = None


def identity_line(facts: HeaderFacts) -> Text:
    """``⛴ shipdeck  web  [production]  main → 3f2a9c1  r42  @alice  relay ◉ connected · 2 here: …``;
    an exec names what runs where instead of a ref: ``exec: uptime on 5 hosts``."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("⛴ shipdeck", style="bold")
    if facts.project:
        text.append("  ")
        text.append(facts.project, style="bold cyan")
    if facts.env:
        text.append("  ")
        text.append(f"[{facts.env}]", style="bold magenta")
    if facts.kind == "exec":
        text.append("  ")
        text.append_text(exec_text(facts))
    elif facts.ref:
        text.append(f"  {facts.ref}")
        sha = facts.sha
        text.append(f" → {sha[:7]}" if sha else " → ?", style="yellow" if sha else "dim")
    if facts.release_id:
        text.append(f"  {facts.release_id}", style="dim")
    text.append("  ")
    text.append(f"@{facts.operator}", style="cyan")
    text.append("  relay ")
    text.append_text(relay_text(facts.relay, facts.presence))
    return text


def exec_text(facts: HeaderFacts) -> Text:
    """``exec: uptime on 5 hosts in shared`` (a long command cut, with …)."""
    command = " ".join(facts.command.split())
    if len(command) > COMMAND_CHARS:
        command = command[: COMMAND_CHARS - 1] + "…"
    text = Text()
    text.append(f"exec: {command}", style="bold")
    if facts.totals is not None:
        text.append(f" on {plural(facts.totals.total, 'host')}")
    if facts.cwd and facts.cwd != "current":
        text.append(f" in {facts.cwd}", style="dim")
    return text


def relay_text(status: str | None, presence: tuple[str, ...] = ()) -> Text:
    """The relay's state and who is in the room (at most four names)."""
    text = Text()
    if status is None:
        text.append("not configured", style="dim")
        return text
    good = status == "connected"
    text.append(("◉ " if good else "◌ ") + status, style="green" if good else "yellow")
    if presence:
        text.append(f" · {len(presence)} here: {', '.join(presence[:4])}")
    return text


def run_text(facts: HeaderFacts) -> Text:
    """Where the run is: finished (and its exit code), running, ready, or no plan."""
    kind = facts.kind
    text = Text()
    if facts.finished is not None:
        glyph_key = {"stopped": "cancelled"}.get(facts.finished, facts.finished)
        text.append(
            f"{glyph(glyph_key)} {kind} {facts.finished}",
            style=STYLE.get(glyph_key, "") + " bold",
        )
        if facts.exit_code is not None:
            text.append(f" (exit {facts.exit_code})", style="dim")
    elif facts.running:
        text.append(f"{GLYPH[RUNNING]} {kind} running", style=STYLE[RUNNING])
    elif facts.totals is None:
        text.append("waiting for a deploy" if facts.spectator else "no plan", style="dim")
    else:
        text.append(f"{GLYPH['pending']} ready", style="bold")
        text.append(
            " — press d to deploy" if kind == "deploy" else " — press d to start", style="dim"
        )
    return text


def maintenance_mark(event: MaintenanceChanged) -> Text:
    """``⚠ MAINTENANCE by alice: db upgrade`` (who and why; the when is in history)."""
    text = Text()
    text.append(f"{MAINTENANCE_MARK} MAINTENANCE", style="bold reverse yellow")
    if event.by:
        text.append(f" by {event.by}", style="bold yellow")
    if event.message:
        why = event.message if len(event.message) <= 48 else event.message[:47] + "…"
        text.append(f": {why}", style="yellow")
    return text


def state_line(facts: HeaderFacts) -> Text:
    """``⚠ MAINTENANCE by alice: db upgrade  ● deploy running  1 ✗ 37/50 ✓ 2 ● hosts
    3m05s  ⏸ gate waiting: g approves``, then the cursor's modes (follow, filter).
    Maintenance comes first, so a narrow terminal cuts anything but it."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if facts.maintenance is not None:
        text.append_text(maintenance_mark(facts.maintenance))
        text.append("  ")
    text.append_text(run_text(facts))
    if facts.totals is not None:
        text.append("  ")
        text.append_text(counts_text(facts.totals))
        text.append(" hosts", style="dim")
    if facts.elapsed is not None:
        text.append(f"  {fmt_duration(facts.elapsed)}", style="dim")
    if facts.gate_waiting:
        text.append("  ⏸ gate waiting: g approves", style="bold magenta")
    if facts.following:
        text.append("  follow", style="bold cyan")
    if facts.filter_text:
        text.append(f"  filter “{facts.filter_text}”: {facts.filtered} hosts", style="bold cyan")
    return text


class DeckHeader(Static):
    DEFAULT_CSS = """
    DeckHeader { height: 2; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def show(self, identity: Text, state: Text) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append_text(identity)
        text.append("\n")
        text.append_text(state)
        self.update(text, layout=False)  # fixed height: no layout pass per flush

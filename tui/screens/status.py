"""The fleet's version map (``v``): which release runs where, drift highlighted.

The same read as ``shipdeck status`` (:func:`engine.fleetstatus.fleet_status`:
read-only, no lock taken): per host its current release, commit, who deployed it and
when, the releases it keeps and its lock. A host not on the majority release is
drawn as drifted; one that could not be read says why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui.labels import STYLE

DRIFT_STYLE = "bold yellow"


def _cut(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def summary_text(status: Any) -> Text:
    """``N hosts · majority <release> · 1 drifted: web3 · 0 unreachable``."""
    hosts = status.hosts
    text = Text()
    text.append(f"{len(hosts)} host(s) · majority ", style="bold")
    text.append(status.majority or "(none)", style="bold cyan")
    drifted = status.drifted
    if drifted:
        names = ", ".join(_cut(h.host, 30) for h in drifted[:5])
        more = f", … +{len(drifted) - 5}" if len(drifted) > 5 else ""
        text.append(f" · {len(drifted)} drifted: {names}{more}", style=DRIFT_STYLE)
    else:
        text.append(" · no drift", style=STYLE["ok"])
    if status.unreachable:
        text.append(f" · {len(status.unreachable)} unreachable", style=STYLE["failed"])
    return text


def host_row(h: Any) -> tuple[Text, ...]:
    """One host's cells: mark, host, release, sha, deployed, by, kept, lock, subject."""
    if h.error:
        style = STYLE["failed"]
        return (
            Text("✗", style=style),
            Text(_cut(h.host, 30), style=style),
            Text("unreachable", style=style),
            Text(""),
            Text(""),
            Text(""),
            Text(""),
            Text(""),
            Text(_cut(h.error, 80), style=style),
        )
    style = DRIFT_STYLE if h.drift else ""
    lock = h.lock if h.lock in ("free", "unknown") else f"{h.lock} by {h.lock_holder}"
    return (
        Text("! drift" if h.drift else "✓", style=DRIFT_STYLE if h.drift else STYLE["ok"]),
        Text(_cut(h.host, 30), style=style),
        Text(_cut(h.current or "(none)", 26), style=style),
        Text(h.sha[:7]),
        Text(_cut(h.deployed_at.replace("T", " ").rstrip("Z"), 19)),
        Text(_cut(h.deployed_by, 16)),
        Text(str(h.releases_kept)),
        Text(_cut(lock, 30), style="" if h.lock == "free" else "yellow"),
        Text(_cut(h.subject, 60), style="dim"),
    )


class StatusScreen(Screen[None]):
    """The version map of the selected hosts; ``R`` reads it again."""

    BINDINGS = [
        Binding("escape,q,v", "app.pop_screen", "Back", id="status.back"),
        Binding("R", "reload", "Read again", id="status.reload"),
    ]

    def __init__(self, read: Callable[[], Awaitable[Any]], hosts: int) -> None:
        super().__init__()
        self.read = read
        self.hosts = hosts
        self.status: Any = None

    def compose(self) -> ComposeResult:
        yield Static("Fleet status — which release runs where", classes="screen-title")
        yield Static(
            f"reading {self.hosts} host(s) (read-only)…", id="status-summary", classes="pane-title"
        )
        yield DataTable(id="status-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "host", "release", "sha", "deployed", "by", "kept", "lock", "subject")
        table.focus()
        self.action_reload()

    def action_reload(self) -> None:
        self.query_one("#status-summary", Static).update(
            f"reading {self.hosts} host(s) (read-only)…"
        )
        self.run_worker(self._read(), group="status", name="read status", exit_on_error=False)

    async def _read(self) -> None:
        try:
            status = await self.read()
        except Exception as exc:  # a notice, never a traceback
            self.query_one("#status-summary", Static).update(
                Text(f"cannot read the fleet: {exc or type(exc).__name__}", style="bold red")
            )
            return
        self.show(status)

    def show(self, status: Any) -> None:
        """Fill the table from a :class:`engine.fleetstatus.FleetStatus`."""
        self.status = status
        self.query_one("#status-summary", Static).update(summary_text(status))
        table = self.query_one(DataTable)
        table.clear()
        for h in status.hosts:
            table.add_row(*host_row(h), key=h.host)

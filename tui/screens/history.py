"""History: past deploys, and one deploy's per-host outcomes and transcript."""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Log, Static

from tui.labels import STYLE
from tui.render import glyph, transcript_lines


def _when(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(ts)))
    except (TypeError, ValueError):
        return str(ts or "")


def _status(status: str) -> Text:
    status = status or "?"
    key = {"stopped": "cancelled"}.get(status, status)
    return Text(f"{glyph(key)} {status}", style=STYLE.get(key, ""))


class HistoryScreen(Screen[None]):
    """Past deploys and rollbacks on this machine; Enter shows one."""

    BINDINGS = [Binding("escape,q,h", "app.pop_screen", "Back", id="history.back")]

    def __init__(self, history: Any) -> None:
        super().__init__()
        self.history = history

    def compose(self) -> ComposeResult:
        yield Static(
            "History — Enter shows a deploy's hosts and transcript", classes="screen-title"
        )
        yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("id", "kind", "ref", "release", "operator", "started", "status", "hosts")
        rows = self.history.list(50) if self.history is not None else []
        for row in rows:
            hosts = Text(f"{row.get('hosts_ok', 0)} ✓", style="green")
            if row.get("hosts_failed"):
                hosts.append(f" {row['hosts_failed']} ✗", style="bold red")
            table.add_row(
                Text(str(row.get("id", ""))),
                Text(str(row.get("kind", ""))),
                Text(f"{row.get('ref', '')} {str(row.get('sha') or '')[:7]}"),
                Text(str(row.get("release_id") or "")),
                Text(str(row.get("operator") or "")),
                _when(row.get("started")),
                _status(str(row.get("status", ""))),
                hosts,
                key=str(row.get("id")),
            )
        if not rows:
            self.query_one(".screen-title", Static).update("History — no deploys recorded yet")
        table.focus()

    @on(DataTable.RowSelected)
    def _open(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.push_screen(HistoryDetailScreen(self.history, event.row_key.value))


class HistoryDetailScreen(Screen[None]):
    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back", id="detail.back")]

    def __init__(self, history: Any, deploy_id: str) -> None:
        super().__init__()
        self.history = history
        self.deploy_id = deploy_id

    def compose(self) -> ComposeResult:
        yield Static(Text(f"Deploy {self.deploy_id}"), classes="screen-title", id="detail-title")
        yield DataTable(id="detail-hosts", cursor_type="row")
        yield Static("transcript", classes="pane-title")
        yield Log(id="transcript", max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        record = self.history.get(self.deploy_id) or {}
        title = Text()
        title.append(f"Deploy {self.deploy_id}  ", style="bold")
        title.append_text(_status(str(record.get("status", ""))))
        title.append(
            f"  {record.get('ref', '')} → {record.get('release_id') or ''}  by {record.get('operator') or ''}",
            style="dim",
        )
        self.query_one("#detail-title", Static).update(title)
        table = self.query_one("#detail-hosts", DataTable)
        table.add_columns("host", "status", "release", "detail")
        for host in record.get("hosts", []):
            table.add_row(
                Text(str(host.get("host", ""))),
                _status(str(host.get("status", ""))),
                Text(str(host.get("release_id") or "")),
                Text(str(host.get("detail") or "")),
            )
        self.load_transcript()

    @work(group="history", exit_on_error=False, thread=True, name="read transcript")
    def load_transcript(self) -> None:
        path = self.history.transcript(self.deploy_id)
        lines: list[str] = []
        if path is None:
            lines = ["(no transcript recorded)"]
        else:
            with open(path, encoding="utf-8") as fh:
                for raw in fh:
                    lines.extend(transcript_lines(raw))
        self.app.call_from_thread(self.query_one("#transcript", Log).write_lines, lines[-5000:])

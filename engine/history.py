"""Local history: every deploy and rollback in SQLite, plus a JSON-lines transcript
of its events kept beside it.

``$XDG_STATE_HOME/shipdeck/history.db`` and ``.../transcripts/<deploy_id>.jsonl``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from engine.errors import ShipdeckError
from engine.events import Event, MaintenanceChanged
from engine.localproc import pid_alive

SCHEMA = """
CREATE TABLE IF NOT EXISTS deploys (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    project TEXT NOT NULL,
    ref TEXT,
    sha TEXT,
    release_id TEXT,
    operator TEXT,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    summary TEXT,
    config TEXT,
    pid INTEGER,
    client TEXT,
    env TEXT,
    freeze_override TEXT
);
CREATE TABLE IF NOT EXISTS deploy_hosts (
    deploy_id TEXT NOT NULL REFERENCES deploys(id),
    host TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT,
    release_id TEXT,
    previous TEXT,
    PRIMARY KEY (deploy_id, host)
);
CREATE INDEX IF NOT EXISTS deploys_started ON deploys(started);
"""

#: columns added after the first release, added to an older database when it is opened
ADDED_COLUMNS = {"env": "TEXT", "freeze_override": "TEXT"}


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "shipdeck"


class History:
    """The history database. Each call opens its own short connection (WAL)."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else state_dir() / "history.db"
        self.transcripts = self.path.parent / "transcripts"
        self._ready = False

    def _db(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        if not self._ready:  # WAL mode is persistent; the schema is made once
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(deploys)")}
            for name, kind in ADDED_COLUMNS.items():
                if name not in have:
                    db.execute(f"ALTER TABLE deploys ADD COLUMN {name} {kind}")
            self._ready = True
        return db

    def start(
        self,
        deploy_id: str,
        kind: str,
        project: str,
        ref: str,
        operator: str,
        config: str,
        *,
        env: str | None = None,
        freeze_override: dict[str, Any] | None = None,
    ) -> None:
        """Record a run as started. ``env``: the config's environment;
        ``freeze_override``: the freeze window overridden and by whom, why (stored as
        JSON). Raises ``sqlite3.Error``."""
        override = json.dumps(freeze_override) if freeze_override else None
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO deploys (id, kind, project, ref, operator, started, status, config, pid, client, env, freeze_override)"
                " VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (
                    deploy_id,
                    kind,
                    project,
                    ref,
                    operator,
                    time.time(),
                    config,
                    os.getpid(),
                    socket.gethostname(),
                    env,
                    override,
                ),
            )

    def update(self, deploy_id: str, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._db() as db:
            db.execute(f"UPDATE deploys SET {cols} WHERE id = ?", (*fields.values(), deploy_id))

    def finish(
        self,
        deploy_id: str,
        status: str,
        exit_code: int,
        summary: dict[str, Any],
        hosts: list[dict[str, Any]],
    ) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE deploys SET ended = ?, status = ?, exit_code = ?, summary = ? WHERE id = ?",
                (time.time(), status, exit_code, json.dumps(summary), deploy_id),
            )
            db.executemany(
                "INSERT OR REPLACE INTO deploy_hosts (deploy_id, host, status, detail, release_id, previous)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        deploy_id,
                        h["host"],
                        h["status"],
                        h.get("detail", ""),
                        h.get("release_id", ""),
                        h.get("previous", ""),
                    )
                    for h in hosts
                ],
            )

    def _row(self, row: sqlite3.Row, db: sqlite3.Connection) -> dict[str, Any]:
        d = dict(row)
        d["summary"] = json.loads(d["summary"]) if d.get("summary") else {}
        d["freeze_override"] = json.loads(d["freeze_override"]) if d.get("freeze_override") else None
        if (
            d["status"] == "running"
            and d.get("client") == socket.gethostname()
            and d.get("pid")
            and not pid_alive(d["pid"])
        ):
            d["status"] = "interrupted"
        counts = db.execute(
            "SELECT status, COUNT(*) AS n FROM deploy_hosts WHERE deploy_id = ? GROUP BY status",
            (d["id"],),
        ).fetchall()
        by = {r["status"]: r["n"] for r in counts}
        d["hosts_ok"] = by.get("ok", 0)
        d["hosts_failed"] = by.get("failed", 0)
        return d

    def list(self, n: int = 20, project: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self._db() as db:
            if project:
                rows = db.execute(
                    "SELECT * FROM deploys WHERE project = ? ORDER BY started DESC LIMIT ?",
                    (project, n),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM deploys ORDER BY started DESC LIMIT ?", (n,)
                ).fetchall()
            return [self._row(r, db) for r in rows]

    def get(self, deploy_id: str) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        with self._db() as db:
            row = db.execute("SELECT * FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
            if row is None:
                rows = db.execute(
                    "SELECT * FROM deploys WHERE id LIKE ? ORDER BY started DESC",
                    (deploy_id + "%",),
                ).fetchall()
                if len(rows) != 1:
                    return None
                row = rows[0]
            d = self._row(row, db)
            d["hosts"] = [
                dict(r)
                for r in db.execute(
                    "SELECT * FROM deploy_hosts WHERE deploy_id = ? ORDER BY host", (d["id"],)
                )
            ]
            return d

    def find(self, key: str) -> dict[str, Any] | None:
        """The record ``key`` names: a deploy id, a release id (the deploy that made that
        release), or a unique prefix of either. None when nothing matches.

        Raises :class:`AmbiguousId` (with the candidates, newest first) when a prefix
        names more than one record.
        """
        key = key.strip()
        if not key or not self.path.exists():
            return None
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM deploys WHERE substr(id, 1, ?) = ? OR substr(release_id, 1, ?) = ?"
                " ORDER BY started DESC",
                (len(key), key, len(key), key),
            ).fetchall()
            chosen: dict[str, sqlite3.Row] = {}
            for row in rows:
                if row["id"] == key:
                    chosen = {row["id"]: row}
                    break
                if row["id"].startswith(key):
                    chosen[row["id"]] = row
            else:
                released = {
                    r["release_id"] for r in rows if (r["release_id"] or "").startswith(key)
                }
                if key in released:  # an exact release id wins over prefixes of others
                    chosen, released = {}, {key}
                for release_id in released:
                    row = _maker(rows, release_id)
                    chosen[row["id"]] = row
            if not chosen:
                return None
            if len(chosen) > 1:
                ordered = sorted(chosen.values(), key=lambda r: r["started"], reverse=True)
                raise AmbiguousId(key, [self._row(r, db) for r in ordered])
            return self._record(next(iter(chosen.values())), db)

    def _record(self, row: sqlite3.Row, db: sqlite3.Connection) -> dict[str, Any]:
        d = self._row(row, db)
        d["hosts"] = [
            dict(r)
            for r in db.execute(
                "SELECT * FROM deploy_hosts WHERE deploy_id = ? ORDER BY host", (d["id"],)
            )
        ]
        return d

    def releases(self, project: str) -> list[str]:
        """Release ids deployed successfully (to at least one host), newest first."""
        if not self.path.exists():
            return []
        with self._db() as db:
            rows = db.execute(
                "SELECT DISTINCT h.release_id FROM deploy_hosts h JOIN deploys d ON d.id = h.deploy_id"
                " WHERE d.project = ? AND d.kind = 'deploy' AND h.status = 'ok' AND h.release_id != ''"
                " ORDER BY h.release_id DESC",
                (project,),
            ).fetchall()
            return [r[0] for r in rows]

    def has_stamp(self, stamp: str) -> bool:
        """Whether a recorded deploy's release id starts with this UTC stamp."""
        if not self.path.exists():
            return False
        with self._db() as db:
            row = db.execute(
                "SELECT 1 FROM deploys WHERE release_id LIKE ? LIMIT 1", (stamp + "-%",)
            ).fetchone()
            return row is not None

    def record_maintenance(
        self,
        event: MaintenanceChanged,
        *,
        project: str,
        config: str,
        status: str = "ok",
        exit_code: int = 0,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record a maintenance change (``shipdeck maintenance on|off``) as a run of kind
        ``maintenance`` (ref ``on``/``off``): who (the event's ``by``), why (its
        message, also the summary's ``reason``), how it ended, with ``detail`` (each
        server's state before, ...) in the summary and the event as its transcript."""
        summary = {
            "on": event.on,
            "message": event.message,
            "reason": event.message,
            "where": event.where,
            **(detail or {}),
        }
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO deploys (id, kind, project, ref, operator, started, ended,"
                " status, exit_code, summary, config, pid, client)"
                " VALUES (?, 'maintenance', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.deploy_id,
                    project,
                    "on" if event.on else "off",
                    event.by,
                    event.at,
                    time.time(),
                    status,
                    exit_code,
                    json.dumps(summary),
                    config,
                    os.getpid(),
                    socket.gethostname(),
                ),
            )
        writer = TranscriptWriter(self, event.deploy_id)
        try:
            writer(event)
        finally:
            writer.close()

    def last_maintenance(self, project: str) -> dict[str, Any] | None:
        """The newest successful maintenance change of ``project`` (its record, with
        ``on`` and ``message`` read from the summary), or None."""
        if not self.path.exists():
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT * FROM deploys WHERE kind = 'maintenance' AND project = ? AND status = 'ok'"
                " ORDER BY started DESC LIMIT 1",
                (project,),
            ).fetchone()
            if row is None:
                return None
            d = self._row(row, db)
        d["on"] = d["summary"].get("on") is True
        d["message"] = str(d["summary"].get("message") or "")
        return d

    def transcript(self, deploy_id: str) -> Path | None:
        path = self.transcripts / f"{deploy_id}.jsonl"
        return path if path.exists() else None


class AmbiguousId(ShipdeckError, LookupError):
    """A prefix that names several deploys; ``candidates`` are their records, newest first."""

    def __init__(self, key: str, candidates: list[dict[str, Any]]):
        super().__init__(f"{key!r} matches {len(candidates)} deploys")
        self.key = key
        self.candidates = candidates


def _maker(rows: list[sqlite3.Row], release_id: str) -> sqlite3.Row:
    """Of the records naming ``release_id``, the deploy that made it (else the newest,
    a rollback to it). ``rows`` are newest first."""
    named = [r for r in rows if r["release_id"] == release_id]
    return next((r for r in named if r["kind"] == "deploy"), named[0])


class TranscriptWriter:
    """Subscriber that appends every event as one JSON line (flushed per line)."""

    def __init__(self, history: History, deploy_id: str):
        history.transcripts.mkdir(parents=True, exist_ok=True)
        self.path = history.transcripts / f"{deploy_id}.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def __call__(self, event: Event) -> None:
        self._file.write(event.dumps() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

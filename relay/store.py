"""The room log: every stored message of every room, with offsets, an epoch and dedupe.

The relay talks to storage only through :class:`Store`, a small async interface, so
a Redis backend (streams for the log, a hash for state) can sit behind the same calls
when several relay nodes share rooms. :class:`SQLiteStore` is the default: one file in
WAL mode, written from the event loop (each append is one short transaction; with
``synchronous=NORMAL`` a committed append survives the relay process being killed,
``synchronous=FULL`` also survives power loss).

Contract every backend keeps:

- offsets in a room start at 1 and grow by one per stored message, never reused,
  even after retention removed old messages;
- a room's epoch is fixed when its log is created and changes only if the log is
  lost (new database), so a client holding an old epoch knows it cannot resume;
- ``append`` with a ``(room, sender, client_id)`` already stored returns the stored
  record and ``duplicate=True`` instead of storing it again;
- retention removes the oldest messages beyond ``max_count`` per room and those older
  than ``max_age`` seconds; dedupe memory is as long as retention.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from relay.protocol import PROTOCOL_VERSION, dumps


@dataclass(slots=True)
class Record:
    """One stored message. ``body`` holds the type-specific fields."""

    room: str
    offset: int
    sender: str
    client_id: str | None
    type: str
    time: float
    body: dict[str, Any]
    _text: str | None = field(default=None, repr=False, compare=False)

    def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": self.type,
            "v": PROTOCOL_VERSION,
            "room": self.room,
            "offset": self.offset,
            "sender": self.sender,
            "time": self.time,
        }
        if self.client_id is not None:
            frame["id"] = self.client_id
        frame.update(self.body)
        return frame

    @property
    def text(self) -> str:
        """The frame as sent on the wire (encoded once, shared by every receiver)."""
        if self._text is None:
            self._text = dumps(self.frame())
        return self._text


@dataclass(frozen=True, slots=True)
class RoomInfo:
    epoch: str
    head: int  # offset of the newest stored message (0 if none yet)
    first: int  # offset of the oldest retained message (head + 1 if none)


class Store(Protocol):
    """Storage of room logs and small per-room state (lock lease, deploy snapshot)."""

    async def open_room(self, room: str) -> RoomInfo:
        """Return the room's epoch and offsets, creating the room if it is new."""
        ...

    async def info(self, room: str) -> RoomInfo: ...

    async def append(
        self,
        room: str,
        sender: str,
        client_id: str | None,
        type: str,
        body: dict[str, Any],
        at: float,
    ) -> tuple[Record, bool]:
        """Store one message; return it and whether it was a duplicate."""
        ...

    async def read(
        self, room: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[Record]:
        """Up to ``limit`` messages with offset > ``after``, in offset order; with
        ``max_bytes``, stop once the bodies read pass that many bytes (at least one
        message is returned if there is one)."""
        ...

    async def last(self, room: str, type: str, n: int) -> list[Record]:
        """The newest ``n`` messages of one type, oldest first."""
        ...

    async def get_state(self, room: str, key: str) -> Any | None: ...

    async def put_state(self, room: str, key: str, value: Any) -> None: ...

    async def trim(self, now: float | None = None) -> int:
        """Apply retention to every room; return how many messages were removed."""
        ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    head INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    offset INTEGER NOT NULL,
    sender TEXT NOT NULL,
    client_id TEXT,
    type TEXT NOT NULL,
    time REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (room, offset)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedupe
    ON messages (room, sender, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_type ON messages (room, type, offset);
CREATE TABLE IF NOT EXISTS state (
    room TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (room, key)
) WITHOUT ROWID;
"""


class SQLiteStore:
    """:class:`Store` on one SQLite file in WAL mode (``":memory:"`` for tests)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_count: int = 100_000,
        max_age: float = 7 * 24 * 3600.0,
        synchronous: str = "NORMAL",
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = str(path)
        self.max_count = max_count
        self.max_age = max_age
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._heads: dict[str, int] = {}

    # The methods are ``async`` for the interface; SQLite calls are short and run
    # inline so that appends in one room keep their order without extra locking.

    async def open_room(self, room: str) -> RoomInfo:
        row = self._db.execute("SELECT epoch, head FROM rooms WHERE room = ?", (room,)).fetchone()
        if row is None:
            epoch = secrets.token_hex(8)
            self._db.execute(
                "INSERT INTO rooms (room, epoch, head, created) VALUES (?, ?, 0, ?)",
                (room, epoch, time.time()),
            )
        return await self.info(room)

    async def info(self, room: str) -> RoomInfo:
        row = self._db.execute("SELECT epoch, head FROM rooms WHERE room = ?", (room,)).fetchone()
        if row is None:
            raise KeyError(room)
        epoch, head = row
        self._heads[room] = head
        first = self._db.execute(
            "SELECT MIN(offset) FROM messages WHERE room = ?", (room,)
        ).fetchone()[0]
        return RoomInfo(epoch=epoch, head=head, first=first if first is not None else head + 1)

    async def append(
        self,
        room: str,
        sender: str,
        client_id: str | None,
        type: str,
        body: dict[str, Any],
        at: float,
    ) -> tuple[Record, bool]:
        db = self._db
        if client_id is not None:
            row = db.execute(
                "SELECT offset, type, time, body FROM messages WHERE room = ? AND sender = ? AND client_id = ?",
                (room, sender, client_id),
            ).fetchone()
            if row is not None:
                return Record(
                    room, row[0], sender, client_id, row[1], row[2], json.loads(row[3])
                ), True
        head = self._heads.get(room)
        if head is None:
            head = (await self.open_room(room)).head
        offset = head + 1
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("UPDATE rooms SET head = ? WHERE room = ?", (offset, room))
            db.execute(
                "INSERT INTO messages (room, offset, sender, client_id, type, time, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (room, offset, sender, client_id, type, at, dumps(body)),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._heads[room] = offset
        return Record(room, offset, sender, client_id, type, at, body), False

    async def read(
        self, room: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[Record]:
        cur = self._db.execute(
            "SELECT offset, sender, client_id, type, time, body FROM messages"
            " WHERE room = ? AND offset > ? ORDER BY offset LIMIT ?",
            (room, after, limit),
        )
        out: list[Record] = []
        size = 0
        try:
            for o, s, c, t, tm, b in cur:
                out.append(Record(room, o, s, c, t, tm, json.loads(b)))
                size += len(b)
                if max_bytes is not None and size >= max_bytes:
                    break
        finally:
            cur.close()
        return out

    async def last(self, room: str, type: str, n: int) -> list[Record]:
        rows = self._db.execute(
            "SELECT offset, sender, client_id, type, time, body FROM messages"
            " WHERE room = ? AND type = ? ORDER BY offset DESC LIMIT ?",
            (room, type, n),
        ).fetchall()
        return [Record(room, o, s, c, t, tm, json.loads(b)) for o, s, c, t, tm, b in reversed(rows)]

    async def get_state(self, room: str, key: str) -> Any | None:
        row = self._db.execute(
            "SELECT value FROM state WHERE room = ? AND key = ?", (room, key)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    async def put_state(self, room: str, key: str, value: Any) -> None:
        if value is None:
            self._db.execute("DELETE FROM state WHERE room = ? AND key = ?", (room, key))
        else:
            self._db.execute(
                "INSERT INTO state (room, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT (room, key) DO UPDATE SET value = excluded.value",
                (room, key, dumps(value)),
            )

    async def trim(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for room, head in self._db.execute("SELECT room, head FROM rooms").fetchall():
            cur = self._db.execute(
                "DELETE FROM messages WHERE room = ? AND (offset <= ? OR time < ?)",
                (room, head - self.max_count, now - self.max_age),
            )
            removed += cur.rowcount
        return removed

    async def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()

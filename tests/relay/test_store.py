"""The SQLite room log: offsets, epoch, dedupe, retention, reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store import SQLiteStore

pytestmark = pytest.mark.timeout(30)


async def test_offsets_dedupe_and_reopen(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    info = await store.open_room("web")
    assert info.head == 0 and info.first == 1
    a, dup = await store.append("web", "alice", "m1", "chat", {"text": "one"}, 1.0)
    assert (a.offset, dup) == (1, False)
    again, dup = await store.append("web", "alice", "m1", "chat", {"text": "one"}, 2.0)
    assert (again.offset, dup, again.body) == (1, True, {"text": "one"})
    other, dup = await store.append(
        "web", "bob", "m1", "chat", {"text": "same id, other sender"}, 3.0
    )
    assert (other.offset, dup) == (2, False)
    await store.append("ops", "bob", None, "lock", {"op": "released"}, 3.0)
    await store.put_state("web", "lock", {"operator": "alice"})
    await store.close()

    store = SQLiteStore(tmp_path / "r.db")
    info2 = await store.open_room("web")
    assert info2.epoch == info.epoch and info2.head == 2
    assert [r.body["text"] for r in await store.read("web", 0, 10)] == [
        "one",
        "same id, other sender",
    ]
    assert (await store.info("ops")).head == 1
    assert await store.get_state("web", "lock") == {"operator": "alice"}
    await store.close()


async def test_retention_by_count_and_age(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db", max_count=5, max_age=100.0)
    await store.open_room("web")
    for i in range(12):
        await store.append("web", "alice", f"m{i}", "chat", {"text": str(i)}, 1000.0 + i)
    assert await store.trim(now=1050.0) == 7
    info = await store.info("web")
    assert (info.first, info.head) == (8, 12)
    # offsets 8, 9, 10 were stored at 1007, 1008, 1009: older than 100 s at 1109.5
    assert await store.trim(now=1109.5) == 3
    info = await store.info("web")
    assert info.head == 12 and info.first == 11
    rec, _ = await store.append("web", "alice", "new", "chat", {"text": "after trim"}, 2000.0)
    assert rec.offset == 13  # offsets never reused
    await store.close()

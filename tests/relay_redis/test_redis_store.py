"""RedisStore on its own: idempotent appends, offsets, retention by count (MAXLEN)
and age (MINID), a new epoch when the stream is lost, the lease script."""

from __future__ import annotations

import time

import pytest

from tests.relay_redis.conftest import RedisServer

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def store(redis_server: RedisServer):  # type: ignore[no-untyped-def]
    from relay.redis_store import RedisStore

    s = RedisStore(redis_server.url, max_count=5, max_age=3600)
    yield s
    await s.close()


async def test_append_is_idempotent_and_offsets_count(store) -> None:  # type: ignore[no-untyped-def]
    info = await store.open_room("r")
    assert (info.head, info.first) == (0, 1)
    r1, dup1 = await store.append("r", "alice", "m1", "chat", {"text": "a"}, 1.0)
    r2, dup2 = await store.append("r", "alice", "m1", "chat", {"text": "changed"}, 2.0)
    r3, _ = await store.append("r", "bob", "m1", "chat", {"text": "b"}, 3.0)  # other sender
    assert (r1.offset, dup1, r2.offset, dup2, r3.offset) == (1, False, 1, True, 2)
    assert r2.body == {"text": "a"} and r2.time == 1.0
    assert [r.body["text"] for r in await store.read("r", 0, 10)] == ["a", "b"]


async def test_retention_by_count_and_age(store) -> None:  # type: ignore[no-untyped-def]
    now = time.time()
    for i in range(12):
        await store.append("r", "alice", f"m{i}", "chat", {"text": str(i)}, now - 7200 + i * 300)
    info = await store.info("r")
    assert (info.head, info.first) == (12, 8)  # MAXLEN 5 on every append
    # dedupe is trimmed with the log: an old id is stored again (beyond retention)
    rec, dup = await store.append("r", "alice", "m0", "chat", {"text": "again"}, now)
    assert not dup and rec.offset == 13
    assert await store.trim(now) > 0  # MINID: older than an hour
    recs = await store.read("r", 0, 100)
    assert all(r.time >= now - 3600 for r in recs) and recs[-1].offset == 13
    assert (await store.info("r")).first == recs[0].offset


async def test_lost_stream_gets_a_new_epoch(store) -> None:  # type: ignore[no-untyped-def]
    await store.append("r", "alice", "m1", "chat", {"text": "a"}, 1.0)
    epoch = (await store.info("r")).epoch
    await store.redis.delete("sd:{r}:log")
    info = await store.info("r")
    assert info.epoch != epoch and info.first == info.head + 1


async def test_lease_script(store) -> None:  # type: ignore[no-untyped-def]
    a = {"operator": "alice", "session": "s1", "client": "c1"}
    b = {"operator": "bob", "session": "s2", "client": "c2"}
    got = await store.lease("r", "acquire", reason="x", ttl=30, **a)
    assert got["result"] == "granted" and got["record"].body["op"] == "acquired"
    assert (await store.lease("r", "acquire", reason="y", ttl=30, **b))["result"] == "held"
    assert (await store.lease("r", "heartbeat", **b))["result"] == "lost"
    assert (await store.lease("r", "release", **b))["result"] == "not_holder"
    got = await store.lease("r", "stale", since=got["lease"]["since"])
    assert got["result"] == "unchanged"  # not expired yet
    assert (await store.lease("r", "release", **a))["result"] == "released"
    assert (await store.lease("r", "get"))["lease"] is None
    assert await store.redis.pttl("sd:{r}:lease") == -2

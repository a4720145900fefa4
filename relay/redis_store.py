"""A :class:`~relay.store.Store` on Redis, shared by several relay nodes.

Keys of one room (all carry the hash tag ``{room}`` so a room lives on one shard):

``sd:{room}:meta``      hash: ``epoch`` (random, new when the log is lost), ``head``
                        (the room's offset counter: offsets 1, 2, 3 ... never reused)
``sd:{room}:log``       stream: one entry per stored message, entry id ``<offset>-0``,
                        fields ``s`` sender, ``c`` client id, ``t`` type, ``tm`` time,
                        ``b`` the type-specific body (JSON)
``sd:{room}:dedupe``    sorted set: ``sender\\n client_id`` scored by its offset, trimmed
                        with the log (dedupe lasts as long as retention)
``sd:{room}:state``     hash: small per-room state (the deploy snapshot)
``sd:{room}:lease``     string (JSON): the deploy lock lease, with a TTL well past its
                        expiry so an abandoned lease disappears by itself
``sd:{room}:who:<node>`` hash: operator -> connections on one relay node, TTL refreshed
                        by that node (a node that dies stops counting within the TTL)
``sd:{room}:nodes``     sorted set: relay nodes with presence in the room, scored by
                        the time their presence hash expires
``sd:rooms``            set: the rooms, for retention

Appends and lease changes are Lua scripts, so they are atomic across nodes: the
offset, the stream entry and the dedupe entry are written together, and a lease
change and the ``lock`` message that makes it visible are one step. Every node
delivers a room by reading its stream (``XREAD BLOCK``) from the last offset it
delivered, so all nodes deliver the same messages in the same order; nothing is
fanned out through pub/sub except presence, which is not stored anyway.

Durability is Redis's: run it with ``appendonly yes`` and ``appendfsync always``
so an acknowledged message survives Redis being killed (``everysec`` may lose up
to a second of acknowledged messages on a crash of the Redis host).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from relay.protocol import dumps
from relay.store import Record, RoomInfo

# The room's epoch and counter: create them, or start a new epoch if the log is lost.
_LUA_ROOM = r"""
local function sd_room(meta, stream, dedupe, newepoch)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    redis.call('DEL', stream, dedupe)
    redis.call('HSET', meta, 'epoch', newepoch, 'head', 0)
    return newepoch
  end
  local head = tonumber(redis.call('HGET', meta, 'head') or '0')
  if head > 0 and redis.call('EXISTS', stream) == 0 then
    redis.call('HSET', meta, 'epoch', newepoch)
    redis.call('DEL', dedupe)
    return newepoch
  end
  return epoch
end

local function sd_append(meta, stream, dedupe, sender, cid, typ, tm, body, maxlen)
  local head = redis.call('HINCRBY', meta, 'head', 1)
  redis.call('XADD', stream, 'MAXLEN', maxlen, head .. '-0',
             's', sender, 'c', cid, 't', typ, 'tm', tm, 'b', body)
  if cid ~= '' then
    redis.call('ZADD', dedupe, head, sender .. '\n' .. cid)
  end
  if head > tonumber(maxlen) then
    redis.call('ZREMRANGEBYSCORE', dedupe, '-inf', head - tonumber(maxlen))
  end
  return head
end
"""

# KEYS: meta, log, dedupe, rooms   ARGV: room, newepoch
_OPEN = (
    _LUA_ROOM
    + r"""
local epoch = sd_room(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
local head = tonumber(redis.call('HGET', KEYS[1], 'head'))
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local f = head + 1
if #first > 0 then f = tonumber(string.match(first[1][1], '^(%d+)')) end
return {epoch, head, f}
"""
)

# KEYS: meta, log, dedupe, rooms   ARGV: room, newepoch, sender, cid, type, time, body, maxlen
_APPEND = (
    _LUA_ROOM
    + r"""
sd_room(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
if ARGV[4] ~= '' then
  local old = redis.call('ZSCORE', KEYS[3], ARGV[3] .. '\n' .. ARGV[4])
  if old then
    local id = old .. '-0'
    local e = redis.call('XRANGE', KEYS[2], id, id)
    if #e > 0 then return {1, tonumber(old), e[1][2]} end
    return {1, tonumber(old), {}}
  end
end
local head = sd_append(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return {0, head, {}}
"""
)

# The lease: one JSON value per room. Each change that others must see also appends
# its ``lock`` message to the log in the same script.
# KEYS: meta, log, dedupe, rooms, lease
# ARGV: room, newepoch, action, operator, session, client, reason, ttl, maxlen, keep,
#       expect_since (for 'stale')
_LEASE = (
    _LUA_ROOM
    + r"""
local action = ARGV[3]
local t = redis.call('TIME')
local now = math.floor((tonumber(t[1]) + tonumber(t[2]) / 1000000) * 1000 + 0.5) / 1000
local raw = redis.call('GET', KEYS[5])
local lease = nil
if raw then lease = cjson.decode(raw) end
local mine = lease ~= nil and lease.session == ARGV[5] and lease.operator == ARGV[4]
local keep = tonumber(ARGV[10])

local function public(l)
  if l == nil then return cjson.null end
  return {operator = l.operator, client = l.client, reason = l.reason, ttl = l.ttl,
          since = l.since, expires = l.expires, stale = l.stale}
end
local function save(l)
  local ttl_ms = math.floor((l.expires - now + keep) * 1000)
  if ttl_ms < 1000 then ttl_ms = 1000 end
  redis.call('SET', KEYS[5], cjson.encode(l), 'PX', ttl_ms)
end
local function emit(sender, op, holder, previous)
  sd_room(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[1])
  local body = {op = op, holder = public(holder)}
  if previous ~= nil then body.previous = public(previous) end
  local b = cjson.encode(body)
  local off = sd_append(KEYS[1], KEYS[2], KEYS[3], sender, '', 'lock', tostring(now), b, ARGV[9])
  return {off, now, b}
end
local function reply(result, l, rec)
  local out = {result = result, lease = public(l), now = now}
  if l ~= nil then out.session = l.session end
  if rec then out.offset = rec[1]; out.time = rec[2]; out.body = rec[3] end
  return cjson.encode(out)
end

if action == 'get' then
  if lease == nil then return cjson.encode({result = 'none', now = now}) end
  local out = {result = 'lease', lease = public(lease), session = lease.session, now = now}
  return cjson.encode(out)
end

if action == 'acquire' or action == 'grant' then
  local ttl = tonumber(ARGV[8])
  if mine and action == 'acquire' then
    local was_stale = lease.stale
    lease.ttl = ttl; lease.expires = now + ttl; lease.stale = false
    if ARGV[7] ~= '' then lease.reason = ARGV[7] end
    save(lease)
    local rec = nil
    if was_stale then rec = emit(ARGV[4], 'resumed', lease, nil) end
    return reply('granted', lease, rec)
  end
  if lease == nil or lease.stale or lease.expires <= now then
    local new = {operator = ARGV[4], session = ARGV[5], client = ARGV[6], reason = ARGV[7],
                 ttl = ttl, since = now, expires = now + ttl, stale = false}
    save(new)
    local op = 'acquired'
    if lease ~= nil then op = 'takeover' end
    local rec = emit(ARGV[4], op, new, lease)
    return reply('granted', new, rec)
  end
  return reply('held', lease, nil)
end

if action == 'heartbeat' then
  if not mine then return reply('lost', lease, nil) end
  local was_stale = lease.stale
  lease.expires = now + lease.ttl; lease.stale = false
  save(lease)
  local rec = nil
  if was_stale then rec = emit(ARGV[4], 'resumed', lease, nil) end
  return reply('granted', lease, rec)
end

if action == 'release' then
  if not mine then return reply('not_holder', lease, nil) end
  redis.call('DEL', KEYS[5])
  local rec = emit(ARGV[4], 'released', nil, lease)
  return reply('released', nil, rec)
end

if action == 'stale' then
  if lease == nil or lease.stale or lease.expires > now or tostring(lease.since) ~= ARGV[11] then
    return reply('unchanged', lease, nil)
  end
  lease.stale = true
  save(lease)
  local rec = emit('relay', 'stale', lease, nil)
  return reply('stale', lease, rec)
end
return redis.error_reply('unknown lease action ' .. action)
"""
)

# Presence of one node in one room. KEYS: who(node), nodes   ARGV: node, operator, delta, ttl_s
_PRESENCE = r"""
local n = 0
if ARGV[2] ~= '' then
  n = redis.call('HINCRBY', KEYS[1], ARGV[2], tonumber(ARGV[3]))
  if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[2]) end
end
local t = redis.call('TIME')
local ttl = tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[2], tonumber(t[1]) + ttl, ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(t[1]))
return n
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisStore:
    """:class:`~relay.store.Store` on one Redis database, for several relay nodes.

    ``shared = True`` tells the relay that other nodes write to the same rooms: it
    then delivers each room by following its stream (:meth:`follow`) instead of
    fanning out what it stored itself, and keeps the lease and presence here.
    """

    shared = True
    PRESENCE_TTL = 15  # seconds a node's presence counts without a refresh
    LEASE_KEEP = 24 * 3600.0  # a lease key outlives its expiry by this long

    def __init__(
        self,
        url: str,
        *,
        max_count: int = 100_000,
        max_age: float = 7 * 24 * 3600.0,
        node: str | None = None,
    ) -> None:
        self.url = url
        self.max_count = max_count
        self.max_age = max_age
        self.node = node or secrets.token_hex(6)
        self.redis = aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=5)
        self._open = self.redis.register_script(_OPEN)
        self._append = self.redis.register_script(_APPEND)
        self._lease = self.redis.register_script(_LEASE)
        self._presence = self.redis.register_script(_PRESENCE)
        self._pubsub: Any = None

    # -- keys ---------------------------------------------------------------------

    @staticmethod
    def _keys(room: str) -> list[str]:
        return [f"sd:{{{room}}}:meta", f"sd:{{{room}}}:log", f"sd:{{{room}}}:dedupe", "sd:rooms"]

    @staticmethod
    def _log(room: str) -> str:
        return f"sd:{{{room}}}:log"

    # -- Store ----------------------------------------------------------------------

    async def ping(self) -> None:
        await self.redis.ping()

    async def open_room(self, room: str) -> RoomInfo:
        epoch, head, first = await self._open(
            keys=self._keys(room), args=[room, secrets.token_hex(8)]
        )
        return RoomInfo(epoch=_s(epoch), head=int(head), first=int(first))

    async def info(self, room: str) -> RoomInfo:
        return await self.open_room(room)

    async def append(
        self,
        room: str,
        sender: str,
        client_id: str | None,
        type: str,
        body: dict[str, Any],
        at: float,
    ) -> tuple[Record, bool]:
        dup, offset, fields = await self._append(
            keys=self._keys(room),
            args=[
                room,
                secrets.token_hex(8),
                sender,
                client_id or "",
                type,
                repr(at),
                dumps(body),
                self.max_count,
            ],
        )
        if dup:
            if fields:
                return self._record(room, int(offset), fields), True
            return Record(room, int(offset), sender, client_id, type, at, body), True
        return Record(room, int(offset), sender, client_id, type, at, body), False

    @staticmethod
    def _record(room: str, offset: int, fields: Any) -> Record:
        if isinstance(fields, list):  # raw script reply: [k1, v1, k2, v2, ...]
            fields = dict(zip(fields[::2], fields[1::2], strict=False))
        f = {_s(k): v for k, v in fields.items()}
        cid = _s(f.get("c", b""))
        return Record(
            room,
            offset,
            _s(f["s"]),
            cid or None,
            _s(f["t"]),
            float(_s(f["tm"])),
            json.loads(f["b"]),
        )

    def _records(self, room: str, entries: list[Any]) -> list[Record]:
        out = []
        for entry_id, fields in entries:
            offset = int(_s(entry_id).split("-", 1)[0])
            out.append(self._record(room, offset, fields))
        return out

    async def read(
        self, room: str, after: int, limit: int, max_bytes: int | None = None
    ) -> list[Record]:
        if max_bytes is None:
            entries = await self.redis.xrange(self._log(room), f"{after + 1}-0", "+", count=limit)
            return self._records(room, entries)
        # in small steps, so a page of big messages never sits in memory at once
        out: list[Record] = []
        size = 0
        while len(out) < limit and size < max_bytes:
            entries = await self.redis.xrange(
                self._log(room), f"{after + 1}-0", "+", count=min(16, limit - len(out))
            )
            if not entries:
                break
            for rec in self._records(room, entries):
                out.append(rec)
                size += len(rec.text)
                after = rec.offset
                if size >= max_bytes:
                    break
        return out

    async def follow(self, room: str, after: int, block: float = 5.0) -> list[Record]:
        """Messages after ``after``; waits up to ``block`` s for the first one."""
        res = await self.redis.xread(
            {self._log(room): f"{after}-0"}, count=64, block=int(block * 1000)
        )
        if not res:
            return []
        return self._records(room, res[0][1])

    async def last(self, room: str, type: str, n: int) -> list[Record]:
        found: list[Record] = []
        end = "+"
        for _ in range(400):  # looks at most 20,000 messages back, 50 at a time
            entries = await self.redis.xrevrange(self._log(room), end, "-", count=50)
            if not entries:
                break
            for rec in self._records(room, entries):
                if rec.type == type:
                    found.append(rec)
                    if len(found) == n:
                        return found[::-1]
            low = int(_s(entries[-1][0]).split("-", 1)[0])
            if low <= 1:
                break
            end = f"{low - 1}-0"
        return found[::-1]

    async def get_state(self, room: str, key: str) -> Any | None:
        if key == "lock":
            return await self.lease(room, "get")
        raw = await self.redis.hget(f"sd:{{{room}}}:state", key)
        return None if raw is None else json.loads(raw)

    async def put_state(self, room: str, key: str, value: Any) -> None:
        if key == "lock":
            raise ValueError("the lease is changed with lease(), atomically")
        if value is None:
            await self.redis.hdel(f"sd:{{{room}}}:state", key)
        else:
            await self.redis.hset(f"sd:{{{room}}}:state", key, dumps(value))

    async def trim(self, now: float | None = None) -> int:
        """Retention: MAXLEN is applied on every append; here MINID by age, every room."""
        now = time.time() if now is None else now
        cutoff = now - self.max_age
        removed = 0
        for raw in await self.redis.smembers("sd:rooms"):
            room = _s(raw)
            log_key = self._log(room)
            start = "-"
            keep_from: int | None = None
            while keep_from is None:
                entries = await self.redis.xrange(log_key, start, "+", count=200)
                if not entries:
                    break
                for entry_id, fields in entries:
                    if float(_s(fields[b"tm"])) >= cutoff:
                        keep_from = int(_s(entry_id).split("-", 1)[0])
                        break
                else:
                    last = int(_s(entries[-1][0]).split("-", 1)[0])
                    start = f"{last + 1}-0"
                    if len(entries) < 200:
                        keep_from = last + 1
            if keep_from is None:
                continue
            n = await self.redis.xtrim(log_key, minid=f"{keep_from}-0", approximate=False)
            if n:
                removed += n
                await self.redis.zremrangebyscore(f"sd:{{{room}}}:dedupe", "-inf", f"({keep_from}")
        return removed

    # -- lease ----------------------------------------------------------------------

    async def lease(
        self,
        room: str,
        action: str,
        *,
        operator: str = "",
        session: str = "",
        client: str = "",
        reason: str = "",
        ttl: float = 0.0,
        since: float | None = None,
    ) -> dict[str, Any]:
        """One atomic lease step. Returns ``{"result", "lease", "now"}`` and, when a
        ``lock`` message was stored with it, ``"record"``. ``action``: ``get``,
        ``acquire``, ``grant`` (only if free or stale), ``heartbeat``, ``release``,
        ``stale`` (only if the lease that started at ``since`` has expired)."""
        raw = await self._lease(
            keys=[*self._keys(room), f"sd:{{{room}}}:lease"],
            args=[
                room,
                secrets.token_hex(8),
                action,
                operator,
                session,
                client,
                reason,
                repr(float(ttl)),
                self.max_count,
                repr(self.LEASE_KEEP),
                "" if since is None else _lua_num(since),
            ],
        )
        out = json.loads(raw)
        if out.get("lease") is None or out.get("lease") == {}:
            out["lease"] = None
        if "offset" in out:
            out["record"] = Record(
                room,
                int(out["offset"]),
                operator if out.get("result") != "stale" else "relay",
                None,
                "lock",
                float(out["time"]),
                json.loads(out["body"]),
            )
        return out

    # -- presence -------------------------------------------------------------------

    async def presence(self, room: str, operator: str, delta: int) -> int:
        """Count one more (or fewer) connection of ``operator`` on this node; returns
        the node's count. ``operator=""`` only refreshes the node's TTL."""
        n = await self._presence(
            keys=[f"sd:{{{room}}}:who:{self.node}", f"sd:{{{room}}}:nodes"],
            args=[self.node, operator, delta, self.PRESENCE_TTL],
        )
        return int(n)

    async def who(self, room: str) -> dict[str, int]:
        """Connections per operator in the room, over every live node."""
        nodes = await self.redis.zrangebyscore(f"sd:{{{room}}}:nodes", time.time(), "+inf")
        total: dict[str, int] = {}
        if not nodes:
            return total
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hgetall(f"sd:{{{room}}}:who:{_s(node)}")
            for counts in await pipe.execute():
                for op, n in counts.items():
                    if int(n) > 0:
                        total[_s(op)] = total.get(_s(op), 0) + int(n)
        return total

    async def announce(self, room: str, frame: str) -> None:
        """Send a presence frame to every node (pub/sub: presence is not stored)."""
        await self.redis.publish(f"sd:presence:{room}", frame)

    async def listen(self, on_frame: Callable[[str, str], Awaitable[None] | None]) -> None:
        """Call ``on_frame(room, frame)`` for every presence frame of any node, forever."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe("sd:presence:*")
                async for msg in pubsub.listen():
                    if msg is None or msg.get("type") != "pmessage":
                        continue
                    room = _s(msg["channel"]).split(":", 2)[2]
                    result = on_frame(room, _s(msg["data"]))
                    if result is not None:
                        await result
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    async def close(self) -> None:
        try:
            await self.redis.aclose()
        except Exception:
            pass


def _lua_num(x: float) -> str:
    """A number as Lua's tostring() prints it (14 significant digits)."""
    text = f"{x:.14g}"
    return text


__all__ = ["RedisStore", "ResponseError"]

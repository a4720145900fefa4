"""Protocol conformance: each rule of docs/relay-protocol.md, checked by talking raw
websockets JSON to a relay (no shipdeck client code involved).

Against a relay of your own (any implementation)::

    SHIPDECK_RELAY_URL=ws://127.0.0.1:8765 \\
    SHIPDECK_RELAY_TOKENS="alice=token-a,bob=token-b,carol=token-c" \\
    python -m pytest tests/relay/test_conformance.py

The tokens are three distinct operators of that relay's tokens file. Every test uses
rooms of its own (random names), so a shared relay is fine. Without the variables
the tests start a shipdeck relay in this process. Tests marked ``local`` need to
control the relay (retention) and are skipped against a URL.

Each test names the section of the document it checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(60)

FRAME_LIMIT = 2 * 1024 * 1024  # what a client must accept (and the relay's hard limit)
WELCOME_LIMIT = 1024 * 1024  # welcome and snapshot_part frames stay under this
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
EXTERNAL = os.environ.get("SHIPDECK_RELAY_URL")


def _external_tokens() -> dict[str, str]:
    raw = os.environ.get("SHIPDECK_RELAY_TOKENS", "")
    pairs = [p.split("=", 1) for p in raw.split(",") if "=" in p]
    tokens = {k.strip(): v.strip() for k, v in pairs}
    if len(tokens) < 3:
        raise pytest.UsageError("SHIPDECK_RELAY_TOKENS needs three operators: a=t1,b=t2,c=t3")
    return tokens


class Target:
    def __init__(self, url: str, tokens: dict[str, str], relay: Any = None) -> None:
        self.url = url
        self.ops = list(tokens)[:3]
        self.tokens = tokens
        self.relay = relay  # the in-process relay, when there is one

    async def conn(self, op: int = 0) -> Conn:
        ws = await connect(
            self.url,
            additional_headers={"Authorization": f"Bearer {self.tokens[self.ops[op]]}"},
            max_size=FRAME_LIMIT,
            open_timeout=10,
        )
        return Conn(ws, self.ops[op])

    async def joined(self, room: str, op: int = 0, **hello: Any) -> tuple[Conn, dict[str, Any]]:
        c = await self.conn(op)
        welcome = await c.hello(room, **hello)
        return c, welcome


class Conn:
    """One raw connection: send JSON, read frames, wait for one that matches."""

    def __init__(self, ws: ClientConnection, operator: str) -> None:
        self.ws = ws
        self.operator = operator
        self.seen: list[dict[str, Any]] = []  # every frame received
        self.backlog: list[dict[str, Any]] = []  # received, not yet taken by until()
        self._ids = f"{secrets.token_hex(4)}-"
        self._n = 0

    def new_id(self) -> str:
        self._n += 1
        return f"{self._ids}{self._n}"

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(text)
        frame["_bytes"] = len(text.encode()) if isinstance(text, str) else len(text)
        self.seen.append(frame)
        return frame

    async def until(
        self, pred: Callable[[dict[str, Any]], Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first frame (received earlier and not taken yet, or next) that matches."""
        for i, frame in enumerate(self.backlog):
            if pred(frame):
                return self.backlog.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if pred(frame):
                    return frame
                self.backlog.append(frame)

    async def hello(self, room: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "hello", "v": 1, "room": room, **fields})
        return await self.until(lambda f: f["type"] == "welcome")

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with a fresh id; return the ack or error that answers it."""
        frame = {"v": 1, "id": self.new_id(), **frame}
        await self.send(frame)
        return await self.until(
            lambda f: f["type"] in ("ack", "error") and f.get("id") == frame["id"]
        )

    async def chat(self, text: str, **extra: Any) -> dict[str, Any]:
        return await self.request({"type": "chat", "text": text, **extra})

    async def lock(self, op: str, **fields: Any) -> dict[str, Any]:
        return await self.request({"type": "lock", "op": op, **fields})

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    if EXTERNAL:
        yield Target(EXTERNAL, _external_tokens())
        return
    from tests.relay.conftest import TOKENS, start_relay

    r = await start_relay(tmp_path)
    yield Target(r.url, dict(TOKENS), r.relay)
    await r.relay.shutdown()


def room() -> str:
    return f"conf-{secrets.token_hex(6)}"


def plan_event(deploy_id: str, hosts: int = 2, label: str = "") -> dict[str, Any]:
    nodes = [{"key": "release", "label": "release", "kind": "stage"}]
    nodes += [
        {"key": f"release/h{i}", "label": label or f"h{i}", "kind": "host"} for i in range(hosts)
    ]
    return {"type": "plan", "v": 1, "deploy_id": deploy_id, "nodes": nodes, "meta": {}}


# -- Transport and authentication --------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer not-a-token-of-anyone", "Basic abc"])
async def test_auth_missing_or_unknown_token_is_401_before_the_upgrade(
    target: Target, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(target.url, additional_headers=headers, open_timeout=10):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


async def test_sender_is_the_tokens_operator_whatever_the_frame_says(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    await a.chat("hi", sender="someone-else", offset=999, time=1.0)
    echo = await a.until(lambda f: f["type"] == "chat")
    assert echo["sender"] == target.ops[0] and echo["offset"] == 1 and echo["time"] > 1e9


# -- Joining ---------------------------------------------------------------------------


async def test_frames_before_hello_get_not_joined(target: Target) -> None:
    c = await target.conn()
    await c.send({"type": "chat", "id": "x1", "text": "too early"})
    err = await c.recv()
    assert err["type"] == "error" and err["code"] == "not_joined" and err["id"] == "x1"
    await c.send({"type": "hello", "room": "-starts-with-a-symbol"})
    err = await c.recv()
    assert err["type"] == "error" and err["code"] == "bad_field"
    assert (await c.hello(room()))["type"] == "welcome"  # still open
    await c.send({"type": "hello", "room": room()})
    assert (await c.until(lambda f: f["type"] == "error"))["code"] == "already_joined"


async def test_welcome_of_an_empty_room(target: Target) -> None:
    c, w = await target.joined(room())
    assert (w["v"], w["head"], w["first"]) == (1, 0, 1)
    assert w["recovered"] is None and w["replay_from"] is None and w["truncated"] is False
    assert w["you"]["operator"] == target.ops[0] and re.match(r"^[0-9a-f]{12}$", w["you"]["client"])
    assert ID_RE.match(w["you"]["session"]), "an omitted session is generated and returned"
    me = [p for p in w["presence"] if p["operator"] == target.ops[0]]
    assert me and me[0]["connections"] == 1
    # roles are optional in presence (relays before roles); when given, one of three
    assert me[0].get("role", "operator") in ("observer", "operator", "admin")
    assert w["lock"] is None and w["limits"]["max_message_bytes"] == 65536
    snap = w["snapshot"]
    assert snap["head"] == 0 and snap["deploy"] is None and snap["chat"] == []
    # a session given is returned as given, and the handle follows the session
    _, w2 = await target.joined(room(), session="my-session.1")
    _, w3 = await target.joined(room(), session="my-session.1")
    assert w2["you"]["session"] == "my-session.1" and w2["you"]["client"] == w3["you"]["client"]
    _, w4 = await target.joined(room(), snapshot=False)
    assert "snapshot" not in w4


@pytest.mark.timeout(30)
async def test_no_hello_within_10s_closes_4002(target: Target) -> None:
    c = await target.conn()
    with pytest.raises(ConnectionClosed) as closed:
        await c.until(lambda f: False, timeout=25)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002


# -- Stored messages, ack, exactly once -----------------------------------------------------


async def test_chat_is_stored_acked_and_sent_to_everyone_in_offset_order(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    b, _ = await target.joined(r, 1, snapshot=False)
    acks = [await a.chat(f"m{i}") for i in range(3)]
    assert [(x["type"], x["offset"], x["duplicate"]) for x in acks] == [
        ("ack", 1, False),
        ("ack", 2, False),
        ("ack", 3, False),
    ]
    got = [await b.until(lambda f: f["type"] == "chat") for _ in range(3)]
    assert [(f["offset"], f["text"], f["sender"], f["room"]) for f in got] == [
        (i + 1, f"m{i}", target.ops[0], r) for i in range(3)
    ]
    assert all(
        f["id"] == x["id"] and isinstance(f["time"], float) for f, x in zip(got, acks, strict=True)
    )
    own = [f for f in a.seen if f["type"] == "chat"]
    assert [f["offset"] for f in own] == [1, 2, 3]  # the sender gets its own, too


async def test_resent_id_is_acked_as_duplicate_and_not_sent_again(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    b, _ = await target.joined(r, 1, snapshot=False)
    frame = {"type": "chat", "v": 1, "id": "same-1", "text": "once"}
    await a.send(frame)
    first = await a.until(lambda f: f["type"] == "ack")
    await a.send(frame)
    again = await a.until(lambda f: f["type"] == "ack")
    assert (first["offset"], first["duplicate"], again["offset"], again["duplicate"]) == (
        1,
        False,
        1,
        True,
    )
    await a.chat("next")
    chats = [await b.until(lambda f: f["type"] == "chat") for _ in range(2)]
    assert [(f["offset"], f["text"]) for f in chats] == [(1, "once"), (2, "next")]


async def test_ids_are_unique_per_operator_across_sessions_and_types(target: Target) -> None:
    """Documented exception: dedupe is per (room, operator, id), not per session."""
    r = room()
    a1, _ = await target.joined(r, 0, snapshot=False, session="one")
    a2, _ = await target.joined(r, 0, snapshot=False, session="two")
    await a1.send({"type": "chat", "id": "shared-1", "text": "from session one"})
    assert (await a1.until(lambda f: f["type"] == "ack"))["duplicate"] is False
    await a2.send({"type": "chat", "id": "shared-1", "text": "from session two"})
    ack = await a2.until(lambda f: f["type"] == "ack")
    assert ack["duplicate"] is True and ack["offset"] == 1
    # another operator's id space is separate
    b, _ = await target.joined(r, 1, snapshot=False)
    await b.send({"type": "chat", "id": "shared-1", "text": "bob"})
    assert (await b.until(lambda f: f["type"] == "ack"))["duplicate"] is False


async def test_chat_length_counts_code_points(target: Target) -> None:
    a, _ = await target.joined(room(), snapshot=False)
    assert (await a.chat("€" * 8000))["type"] == "ack"  # 24,000 bytes, 8,000 code points
    err = await a.chat("a" * 8001)
    assert err["type"] == "error" and err["code"] == "bad_field"
    err = await a.chat("   ")
    assert err["type"] == "error" and err["code"] == "bad_field"


# -- Errors and limits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "not_object"),
        ('{"type": "chat", "v": 2, "id": "e1", "text": "x"}', "bad_version"),
        ('{"type": "shout", "id": "e1"}', "unknown_type"),
        ('{"type": "chat", "id": "e1", "text": 5}', "bad_field"),
        ('{"type": "chat", "id": "has space", "text": "x"}', "bad_field"),
        ('{"type": "lock", "id": "e1", "op": "acquire", "ttl": 0.5}', "bad_field"),
        ('{"type": "event", "id": "e1", "events": [{"type": "status"}]}', "bad_event"),
    ],
)
async def test_bad_frames_get_a_named_error_and_the_connection_stays(
    target: Target, text: str, code: str
) -> None:
    a, _ = await target.joined(room(), snapshot=False)
    await a.send(text)
    err = await a.until(lambda f: f["type"] == "error")
    assert err["code"] == code and err["message"] and err["v"] == 1
    if '"id": "e1"' in text and code != "bad_field":
        assert err["id"] == "e1"
    assert (await a.chat("still here"))["type"] == "ack"


async def test_frame_size_limits(target: Target) -> None:
    a, _ = await target.joined(room(), snapshot=False)
    big = json.dumps({"type": "chat", "id": "big-1", "text": "x" * 70_000})
    await a.send(big)
    err = await a.until(lambda f: f["type"] == "error")
    assert err["code"] == "too_large" and err.get("id") == "big-1"
    assert (await a.chat("still here"))["type"] == "ack"
    await a.send("x" * (FRAME_LIMIT + 10))
    with pytest.raises(ConnectionClosed) as closed:
        await a.until(lambda f: False)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_more_than_20_invalid_frames_in_10s_close_4008(target: Target) -> None:
    a, _ = await target.joined(room(), snapshot=False)
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(40):
            await a.send("{bad")
        await a.until(lambda f: False)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008


# -- Events: only the lease holder ----------------------------------------------------------


async def test_only_the_connection_holding_the_lease_publishes_events(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False, session="deployer")
    b, _ = await target.joined(r, 1, snapshot=False)
    err = await a.request({"type": "event", "events": [plan_event("d1")]})
    assert err["type"] == "error" and err["code"] == "not_lock_holder"  # nobody holds it
    assert (await a.lock("acquire", reason="deploy", ttl=30))["granted"] is True
    err = await b.request({"type": "event", "events": [plan_event("forged")]})
    assert err["type"] == "error" and err["code"] == "not_lock_holder"
    ack = await a.request({"type": "event", "events": [plan_event("d1")]})
    assert ack["type"] == "ack" and ack["offset"] == 2  # 1 is the stored "acquired"
    c, w = await target.joined(r, 2)
    assert w["snapshot"]["deploy"]["deploy_id"] == "d1"
    assert w["head"] == 2  # nothing of the refused events was stored


async def test_a_plan_too_big_for_one_frame_comes_in_parts(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    await a.lock("acquire", reason="big deploy", ttl=60)
    plan = plan_event("big", hosts=6000, label="l" * 200)  # ~1.4 MB: over the welcome limit
    assert (await a.request({"type": "event", "events": [plan]}))["type"] == "ack"
    b, w = await target.joined(r, 1)
    deploy = w["snapshot"]["deploy"]
    nodes = list(deploy["plan"]["nodes"])
    assert deploy["parts"] >= 1
    for i in range(1, deploy["parts"] + 1):
        part = await b.recv()
        assert (part["type"], part["part"], part["parts"]) == ("snapshot_part", i, deploy["parts"])
        nodes += part["nodes"]
    assert [n["key"] for n in nodes] == [n["key"] for n in plan["nodes"]]
    assert all(f["_bytes"] <= WELCOME_LIMIT for f in b.seen)


async def test_long_log_lines_are_cut_in_the_snapshot_not_in_the_log(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    await a.lock("acquire", reason="deploy", ttl=60)
    await a.request({"type": "event", "events": [plan_event("d1")]})
    line = {"type": "log", "v": 1, "deploy_id": "d1", "key": "release/h0", "text": "z" * 1_000_000}
    for _ in range(3):
        assert (await a.request({"type": "event", "events": [line]}))["type"] == "ack"
    b, w = await target.joined(r, 1, since=0)
    assert b.seen[0]["_bytes"] <= WELCOME_LIMIT
    logs = w["snapshot"]["deploy"]["logs"]
    assert len(logs) == 3 and all(x["cut"] == 1_000_000 - 2000 for x in logs)
    replayed = [await b.until(lambda f: f["type"] == "event") for _ in range(4)]
    assert len(replayed[-1]["events"][0]["text"]) == 1_000_000  # the log keeps every byte


# -- Lock lease ------------------------------------------------------------------------------


async def test_lock_ack_shapes(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    b, _ = await target.joined(r, 1, snapshot=False)
    got = await a.lock("acquire", reason="deploy web", ttl=30)
    assert got["granted"] is True and isinstance(got["offset"], int)
    lease = got["lease"]
    assert lease["operator"] == target.ops[0] and lease["reason"] == "deploy web"
    assert lease["ttl"] == 30 and lease["stale"] is False and lease["expires"] > lease["since"]
    renew = await a.lock("acquire", reason="deploy web", ttl=30)
    assert renew["granted"] is True and "offset" not in renew  # a renewal stores nothing
    beat = await a.lock("heartbeat")
    assert beat["granted"] is True and "offset" not in beat
    held = await b.lock("acquire", reason="mine", ttl=30)
    assert (held["granted"], held["queued"], held["holder"]["operator"]) == (
        False,
        False,
        target.ops[0],
    )
    lost = await b.lock("heartbeat")
    assert lost["granted"] is False and lost["lost"] is True
    assert (await b.lock("release"))["released"] is False
    rel = await a.lock("release")
    assert rel["released"] is True and isinstance(rel["offset"], int)
    stored = [await b.until(lambda f: f["type"] == "lock") for _ in range(2)]
    assert [(f["op"], f["sender"]) for f in stored] == [
        ("acquired", target.ops[0]),
        ("released", target.ops[0]),
    ]
    assert stored[1]["holder"] is None and "id" not in stored[0]


async def test_a_queued_waiter_gets_a_second_ack_when_granted(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    b, _ = await target.joined(r, 1, snapshot=False)
    gone, _ = await target.joined(r, 2, snapshot=False)
    await a.lock("acquire", reason="first", ttl=30)
    queued = await gone.lock("acquire", reason="leaves", ttl=30, wait=True)
    assert queued["granted"] is False and queued["queued"] is True
    await gone.close()  # a waiter that disconnects loses its place
    queued = await b.lock("acquire", reason="second", ttl=30, wait=True)
    assert queued["queued"] is True
    await a.lock("release")
    granted = await b.until(lambda f: f["type"] == "ack" and f["id"] == queued["id"])
    assert granted["granted"] is True and granted["lease"]["operator"] == target.ops[1]
    record = [f for f in b.seen if f["type"] == "lock" and f["offset"] == granted["offset"]]
    assert record and record[0]["op"] == "acquired"


async def test_stale_lease_and_a_heartbeat_that_revives_it(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    await a.lock("acquire", reason="slow", ttl=1)
    stale = await a.until(lambda f: f["type"] == "lock" and f["op"] == "stale", timeout=15)
    assert stale["sender"] == "relay" and stale["holder"]["stale"] is True
    beat = await a.lock("heartbeat")
    assert beat["granted"] is True and isinstance(beat["offset"], int)
    resumed = await a.until(lambda f: f["type"] == "lock" and f["offset"] == beat["offset"])
    assert resumed["op"] == "resumed"


async def test_control_goes_to_the_holder_and_is_written_by_the_relay(target: Target) -> None:
    r = room()
    a, w = await target.joined(r, 0, snapshot=False)
    b, _ = await target.joined(r, 1, snapshot=False)
    err = await b.request({"type": "control", "action": "abort"})
    assert err["type"] == "error" and err["code"] == "no_lock_holder"
    await a.lock("acquire", reason="deploy", ttl=30)
    ack = await b.request({"type": "control", "action": "approve", "key": "g1", "to": "nobody"})
    assert ack["type"] == "ack"
    ctl = await a.until(lambda f: f["type"] == "control")
    assert (ctl["sender"], ctl["action"], ctl["key"], ctl["to"], ctl["to_client"]) == (
        target.ops[1],
        "approve",
        "g1",
        target.ops[0],
        w["you"]["client"],
    )


# -- Resume and since ------------------------------------------------------------------------


async def test_resume_replays_exactly_the_gap(target: Target) -> None:
    r = room()
    a, w = await target.joined(r, 0, snapshot=False)
    for i in range(5):
        await a.chat(f"m{i}")
    b, w2 = await target.joined(r, 1, resume={"epoch": w["epoch"], "offset": 2})
    assert (w2["recovered"], w2["replay_from"], w2["head"]) == (True, 2, 5)
    assert "snapshot" not in w2
    got = [await b.until(lambda f: f["type"] == "chat") for _ in range(3)]
    assert [f["offset"] for f in got] == [3, 4, 5]
    await a.chat("live")
    assert (await b.until(lambda f: f["type"] == "chat"))["offset"] == 6


@pytest.mark.parametrize("case", ["wrong_epoch", "above_head"])
async def test_failed_resume_says_so_and_never_leaves_a_silent_gap(
    target: Target, case: str
) -> None:
    r = room()
    a, w = await target.joined(r, 0, snapshot=False)
    for i in range(3):
        await a.chat(f"m{i}")
    resume = {"epoch": "0000000000000000", "offset": 1}
    if case == "above_head":
        resume = {"epoch": w["epoch"], "offset": 99}
    _, w2 = await target.joined(r, 1, resume=resume)
    assert w2["recovered"] is False and w2["replay_from"] is None
    assert w2["snapshot"]["head"] == w2["head"] == 3
    assert [c["text"] for c in w2["snapshot"]["chat"]] == ["m0", "m1", "m2"]
    b, w3 = await target.joined(r, 1, resume=resume, snapshot=False)
    assert w3["recovered"] is False and "snapshot" not in w3  # the client asked for none
    await a.chat("live")
    assert (await b.until(lambda f: f["type"] == "chat"))["offset"] == 4  # live from head


async def test_since_replays_history_and_the_snapshot_is_taken_at_head(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    for i in range(4):
        await a.chat(f"m{i}")
    b, w = await target.joined(r, 1, since=1)
    assert (w["recovered"], w["replay_from"], w["truncated"], w["head"]) == (None, 1, False, 4)
    assert w["snapshot"]["head"] == 4  # by default the snapshot comes too, at head
    assert [c["offset"] for c in w["snapshot"]["chat"]] == [1, 2, 3, 4]
    got = [await b.until(lambda f: f["type"] == "chat") for _ in range(3)]
    assert [f["offset"] for f in got] == [2, 3, 4]  # already in the snapshot: not re-applied
    _, w2 = await target.joined(r, 1, since=50, snapshot=False)
    assert w2["replay_from"] == 4 and w2["truncated"] is False


@pytest.mark.skipif(bool(EXTERNAL), reason="needs the relay's retention (local)")
async def test_since_before_retention_is_truncated_and_snapshot_chat_follows_retention(
    target: Target,
) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    for i in range(5):
        await a.chat(f"m{i}")
    target.relay.store.max_count = 2  # keep the newest two
    assert await target.relay.retain() == 3
    _, w = await target.joined(r, 1, since=0)
    assert (w["first"], w["head"], w["replay_from"], w["truncated"]) == (4, 5, 3, True)
    assert [c["offset"] for c in w["snapshot"]["chat"]] == [4, 5]


# -- Presence -----------------------------------------------------------------------------------


async def test_presence_join_and_leave_are_not_stored(target: Target) -> None:
    r = room()
    a, _ = await target.joined(r, 0, snapshot=False)
    b, _ = await target.joined(r, 1, snapshot=False)
    own = await a.until(lambda f: f["type"] == "presence")
    assert (own["op"], own["operator"]) == ("join", target.ops[0])  # the joiner's own, too
    join = await a.until(lambda f: f["type"] == "presence" and f["op"] == "join")
    assert join["operator"] == target.ops[1] and join["offset"] is None
    assert {w["operator"] for w in join["who"]} == {target.ops[0], target.ops[1]}
    await b.close()
    leave = await a.until(lambda f: f["type"] == "presence" and f["op"] == "leave")
    assert leave["operator"] == target.ops[1]
    assert (await a.chat("after"))["offset"] == 1  # presence took no offset

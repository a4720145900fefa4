"""Limits and hostile input: errors that name the problem without dropping the
sender or anyone else; abuse closed; a stuck client closed without slowing others."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

from relay.protocol import CLOSE_ABUSE, MAX_MESSAGE_BYTES
from relay.server import Limits
from tests.relay.conftest import TOKENS, InProcessRelay, start_relay
from tests.relay.test_protocol import frame_like, json_values

AUTH = {"Authorization": f"Bearer {TOKENS['alice']}"}


def _hello(ws: Any, room: str = "web") -> dict[str, Any]:
    ws.send(json.dumps({"type": "hello", "room": room, "snapshot": False}))
    return json.loads(ws.recv(timeout=5))


# -- hypothesis against a live relay --------------------------------------------------


class ThreadRelay:
    """A relay on its own event loop thread, for synchronous websockets clients."""

    def __init__(self, tmp: Path, limits: Limits) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.r: InProcessRelay = asyncio.run_coroutine_threadsafe(
            start_relay(tmp, limits), self.loop
        ).result(10)
        self.url = self.r.url

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.r.relay.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    relay = ThreadRelay(
        tmp_path_factory.mktemp("live"), Limits(abuse_errors=10**9, rate=10**6, burst=10**6)
    )
    with contextlib.ExitStack() as stack:
        conns = {}
        for role, op in (("fuzz", "alice"), ("watcher", "bob"), ("talker", "carol")):
            ws = stack.enter_context(
                sync_connect(
                    relay.url,
                    additional_headers={"Authorization": f"Bearer {TOKENS[op]}"},
                    max_queue=None,  # frames nobody reads must not block the close
                )
            )
            assert _hello(ws)["type"] == "welcome"
            conns[role] = ws
        yield {**conns, "n": 0}
    relay.close()


def _next_reply(ws: SyncConnection) -> dict[str, Any]:
    while True:
        frame = json.loads(ws.recv(timeout=5))
        if frame["type"] in ("ack", "error"):
            return frame


def _next_chat(ws: SyncConnection) -> dict[str, Any]:
    while True:
        frame = json.loads(ws.recv(timeout=5))
        if frame["type"] == "chat" and frame["sender"] == "carol":
            return frame


@pytest.mark.timeout(60)
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.text(max_size=100),
        json_values.map(json.dumps),
        frame_like.map(json.dumps),
        st.binary(max_size=50),
    )
)
def test_malformed_frames_get_errors_while_others_keep_receiving(
    live: dict[str, Any], data: str | bytes
) -> None:
    fuzz: SyncConnection = live["fuzz"]
    fuzz.send(data)
    reply = _next_reply(fuzz)
    if reply["type"] == "error":
        assert reply["code"] in {
            "bad_json",
            "not_object",
            "bad_version",
            "unknown_type",
            "bad_field",
            "bad_event",
            "already_joined",
            "not_lock_holder",
            "no_lock_holder",
            "too_large",
        }
        assert reply["message"]
    # the fuzzing connection is still open, and the room still works for others
    live["n"] += 1
    live["talker"].send(
        json.dumps({"type": "chat", "id": f"t{live['n']}", "text": f"still here {live['n']}"})
    )
    assert _next_chat(live["watcher"])["text"] == f"still here {live['n']}"


# -- size, abuse, rate -------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_oversize_frame_error_then_hard_limit_closes_only_that_client(
    relay: InProcessRelay,
) -> None:
    watcher, col = await relay.client("bob")
    async with connect(relay.url, additional_headers=AUTH, max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello", "room": "web", "snapshot": False}))
        await ws.recv()
        await ws.send(
            json.dumps({"type": "chat", "id": "big", "text": "x" * (MAX_MESSAGE_BYTES + 1)})
        )
        err = json.loads(await ws.recv())
        while err["type"] != "error":
            err = json.loads(await ws.recv())
        assert err["code"] == "too_large" and err["id"] == "big" and "65536" in err["message"]
        await ws.send(json.dumps({"type": "chat", "id": "small", "text": "fits"}))
        await col.wait(lambda c: c.chats() == ["fits"])
        await ws.send("x" * (3 * 1024 * 1024))  # beyond the hard limit: websockets closes (1009)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    await watcher.chat("others unaffected")
    await col.wait(lambda c: c.chats() == ["fits", "others unaffected"])


@pytest.mark.timeout(30)
async def test_persistent_abuse_is_closed(relay: InProcessRelay) -> None:
    async with connect(relay.url, additional_headers=AUTH) as ws:
        await ws.send(json.dumps({"type": "hello", "room": "web"}))
        await ws.recv()
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(100):
                await ws.send("garbage")
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == CLOSE_ABUSE


@pytest.mark.timeout(30)
async def test_no_hello_is_an_error_then_timeout(tmp_path: Path) -> None:
    r = await start_relay(tmp_path, Limits(hello_timeout=0.5))
    try:
        async with connect(r.url, additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"type": "chat", "id": "x", "text": "hi"}))
            assert json.loads(await ws.recv())["code"] == "not_joined"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4002
    finally:
        await r.relay.shutdown()


@pytest.mark.timeout(30)
async def test_rate_limit_slows_only_the_flooder(tmp_path: Path) -> None:
    r = await start_relay(tmp_path, Limits(rate=50, burst=5))
    try:
        flooder, fcol = await r.client("alice")
        other, ocol = await r.client("bob")
        t0 = time.monotonic()
        flood = [flooder.chat(f"f{i}") for i in range(40)]
        # while the flooder is throttled, bob's message is not queued behind the flood
        await other.chat("quick")
        await asyncio.gather(*flood)
        took = time.monotonic() - t0
        assert took >= (40 - 5) / 50 * 0.8  # ~0.7 s: read at 50 frames/s after the burst
        assert fcol  # nothing was dropped:
        await ocol.wait(lambda c: len(c.chats()) == 41)
        assert ocol.chats().index("quick") < 40 - 5
    finally:
        for c in r.clients:
            await c.close(flush=0)
        await r.relay.shutdown()


# -- a client that stops reading ------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_stuck_client_is_closed_and_resumes_without_slowing_others(tmp_path: Path) -> None:
    r = await start_relay(tmp_path, Limits(max_buffer_bytes=256 * 1024, rate=10**5, burst=10**5))
    try:
        sender, _ = await r.client("alice")
        fast, fcol = await r.client("bob")
        stuck, scol = await r.client("carol")
        assert stuck._ws is not None
        stuck._ws.transport.pause_reading()  # stops reading: its socket fills up
        n, payload = 3000, "y" * 2000
        t0 = time.monotonic()
        for i in range(n):
            sender.chat(f"{i} {payload}")
            if i % 200 == 0:
                await asyncio.sleep(0)
        await fcol.wait(lambda c: len(c.of("chat")) == n, timeout=30)
        fast_time = time.monotonic() - t0
        room = r.relay.rooms["web"]
        # the stuck client was dropped from the room (closed with 4000)
        assert not any(p.handle == stuck.client for p in room.subs if p.live)
        stuck._ws.transport.resume_reading()
        await scol.wait(lambda c: len(c.of("chat")) == n, timeout=30)
        offsets = [f["offset"] for f in scol.of("chat")]
        assert offsets == list(range(1, n + 1))  # exactly once, in order, across the reconnect
        assert stuck.connects >= 2
        assert [f["offset"] for f in fcol.of("chat")] == list(range(1, n + 1))
        print(f"fast client got {n} x 2 KB in {fast_time:.2f}s while another was stuck")
        errors = [f["error"] for f in scol.of("status") if f["state"] == "reconnecting"]
        print("stuck client saw:", errors)
        assert errors  # it was disconnected (4000, or a reset if it read too late)
    finally:
        for c in r.clients:
            await c.close(flush=0)
        await r.relay.shutdown()

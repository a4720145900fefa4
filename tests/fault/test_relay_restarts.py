"""Relay restarts: 5 clients send 10,000 chat messages in total while the relay
process is SIGKILLed and restarted 3 times on the same database and port. Every
client must end with all 10,000 messages, each once, in the same order.

Run ``pytest -m fault tests/fault/test_relay_restarts.py -s`` to see the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.client import RelayClient
from tests.relay.conftest import RelayProcess

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

CLIENTS = 5
TOTAL = 10_000
PER_CLIENT = TOTAL // CLIENTS
KILLS = 3
WINDOW = 100  # unacknowledged messages a sender keeps in flight
ROOM = "restarts"
OPERATORS = {f"op{i}": f"restart-token-{i}-3b9d1f" for i in range(CLIENTS)}


class LoggedRelay(RelayProcess):
    """``RelayProcess`` with its own tokens and stderr kept in a file."""

    def __init__(self, tmp_path: Path, operators: dict[str, str]) -> None:
        super().__init__(tmp_path)
        self.tokens.write_text(
            "[operators]\n" + "".join(f'{k} = "{v}"\n' for k, v in operators.items())
        )
        self.log = tmp_path / "relay-stderr.log"


class ChatLog:
    """What one client received: chat frames in order, link states, welcomes.

    Waiting is event-driven and O(1) per frame (10,000 frames per client)."""

    def __init__(self) -> None:
        self.chats: list[tuple[int, str, str]] = []  # (offset, sender, text)
        self.welcomes: list[dict[str, Any]] = []
        self.states: list[str] = []
        self.drops = 0  # connected -> not connected
        #: (n, callback): call ``callback()`` when the n-th chat frame arrives
        self.trigger: tuple[int, Any] | None = None
        self._changed = asyncio.Event()

    def __call__(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "chat":
            self.chats.append((frame["offset"], frame["sender"], frame["text"]))
            if self.trigger is not None and len(self.chats) >= self.trigger[0]:
                self.trigger, (_, callback) = None, self.trigger
                callback()
        elif kind == "welcome":
            self.welcomes.append(frame)
        elif kind == "status":
            if frame["state"] != "connected" and self.states[-1:] == ["connected"]:
                self.drops += 1
            self.states.append(frame["state"])
        else:
            return
        self._changed.set()

    async def wait(self, pred: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self._changed.clear()
                await self._changed.wait()


def stored_chats(db_path: Path) -> set[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        rows = db.execute(
            "SELECT sender, json_extract(body, '$.text') FROM messages WHERE room = ? AND type = 'chat'",
            (ROOM,),
        ).fetchall()
    return set(rows)


def figures(log: ChatLog) -> tuple[int, int, int]:
    """(delivered, lost, duplicated) against the 10,000 messages sent."""
    expected = {(f"op{i}", f"c{i}-{k}") for i in range(CLIENTS) for k in range(PER_CLIENT)}
    got = [(s, t) for _, s, t in log.chats]
    unique = set(got)
    delivered = len(unique & expected)
    return delivered, TOTAL - delivered, len(got) - len(unique)


async def test_sigkill_restart_three_times_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    relay = LoggedRelay(tmp_path, OPERATORS)
    try:
        url = await asyncio.to_thread(relay.start)
        logs = [ChatLog() for _ in range(CLIENTS)]
        clients = [
            RelayClient(url, ROOM, OPERATORS[f"op{i}"], on_message=logs[i], backoff=(0.05, 0.5))
            for i in range(CLIENTS)
        ]
        await asyncio.gather(*(c.start(timeout=10) for c in clients))
        acks: list[list[asyncio.Future[dict[str, Any]]]] = [[] for _ in range(CLIENTS)]

        async def send_all(i: int) -> None:
            client, mine = clients[i], acks[i]
            for k in range(PER_CLIENT):
                if k >= WINDOW and not mine[k - WINDOW].done():
                    await asyncio.wait([mine[k - WINDOW]])
                mine.append(client.chat(f"c{i}-{k}"))

        senders = [asyncio.create_task(send_all(i)) for i in range(CLIENTS)]
        in_flight_at_kill: list[tuple[int, int]] = []
        watcher = logs[0]
        for n in range(KILLS):
            # Mid-stream, after a quarter, a half and three quarters were delivered to
            # the first client: the kill happens inside its frame callback, so whatever
            # the relay did since (stored, acknowledged) is still unread by the clients.
            killed = asyncio.Event()
            unacked: set[tuple[str, str]] = set()

            def kill_now(unacked: set[tuple[str, str]] = unacked, killed=killed) -> None:
                assert relay.proc is not None
                relay.proc.send_signal(signal.SIGKILL)
                unacked.update(
                    (f"op{i}", f"c{i}-{k}")
                    for i, mine in enumerate(acks)
                    for k, f in enumerate(mine)
                    if not f.done()
                )
                killed.set()

            watcher.trigger = ((n + 1) * TOTAL // (KILLS + 1), kill_now)
            await asyncio.wait_for(killed.wait(), 60)
            await asyncio.to_thread(relay.proc.wait, 10)
            assert not all(s.done() for s in senders), "the kill came after the sending ended"
            # of the unacknowledged messages, how many the dead relay had already
            # committed (they must not be stored twice; the rest must be re-sent)
            stored = await asyncio.to_thread(stored_chats, relay.db)
            in_flight_at_kill.append((len(unacked), len(unacked & stored)))
            # every client noticed the drop before the relay comes back
            for log in logs:
                await log.wait(lambda lg=log, k=n: lg.drops == k + 1, timeout=15)
            await asyncio.to_thread(relay.start)  # same db, same port

        await asyncio.wait_for(asyncio.gather(*senders), 90)
        await asyncio.wait_for(asyncio.gather(*(f for mine in acks for f in mine)), 60)
        try:
            for log in logs:
                await log.wait(lambda lg=log: len(lg.chats) >= TOTAL, timeout=30)
        except TimeoutError:
            pass  # reported with the figures below

        results = [figures(log) for log in logs]
        for i, (delivered, lost, duplicated) in enumerate(results):
            print(
                f"client op{i}: delivered {delivered}/{TOTAL}, lost {lost}, "
                f"duplicated {duplicated}, connections {clients[i].connects}"
            )
        print(
            f"relay: {relay.starts - 1} SIGKILLs + restarts on port {relay.port}; "
            "messages unacknowledged at each kill (of them already committed): "
            + ", ".join(f"{n} ({c})" for n, c in in_flight_at_kill)
        )
        assert all(r == (TOTAL, 0, 0) for r in results), results

        # the same order everywhere, offsets strictly increasing, each sender's
        # messages in the order it sent them
        reference = logs[0].chats
        for log in logs[1:]:
            assert log.chats == reference
        offsets = [o for o, _, _ in reference]
        assert offsets == sorted(set(offsets))
        for i in range(CLIENTS):
            mine = [t for _, s, t in reference if s == f"op{i}"]
            assert mine == [f"c{i}-{k}" for k in range(PER_CLIENT)]

        # every client lived through every restart and resumed its stream
        for client, log in zip(clients, logs, strict=True):
            assert client.connects == KILLS + 1
            assert [w["recovered"] for w in log.welcomes] == [None] + [True] * KILLS
            assert len({w["epoch"] for w in log.welcomes}) == 1

        # the stored log holds each message once
        with contextlib.closing(sqlite3.connect(relay.db)) as db:
            count = db.execute(
                "SELECT COUNT(*) FROM messages WHERE room = ? AND type = 'chat'", (ROOM,)
            ).fetchone()[0]
        assert count == TOTAL
        assert len(stored_chats(relay.db)) == TOTAL

        for c in clients:
            await c.close(flush=0)
        assert await asyncio.to_thread(relay.terminate) == 0
        assert "Traceback" not in relay.log.read_text()
    finally:
        relay.stop()

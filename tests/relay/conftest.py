"""Fixtures for the relay tests: a relay in this process or in a subprocess, and
clients that record what they receive and let a test wait for a condition on it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay.client import RelayClient
from relay.server import Limits, Relay
from relay.store import SQLiteStore
from relay.tokens import TokenTable

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"alice": "token-for-alice", "bob": "token-for-bob", "carol": "token-for-carol"}


def write_tokens(path: Path) -> Path:
    path.write_text("[operators]\n" + "".join(f'{k} = "{v}"\n' for k, v in TOKENS.items()))
    return path


class Collector:
    """Records every frame a client receives; tests await conditions on them."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def chats(self) -> list[str]:
        return [f["text"] for f in self.of("chat")]

    def stored(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if isinstance(f.get("offset"), int)]

    async def wait(self, pred: Callable[[Collector], Any], timeout: float = 10.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                result = pred(self)
                if result:
                    return result
                self._changed.clear()
                await self._changed.wait()


@dataclass
class InProcessRelay:
    relay: Relay
    url: str
    clients: list[RelayClient] = field(default_factory=list)

    async def client(
        self, operator: str = "alice", room: str = "web", **kw: Any
    ) -> tuple[RelayClient, Collector]:
        col = Collector()
        client = RelayClient(self.url, room, TOKENS[operator], on_message=col, **kw)
        self.clients.append(client)
        await client.start(timeout=10)
        return client, col


async def start_relay(
    tmp_path: Path, limits: Limits | None = None, db: str = "relay.db", **store_kw: Any
) -> InProcessRelay:
    store = SQLiteStore(tmp_path / db, **store_kw)
    relay = Relay(store, TokenTable(TOKENS), limits or Limits())
    await relay.start("127.0.0.1", 0)
    return InProcessRelay(relay, f"ws://127.0.0.1:{relay.port}")


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[InProcessRelay]:
    r = await start_relay(tmp_path)
    yield r
    for c in r.clients:
        await c.close(flush=0)
    await r.relay.shutdown()


class RelayProcess:
    """The relay as a real process (``python -m relay``) on a fixed db.

    Subclasses set ``log`` (stderr kept in a file), ``log_level``, ``extra_args``
    (TLS, ...), ``scheme`` and ``url_host``; a restart reuses the port."""

    log: Path | None = None
    log_level = "warning"
    scheme = "ws"
    url_host = "127.0.0.1"

    def __init__(self, tmp_path: Path) -> None:
        self.db: Path | None = tmp_path / "relay.db"
        self.tokens = write_tokens(tmp_path / "tokens.toml")
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.extra_args: list[str] = []
        self.starts = 0

    def start(self) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        args = [
            sys.executable, "-m", "relay", "--host", "127.0.0.1",
            "--port", str(self.port), *(["--db", str(self.db)] if self.db else []),
            "--tokens", str(self.tokens),
            "--log-level", self.log_level, *self.extra_args,
        ]  # fmt: skip
        err = self.log.open("a") if self.log is not None else None
        try:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True
            )
        finally:
            if err is not None:
                err.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(rf"{self.scheme}://127\.0\.0\.1:(\d+)", line)
        logged = self.log.read_text() if self.log is not None else ""
        assert m, f"relay did not start: {line!r}\n{logged}"
        assert self.port in (0, int(m.group(1))), "a restarted relay moved to another port"
        self.port = int(m.group(1))
        self.url = f"{self.scheme}://{self.url_host}:{self.port}"
        self.starts += 1
        return self.url

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def relay_process(tmp_path: Path) -> Any:
    proc = RelayProcess(tmp_path)
    yield proc
    proc.stop()

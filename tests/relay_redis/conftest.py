"""Fixtures for the multi-node relay: a real ``redis-server`` (AOF on, fsync always)
on a free loopback port in a temp dir, and relay nodes as subprocesses
(``python -m relay --redis ...``) that a test can SIGKILL and restart.

Without ``redis-server`` the tests are skipped, except in CI (``CI=true``), where its
absence fails them: ``.ci/run`` installs it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.relay.conftest import ROOT, TOKENS, Collector, RelayProcess, write_tokens

__all__ = ["ROOT", "TOKENS", "Collector", "RedisServer", "RelayNode", "Nodes"]

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process; ``kill()`` + ``start()`` restarts it on the same
    port and directory (so the AOF is replayed)."""

    def __init__(self, path: Path) -> None:
        self.dir = path
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:  # ready when it answers PING (after loading the AOF)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start:\n{log}")
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (CI must install it: .ci/run)")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis extra is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


class RelayNode(RelayProcess):
    """A relay node process on the shared Redis; restarts on the same port."""

    def __init__(self, redis_url: str, tokens: Path, *extra: str) -> None:
        self.db = None
        self.tokens = tokens
        self.port = 0
        self.proc = None
        self.url = ""
        self.starts = 0
        self.redis_url = redis_url
        self.extra_args = ["--redis", redis_url, *extra]


class Nodes:
    """Starts relay nodes on one Redis and stops them all at the end of a test."""

    def __init__(self, redis: RedisServer, tmp_path: Path) -> None:
        self.redis = redis
        self.tokens = write_tokens(tmp_path / "tokens.toml")
        self.nodes: list[RelayNode] = []

    def start(self, n: int = 1, *extra: str) -> list[RelayNode]:
        new = [RelayNode(self.redis.url, self.tokens, *extra) for _ in range(n)]
        procs = []
        for node in new:  # start them in parallel, then read their first lines
            procs.append(node)
        for node in procs:
            node.start()
        self.nodes.extend(new)
        return new

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture
def nodes(redis_server: RedisServer, tmp_path: Path) -> Iterator[Any]:
    n = Nodes(redis_server, tmp_path)
    yield n
    n.stop()

"""A real HAProxy in front of real sshd hosts running a small real HTTP app, for the
zero-downtime tests and ``bench/zero_downtime.py``.

- :func:`make_web_repo`: an app repo (``app.py``: a threaded HTTP server answering its
  VERSION, ``/slow?ms=N`` after a pause; ``bin/restart`` stops the old process, waits
  until it is gone, starts the new one; ``bin/health`` asks the app for its version; ``bin/migrate``
  records the release it ran in, in ``$HOME/MIGRATED``, or fails if ``$HOME/FAIL_MIGRATE``).
- :func:`install_app_env`: the address and port the app of each host listens on.
- :class:`HAProxy`: Debian's haproxy started on loopback (``mode http``, ``stats socket
  ... level admin``), one server per host, stopped with :meth:`HAProxy.stop`.
- :class:`StatWatch`: reads ``show stat`` every few ms, keeps each server's changes.
- :class:`Load`: requests at a fixed arrival rate through HAProxy, counting every
  non-2xx answer and connection error.
"""

from __future__ import annotations

import http.client
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from engine.balancer import SHOW_STAT, parse_stat

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

_APP = '''"""The sample web app: answers its VERSION (after ms milliseconds on /slow?ms=N)."""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
VERSION = open(os.path.join(HERE, "VERSION")).read().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.partition("ms=")[2] or 200) / 1000)
        body = (VERSION + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
'''

_BUILD = """#!/bin/sh
set -e
rm -rf dist
mkdir -p dist/bin
cp VERSION app.py dist/
cp bin/* dist/bin/
chmod +x dist/bin/*
"""

_RESTART = """#!/bin/sh
# A real restart: stop the running app, wait until it is gone, start this release's.
. "$HOME/app.env"
if [ -f "$HOME/app.pid" ]; then
  old=$(cat "$HOME/app.pid")
  kill "$old" 2>/dev/null || true
  i=0
  while kill -0 "$old" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.02; i=$((i+1)); done
fi
nohup python3 "$PWD/app.py" "$APP_ADDR" "$APP_PORT" >>"$HOME/app.log" 2>&1 </dev/null &
echo $! > "$HOME/app.pid"
echo "started $(cat VERSION) as pid $!"
"""

_HEALTH = """#!/bin/sh
# Healthy when the app answers this release's VERSION (and $HOME/FAIL_HEALTH does not
# name it).
. "$HOME/app.env"
v=$(cat VERSION)
if [ -f "$HOME/FAIL_HEALTH" ] && [ "$(cat "$HOME/FAIL_HEALTH")" = "$v" ]; then
  echo "unhealthy: version $v is failing on this host" >&2
  exit 1
fi
got=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())' "http://$APP_ADDR:$APP_PORT/" 2>/dev/null)
[ "$got" = "$v" ] || { echo "app answers '$got', expected $v" >&2; exit 1; }
echo "healthy: $v"
"""


_MIGRATE = """#!/bin/sh
# The run-once stage: a "migration" that records the release it ran in.
if [ -f "$HOME/FAIL_MIGRATE" ]; then echo "migration failed: table is locked" >&2; exit 1; fi
cat VERSION >> "$HOME/MIGRATED"
echo "migrated to $(cat VERSION)"
"""


def _git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def make_web_repo(path: Path, version: str = "1.0.0") -> Path:
    """The web app's repo on branch main (bump it with engine.localfleet.commit_version)."""
    path.mkdir(parents=True)
    (path / "bin").mkdir()
    (path / "VERSION").write_text(version + "\n")
    (path / "app.py").write_text(_APP)
    (path / "build.sh").write_text(_BUILD)
    (path / "bin" / "restart").write_text(_RESTART)
    (path / "bin" / "health").write_text(_HEALTH)
    (path / "bin" / "migrate").write_text(_MIGRATE)
    for f in ("build.sh", "bin/restart", "bin/health", "bin/migrate"):
        os.chmod(path / f, 0o755)
    _git(path, "init", "-q", "-b", "main")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", f"web {version}")
    return path


def free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def install_app_env(hosts: list, port: int) -> None:
    """Each host's app listens on its own loopback address, on ``port``."""
    for h in hosts:
        env = h.home / "app.env"
        env.write_text(f"APP_ADDR={h.addr}\nAPP_PORT={port}\n")
        os.chmod(env, 0o644)


def app_pid(host) -> int | None:
    f = host.home / "app.pid"
    return int(f.read_text()) if f.exists() else None


def stop_apps(hosts: list) -> None:
    for h in hosts:
        pid = app_pid(h)
        if pid:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass


def admin(sock: Path, command: str, timeout: float = 5.0) -> str:
    """Send one runtime API command to HAProxy's admin socket; its answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


READY = "ready"
#: show stat's status of a server, as the state it is in
STATES = {"DRAIN": "drain", "MAINT": "maint", "no check": READY, "UP": READY}


class HAProxy:
    """haproxy -db on loopback: frontend ``port`` -> backend ``web`` of ``servers``
    (name, addr, port), its admin socket at ``root/admin.sock`` (mode 666, so any host
    user reaches it over SSH)."""

    def __init__(self, root: Path, servers: list[tuple[str, str, int]]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        self.sock = root / "admin.sock"
        self.port = free_port()
        self.servers = [name for name, _, _ in servers]
        lines = "\n".join(f"    server {n} {a}:{p}" for n, a, p in servers)
        self.config = root / "haproxy.cfg"
        self.config.write_text(
            f"""global
    stats socket {self.sock} mode 666 level admin
    maxconn 4000

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend fe
    bind 127.0.0.1:{self.port}
    default_backend web

backend web
    balance roundrobin
{lines}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> HAProxy:
        log = (self.root / "haproxy.log").open("wb")
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {(self.root / 'haproxy.log').read_text()}")
            try:
                if admin(self.sock, "show info").startswith("Name: HAProxy"):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("haproxy's admin socket never answered")
            time.sleep(0.05)

    def state(self, server: str) -> str:
        stat = parse_stat(admin(self.sock, SHOW_STAT), "web", server)
        assert stat is not None, server
        return STATES.get(stat.status, stat.status)

    def states(self) -> dict[str, str]:
        return {s: self.state(s) for s in self.servers}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class StatWatch:
    """Reads ``show stat`` every ``every`` seconds in a thread; ``changes[server]`` is
    the list of states the server went through (consecutive repeats dropped), and
    ``out_at_once`` the most servers seen out of rotation in one reading."""

    def __init__(self, lb: HAProxy, every: float = 0.01) -> None:
        self.lb = lb
        self.every = every
        self.changes: dict[str, list[str]] = {s: [] for s in lb.servers}
        self.out_at_once = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            answer = admin(self.lb.sock, SHOW_STAT)
            out = 0
            for server, seen in self.changes.items():
                stat = parse_stat(answer, "web", server)
                state = STATES.get(stat.status, stat.status) if stat else "?"
                out += state != READY
                if not seen or seen[-1] != state:
                    seen.append(state)
            self.out_at_once = max(self.out_at_once, out)
            self._stop.wait(self.every)


class Load:
    """Requests through HAProxy at a fixed arrival rate (``rate`` per second, sent
    whether or not earlier ones have answered: a slow or stuck answer does not lower
    the load), by a pool of ``workers`` keep-alive clients; every ``slow_every``-th is
    ``/slow?ms=slow_ms`` (so servers have sessions to drain). ``ok``, ``failed`` and
    ``errors`` (failure -> count) as they go; ``late``: requests that waited more than
    a second for a free client (the pool was too small for the rate)."""

    def __init__(
        self,
        port: int,
        rate: float = 100.0,
        workers: int = 32,
        slow_every: int = 4,
        slow_ms: int = 150,
    ) -> None:
        self.port = port
        self.rate_wanted = rate
        self.slow_every = slow_every
        self.slow_ms = slow_ms
        self.ok = 0
        self.failed = 0
        self.late = 0
        self.errors: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._due: queue.SimpleQueue[tuple[int, float] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run) for _ in range(workers)]
        self._ticker = threading.Thread(target=self._tick)
        self.started = self.ended = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._ticker.join()
        for _ in self._threads:
            self._due.put(None)
        for t in self._threads:
            t.join()
        self.ended = time.monotonic()

    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def rate(self) -> float:
        return self.total / max(1e-9, (self.ended or time.monotonic()) - self.started)

    def _tick(self) -> None:
        n, due = 0, time.monotonic()
        while not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            n += 1
            self._due.put((n, due))
            due += 1 / self.rate_wanted

    def _count(self, ok: bool, error: str = "") -> None:
        with self._lock:
            if ok:
                self.ok += 1
            else:
                self.failed += 1
                self.errors[error] += 1

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while (item := self._due.get()) is not None:
            n, due = item
            if time.monotonic() - due > 1:
                with self._lock:
                    self.late += 1
            path = f"/slow?ms={self.slow_ms}" if n % self.slow_every == 0 else "/"
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", path)
                res = conn.getresponse()
                res.read()
                if 200 <= res.status < 300:
                    self._count(True)
                else:
                    self._count(False, f"HTTP {res.status}")
                if res.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._count(False, type(exc).__name__)
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

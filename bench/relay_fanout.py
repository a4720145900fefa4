"""Relay fan-out benchmark: shipdeck's relay against two reference relays.

Each relay runs in its own process; this process is the load generator: one
publisher sending R chat messages per second into a room of C receiving clients,
and optionally one more client that stops reading (a stuck client).

Relays compared in the same run:

- ``shipdeck``   ``python -m relay``: every message stored (SQLite WAL) and
                 acknowledged, bounded per-client buffer, slow clients closed (4000);
- ``broadcast``  websockets.broadcast() to every connection, nothing stored;
- ``naive``      the classic group chat: ``for c in clients: await c.send(msg)``.

Measured per cell: delivery latency p50/p99 (publisher send -> receiver read, same
clock), deliveries per second, delivered fraction (of C x messages the publisher
meant to send), relay CPU (% of one core) and RSS. The stuck client's fate is in
the last column.

    python bench/relay_fanout.py --quick          # < 2 minutes
    python bench/relay_fanout.py                  # C = 10, 100, 250; R = 100..2000
    python bench/relay_fanout.py --multi-node [--quick]   # needs redis-server

``--multi-node``: one room of 3 x 100 clients on three relay nodes sharing one
``redis-server`` (AOF on, fsync always; clients spread round-robin, the publisher on
the first node), beside the same 300 clients on one node on Redis and on one node
on SQLite. Relay CPU and RSS are summed over the nodes; Redis's own CPU is in the
"redis CPU" line printed after each multi-node cell.

The load generator shares the machine with the relay; on a small box its own
receive loop is the limit first (see the "gen CPU" column), and the "load" column
(1-minute load average) shows whether other work competed for the CPUs. The stuck-client
cells send 4 KB messages for at least 4 s, so the stuck client's share passes the
relay's 1 MiB per-client bound plus what the kernel's socket buffers absorb; each
has a baseline row with the same payload and no stuck client. "shut" counts the
receivers the relay closed during the cell (they do not resume in this bench, so
their share shows as missing in "deliv.").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-0001"
ROOM = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- reference relays (run with --serve) ------------------------------------------


async def serve_reference(kind: str, port: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    clients: set[Any] = set()

    async def handler(ws: Any) -> None:
        clients.add(ws)
        try:
            async for message in ws:
                if kind == "broadcast":
                    broadcast(clients, message)
                else:  # naive: the classic loop, one await per receiver
                    for c in list(clients):
                        try:
                            await c.send(message)
                        except ConnectionClosed:
                            pass
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**20) as server:
        print(f"listening on ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


# -- relay processes ----------------------------------------------------------------


def _is_shipdeck(kind: str) -> bool:
    return kind not in ("broadcast", "naive")


def _nodes(kind: str) -> int:
    """``redis3`` -> 3 relay nodes on one Redis; everything else is one process."""
    return int(kind[5:]) if kind.startswith("redis") else 1


class RedisProc:
    """A throwaway redis-server on a free loopback port, AOF with fsync always."""

    def __init__(self, tmp: Path) -> None:
        import shutil
        import socket

        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        work = tmp / f"redis-{time.monotonic_ns()}"
        work.mkdir()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(work)]
            + ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class RelayProc:
    def __init__(self, kind: str, tmp: Path, redis_url: str | None = None) -> None:
        self.kind = kind
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if _is_shipdeck(kind):
            tokens = tmp / "tokens.toml"
            tokens.write_text(f'[operators]\nbench = "{TOKEN}"\n')
            db = tmp / f"relay-{time.monotonic_ns()}.db"
            cmd = [
                sys.executable,
                "-m",
                "relay",
                "--port",
                "0",
                *(["--redis", redis_url] if redis_url else ["--db", str(db)]),
                "--tokens",
                str(tokens),
                "--rate",
                "100000",
                "--log-level",
                "error",
            ]
        else:
            cmd = [sys.executable, __file__, "--serve", kind]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"{kind} relay did not start: {line!r}")
        self.url = f"ws://127.0.0.1:{m.group(1)}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- load generator ----------------------------------------------------------------------


@dataclass
class Cell:
    relay: str
    clients: int
    rate: int
    stuck: bool
    size: int
    sent: int = 0
    dropped: int = 0  # receivers the relay closed during the cell
    target: int = 0
    delivered: int = 0
    seconds: float = 0.0
    p50: float = float("nan")
    p99: float = float("nan")
    cpu: float = 0.0
    rss: float = 0.0
    gen_cpu: float = 0.0
    stuck_fate: str = ""
    load: float = 0.0
    redis_cpu: float = float("nan")


async def _open(kind: str, url: str, *, recv: bool = True) -> ClientConnection:
    headers = {"Authorization": f"Bearer {TOKEN}"} if _is_shipdeck(kind) else {}
    ws = await connect(
        url,
        additional_headers=headers,
        compression=None,
        max_size=2**21,
        open_timeout=30,
        ping_interval=None,
        max_queue=None,
    )
    if _is_shipdeck(kind):
        await ws.send(json.dumps({"type": "hello", "room": ROOM, "snapshot": False}))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
    return ws


def _stamp(kind: str, raw: str | bytes) -> float | None:
    if _is_shipdeck(kind):
        frame = json.loads(raw)
        if frame.get("type") != "chat":
            return None
        text = frame["text"]
    else:
        text = raw if isinstance(raw, str) else raw.decode()
    return float(text.split(" ", 1)[0])


async def run_cell(
    kind: str, clients: int, rate: int, duration: float, stuck: bool, size: int, tmp: Path
) -> Cell:
    cell = Cell(kind, clients, rate, stuck, size)
    n_nodes = _nodes(kind)
    redis = RedisProc(tmp) if kind.startswith("redis") else None
    nodes = [RelayProc(kind, tmp, redis.url if redis else None) for _ in range(n_nodes)]
    relay = nodes[0]
    latencies: list[float] = []
    counts = [0]
    try:
        receivers = []
        for i in range(0, clients, 50):  # open in batches: the relay's accept queue is finite
            receivers += await asyncio.gather(
                *(_open(kind, nodes[(i + j) % n_nodes].url) for j in range(min(50, clients - i)))
            )
        stuck_ws = await _open(kind, relay.url) if stuck else None
        if stuck_ws is not None:
            stuck_ws.transport.pause_reading()
        publisher = await _open(kind, relay.url)

        async def receive(ws: ClientConnection) -> None:
            try:
                async for raw in ws:
                    ts = _stamp(kind, raw)
                    if ts is not None:
                        latencies.append(time.perf_counter() - ts)
                        counts[0] += 1
            except ConnectionClosed:
                pass
            if not stopping:
                cell.dropped += 1

        async def drain_publisher() -> None:
            try:
                async for _ in publisher:
                    pass
            except ConnectionClosed:
                pass

        stopping = False
        tasks = [asyncio.create_task(receive(ws)) for ws in receivers]
        tasks.append(asyncio.create_task(drain_publisher()))
        payload = "x" * size
        cpu0, gen0, t0 = (
            sum(n.cpu_seconds() for n in nodes),
            time.process_time(),
            time.perf_counter(),
        )
        redis0 = redis.cpu_seconds() if redis else 0.0
        cell.target = int(rate * duration)

        async def publish() -> None:
            seq = 0
            tick = 0.01
            next_at = time.perf_counter()
            while seq < cell.target:
                due = min(cell.target, int((time.perf_counter() - t0) * rate) + 1)
                while seq < due:
                    text = f"{time.perf_counter():.6f} {seq} {payload}"
                    if _is_shipdeck(kind):
                        text = json.dumps({"type": "chat", "id": f"b{seq}", "text": text})
                    await publisher.send(text)
                    seq += 1
                    cell.sent = seq
                next_at += tick
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        try:
            await asyncio.wait_for(publish(), duration + 5)  # a stalled relay stops the run
        except TimeoutError:
            pass
        # let the tail of the stream arrive
        last, quiet_since = -1, time.perf_counter()
        deadline = time.perf_counter() + 5
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
            if counts[0] == clients * cell.sent:
                break
            if counts[0] != last:
                last, quiet_since = counts[0], time.perf_counter()
            elif time.perf_counter() - quiet_since > 1.0:
                break
        cell.seconds = time.perf_counter() - t0
        cell.cpu = 100 * (sum(n.cpu_seconds() for n in nodes) - cpu0) / cell.seconds
        cell.gen_cpu = 100 * (time.process_time() - gen0) / cell.seconds
        cell.rss = sum(n.rss_mb() for n in nodes)
        if redis is not None:
            cell.redis_cpu = 100 * (redis.cpu_seconds() - redis0) / cell.seconds
        cell.load = os.getloadavg()[0]
        cell.delivered = counts[0]
        if latencies:
            lat = sorted(latencies)
            cell.p50 = 1000 * statistics.median(lat)
            cell.p99 = 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        if stuck_ws is not None:
            cell.stuck_fate = await _stuck_fate(stuck_ws)
        stopping = True
        for t in tasks:
            t.cancel()
        for ws in [*receivers, publisher]:
            ws.transport.abort()
    finally:
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()
    return cell


async def _stuck_fate(ws: ClientConnection) -> str:
    """Resume reading the stuck client and see how the relay treated it."""
    ws.transport.resume_reading()
    got = 0
    try:
        async with asyncio.timeout(5):
            async for _ in ws:
                got += 1
    except TimeoutError:
        ws.transport.abort()
        return f"still open ({got} buffered)"
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else 1006
        return f"closed {code} after {got}"
    code = ws.close_code
    return f"closed {code} after {got}"


def _fmt(c: Cell) -> str:
    frac = c.delivered / (c.clients * c.target) if c.target else 0.0
    rate = c.delivered / c.seconds if c.seconds else 0.0
    return (
        f"| {c.relay:<9} | {c.clients:>4} | {c.rate:>5} | {c.size:>5} | {'yes' if c.stuck else 'no':<5} | {c.sent:>6} | {100 * frac:>6.1f}% | {c.dropped:>4} "
        f"| {rate:>10,.0f} | {c.p50:>7.1f} | {c.p99:>8.1f} | {c.cpu:>5.0f}% | {c.rss:>6.1f} | {c.gen_cpu:>5.0f}% | {c.load:>4.1f} | {c.stuck_fate or '-'} |"
    )


HEADER = (
    "| relay     |    C |     R | bytes | stuck |   sent | deliv. | shut |  deliv./s  | p50 ms  |  p99 ms  | relay CPU | RSS MB | gen CPU | load | stuck client |\n"
    "|-----------|------|-------|-------|-------|--------|--------|------|------------|---------|----------|-----------|--------|---------|------|--------------|"
)


MULTI_HEADER = (
    "| relay (nodes)         |    C |     R |   sent | deliv. |  deliv./s  | p50 ms  |  p99 ms  | relay CPU | redis CPU | RSS MB | gen CPU | load |\n"
    "|-----------------------|------|-------|--------|--------|------------|---------|----------|-----------|-----------|--------|---------|------|"
)
MULTI_NAMES = {
    "shipdeck": "1 node, SQLite",
    "redis1": "1 node, Redis",
    "redis3": "3 nodes x 100, Redis",
}


def _fmt_multi(c: Cell) -> str:
    frac = c.delivered / (c.clients * c.target) if c.target else 0.0
    rate = c.delivered / c.seconds if c.seconds else 0.0
    redis = "-" if c.redis_cpu != c.redis_cpu else f"{c.redis_cpu:>8.0f}%"
    return (
        f"| {MULTI_NAMES.get(c.relay, c.relay):<21} | {c.clients:>4} | {c.rate:>5} | {c.sent:>6} | {100 * frac:>5.1f}% "
        f"| {rate:>10,.0f} | {c.p50:>7.1f} | {c.p99:>8.1f} | {c.cpu:>8.0f}% | {redis:>9} | {c.rss:>6.1f} | {c.gen_cpu:>6.0f}% | {c.load:>4.1f} |"
    )


async def multi_node(args: argparse.Namespace) -> None:
    rates = (100, 300) if args.quick else (100, 300, 500)
    duration = args.duration or (2.0 if args.quick else 5.0)
    clients = 300
    print(
        f"# relay fan-out, one room of {clients} clients: 3 nodes x 100 on one Redis vs one node;"
        f" {duration:g} s per cell, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        flush=True,
    )
    print(MULTI_HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for rate in rates:
            for kind in ("redis3", "redis1", "shipdeck"):
                cell = await run_cell(kind, clients, rate, duration, False, 100, Path(tmp))
                print(_fmt_multi(cell), flush=True)


async def main_async(args: argparse.Namespace) -> None:
    if args.multi_node:
        await multi_node(args)
        return
    if args.quick:
        grid = [(10, 100, False, 100), (100, 500, False, 100), (250, 500, False, 100)]
        grid += [(100, 2000, False, 100), (100, 500, False, 4000), (100, 500, True, 4000)]
        duration = args.duration or 2.0
    else:
        grid = [(c, r, False, 100) for c in (10, 100, 250) for r in (100, 500, 1000, 2000)]
        grid += [(100, 500, False, 4000), (100, 500, True, 4000)]
        grid += [(250, 1000, False, 4000), (250, 1000, True, 4000)]
        duration = args.duration or 5.0
    relays = args.relays.split(",")
    print(
        f"# relay fan-out, {duration:g} s per cell, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
        flush=True,
    )
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for clients, rate, stuck, size in grid:
            for kind in relays:
                seconds = max(duration, 4.0) if size > 1000 else duration
                cell = await run_cell(kind, clients, rate, seconds, stuck, size, Path(tmp))
                print(_fmt(cell), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few cells, under 2 minutes")
    parser.add_argument("--duration", type=float, help="seconds of sending per cell")
    parser.add_argument("--relays", default="shipdeck,broadcast,naive")
    parser.add_argument(
        "--multi-node",
        action="store_true",
        help="3 relay nodes x 100 clients on one Redis, beside one node (needs redis-server)",
    )
    parser.add_argument("--serve", choices=("naive", "broadcast"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_reference(args.serve, args.port))
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()

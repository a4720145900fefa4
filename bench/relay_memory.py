"""Relay memory benchmark: RSS of a real relay process (``python -m relay``)
under the two loads that once made it grow without bound.

1. **stuck replay**: a room holding 300 MB of history (1 MB log lines, stored by the
   lease holder); a client asks for all of it (``since: 0``) and stops reading, while
   a watcher in another room and one in the same room receive a chat stream.
2. **1,000 rooms**: 1,000 rooms each filled once (a plan, log lines, chat) and left;
   RSS right after, and after the relay's idle rooms left memory (``room_idle``,
   60 s by default).

Each figure is printed beside the baseline: the same relay process idle before the
load. With ``--against REV`` the same loads also run against the relay of a git
revision (``git archive REV``), in the same run, for a before/after table.

    python bench/relay_memory.py                     # ~3 minutes
    python bench/relay_memory.py --quick             # 30 MB replay, 100 rooms
    python bench/relay_memory.py --against main

"Other clients unaffected" is shown as the watchers' delivery latency (p50/p99,
publisher send to receiver read) and delivered fraction during each phase. This is a
measurement, never a timed assertion; the behaviour (close 4000, resume, eviction)
is tested in tests/relay/test_memory.py.
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
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {"alice": "bench-token-alice", "bob": "bench-token-bob"}
MAX_SIZE = 2 * 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RelayProc:
    def __init__(self, tree: Path, work: Path, label: str) -> None:
        self.tree, self.work, self.label = tree, work, label
        self.log = work / f"relay-{label}.log"
        tokens = work / "tokens.toml"
        tokens.write_text("[operators]\n" + "".join(f'{k} = "{v}"\n' for k, v in TOKENS.items()))
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
        err = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "--host", "127.0.0.1", "--port", "0",
             "--db", str(work / f"relay-{label}.db"), "--tokens", str(tokens),
             "--rate", "100000", "--log-level", "info"],
            cwd=tree, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        err.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"ws://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise SystemExit(f"relay did not start: {line!r}\n{self.log.read_text()[-2000:]}")
        self.url = f"ws://127.0.0.1:{m.group(1)}"

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def in_memory(self) -> str:
        found = re.findall(r"\((\d+) in memory\)", self.log.read_text())
        return found[-1] if found else "?"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def join(url: str, op: str, room: str, **hello: Any) -> tuple[ClientConnection, dict]:
    ws = await connect(
        url, additional_headers={"Authorization": f"Bearer {TOKENS[op]}"}, max_size=MAX_SIZE
    )
    await ws.send(json.dumps({"type": "hello", "room": room, "snapshot": False, **hello}))
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "welcome":
            return ws, frame


async def request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    while True:
        got = json.loads(await ws.recv())
        if got.get("id") == frame["id"] and got["type"] in ("ack", "error"):
            if got["type"] == "error":
                raise RuntimeError(got)
            return got


@dataclass
class Watch:
    """A chat stream from a talker to watchers; latency and delivery per phase."""

    url: str
    rooms: list[str]
    rate: float = 50.0
    sent: dict[int, float] = field(default_factory=dict)
    got: list[float] = field(default_factory=list)
    received: int = 0
    seq: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        talkers = [(await join(self.url, "bob", r))[0] for r in self.rooms]
        watchers = [(await join(self.url, "alice", r))[0] for r in self.rooms]
        readers = [asyncio.create_task(self._read(w)) for w in watchers]
        readers += [asyncio.create_task(self._drain(t)) for t in talkers]  # acks, echoes
        prefix = f"w{os.urandom(4).hex()}-"  # ids are unique per sender and room, for good
        try:
            while not stop.is_set():
                self.seq += 1
                self.sent[self.seq] = time.perf_counter()
                for t in talkers:
                    await t.send(
                        json.dumps(
                            {"type": "chat", "id": f"{prefix}{self.seq}", "text": f"{self.seq}"}
                        )
                    )
                await asyncio.sleep(1 / self.rate)
        finally:
            for r in readers:
                r.cancel()
            for ws in talkers + watchers:
                await ws.close()

    async def _drain(self, ws: ClientConnection) -> None:
        async for _ in ws:
            pass

    async def _read(self, ws: ClientConnection) -> None:
        async for text in ws:
            frame = json.loads(text)
            if frame.get("type") == "chat" and frame.get("sender") == "bob":
                sent = self.sent.get(int(frame["text"]))
                if sent is not None:
                    self.got.append(time.perf_counter() - sent)
                self.received += 1

    def take(self) -> str:
        got, self.got = self.got, []
        expected = self.seq * len(self.rooms)
        frac = self.received / expected if expected else 0.0
        self.received, self.seq, self.sent = 0, 0, {}
        if not got:
            return "no deliveries"
        got.sort()
        p99 = got[min(len(got) - 1, int(len(got) * 0.99))]
        return f"p50 {statistics.median(got) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, {frac:.0%}"


async def fill_big_room(url: str, megabytes: int) -> None:
    ws, _ = await join(url, "alice", "big")
    await request(ws, {"type": "lock", "id": "l1", "op": "acquire", "reason": "bench", "ttl": 600})
    plan = {
        "type": "plan",
        "deploy_id": "b",
        "nodes": [{"key": "release", "label": "r", "kind": "stage"}],
    }
    await request(ws, {"type": "event", "id": "p", "events": [plan]})
    line = "x" * 1_000_000
    for i in range(megabytes):
        log = {"type": "log", "deploy_id": "b", "key": "release", "text": f"{i} {line}"}
        await request(ws, {"type": "event", "id": f"e{i}", "events": [log]})
    await ws.close()


async def fill_room(url: str, room: str) -> None:
    ws, _ = await join(url, "alice", room)
    await request(ws, {"type": "lock", "id": "l", "op": "acquire", "reason": "bench", "ttl": 60})
    nodes = [{"key": "release", "label": "release", "kind": "stage"}]
    nodes += [{"key": f"release/h{i}", "label": f"h{i}", "kind": "host"} for i in range(100)]
    await request(
        ws,
        {
            "type": "event",
            "id": "p",
            "events": [{"type": "plan", "deploy_id": room, "nodes": nodes}],
        },
    )
    logs = [
        {"type": "log", "deploy_id": room, "key": f"release/h{i}", "text": f"{i} " + "y" * 10_000}
        for i in range(20)
    ]
    await request(ws, {"type": "event", "id": "logs", "events": logs})
    for i in range(20):
        await request(ws, {"type": "chat", "id": f"c{i}", "text": f"{i} " + "z" * 4000})
    await request(ws, {"type": "lock", "id": "r", "op": "release"})
    await ws.close()


async def sample_peak(relay: RelayProc, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        out.append(relay.rss())
        await asyncio.sleep(0.1)


async def run_one(relay: RelayProc, replay_mb: int, rooms: int, idle_wait: float) -> dict[str, str]:
    row: dict[str, str] = {}
    await asyncio.sleep(1.0)
    row["idle relay (baseline)"] = f"{relay.rss():.0f}"
    for phase in (stuck_replay, many_rooms):
        try:
            await phase(relay, row, replay_mb, rooms, idle_wait)
        except Exception as exc:  # an old relay may not survive a phase: say so
            row[f"{phase.__name__} failed"] = f"{type(exc).__name__}: {exc}"[:34]
            row[f"  RSS then ({phase.__name__})"] = f"{relay.rss():.0f}"
    warnings = [ln for ln in relay.log.read_text().splitlines() if " WARNING " in ln]
    row["relay warnings (fell behind / other)"] = (
        f"{sum('fell behind' in w for w in warnings)} / "
        f"{sum('fell behind' not in w for w in warnings)}"
    )
    for w in warnings[:5]:
        print("  relay:", w[:200])
    return row


async def stuck_replay(
    relay: RelayProc, row: dict[str, str], replay_mb: int, rooms: int, idle_wait: float
) -> None:
    """1. a stuck client during a big replay."""
    t0 = time.monotonic()
    await fill_big_room(relay.url, replay_mb)
    print(f"  [{relay.label}] stored {replay_mb} MB in {time.monotonic() - t0:.0f}s", flush=True)
    row[f"after storing {replay_mb} MB"] = f"{relay.rss():.0f}"
    stop, peaks = asyncio.Event(), []
    watch = Watch(relay.url, ["big", "quiet"])
    watcher = asyncio.create_task(watch.run(stop))
    sampler = asyncio.create_task(sample_peak(relay, stop, peaks))
    ws = await connect(
        relay.url,
        additional_headers={"Authorization": f"Bearer {TOKENS['bob']}"},
        max_size=MAX_SIZE,
    )
    try:
        ws.transport.pause_reading()
        await ws.send(json.dumps({"type": "hello", "room": "big", "since": 0}))
        await asyncio.sleep(10)  # stuck for 10 s while the others chat
    finally:
        stop.set()
        await asyncio.gather(watcher, sampler, return_exceptions=True)
    row[f"peak, stuck client on a {replay_mb} MB replay"] = f"{max(peaks):.0f}"
    row["  watchers meanwhile"] = watch.take()
    ws.transport.resume_reading()
    code, frames = None, 0
    try:
        async with asyncio.timeout(120):
            async for _ in ws:
                frames += 1
                if frames >= replay_mb + 2:
                    break
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        code = "still reading after 120 s"
    await ws.close()
    row["  the stuck client, once it read again"] = (
        f"closed {code}" if code else f"read all {frames} frames"
    )


async def many_rooms(
    relay: RelayProc, row: dict[str, str], replay_mb: int, rooms: int, idle_wait: float
) -> None:
    """2. rooms filled once and left."""
    stop, peaks = asyncio.Event(), []
    watch = Watch(relay.url, ["quiet"])
    watcher = asyncio.create_task(watch.run(stop))
    sampler = asyncio.create_task(sample_peak(relay, stop, peaks))
    t0 = time.monotonic()
    sem = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with sem:
            await fill_room(relay.url, f"room-{i}")

    try:
        await asyncio.gather(*(one(i) for i in range(rooms)))
        print(f"  [{relay.label}] filled {rooms} rooms in {time.monotonic() - t0:.0f}s", flush=True)
        row[f"after filling {rooms} rooms and leaving"] = f"{relay.rss():.0f}"
        row["  peak while filling"] = f"{max(peaks):.0f}"
        await asyncio.sleep(idle_wait)
    finally:
        stop.set()
        await asyncio.gather(watcher, sampler, return_exceptions=True)
    row["  watcher meanwhile"] = watch.take()
    row[f"{idle_wait:.0f} s later"] = f"{relay.rss():.0f}"
    row["  rooms in memory then (relay's log)"] = relay.in_memory()


def export_tree(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    tar = dest / "tree.tar"
    subprocess.run(["git", "archive", "-o", str(tar), rev, "relay", "engine"], cwd=ROOT, check=True)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest


async def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="30 MB replay, 100 rooms")
    p.add_argument("--against", metavar="REV", help="also run the relay of this git revision")
    p.add_argument(
        "--idle-wait",
        type=float,
        default=70.0,
        help="seconds to wait for idle rooms to leave (default 70)",
    )
    args = p.parse_args()
    replay_mb, rooms = (30, 100) if args.quick else (300, 1000)
    trees = [("this tree", ROOT)]
    with tempfile.TemporaryDirectory(prefix="relay-memory-") as tmp:
        if args.against:
            trees.append((args.against, export_tree(args.against, Path(tmp) / "old")))
        results = []
        for label, tree in trees:
            work = Path(tmp) / f"work-{len(results)}"
            work.mkdir()
            relay = RelayProc(tree, work, label.replace(" ", "-"))
            print(f"relay ({label}) at {relay.url}", flush=True)
            try:
                results.append((label, await run_one(relay, replay_mb, rooms, args.idle_wait)))
            finally:
                relay.stop()
    keys = list(dict.fromkeys(k for _, r in results for k in r))
    width = max(len(k) for k in keys)
    print()
    print(f"{'relay RSS (MiB)':<{width}}  " + "  ".join(f"{label:>34}" for label, _ in results))
    for k in keys:
        print(f"{k:<{width}}  " + "  ".join(f"{r.get(k, '-'):>34}" for _, r in results))


if __name__ == "__main__":
    asyncio.run(main())

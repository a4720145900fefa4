"""Fan-out at WAN latency: shipdeck and its peers against N real OpenSSH sshd hosts,
each behind its own loopback TCP proxy that delays every byte by a fixed time each
way. ``lo`` itself is never shaped.

    python bench/wan_fanout.py                 # N=10,40,100 x 0/25/75 ms each way, 3 runs
    python bench/wan_fanout.py --quick         # N=10, 0 and 25 ms, 1 run, shipdeck + floor
    python bench/wan_fanout.py --n 40 --delays 0,25,75 --runs 3
    python bench/wan_fanout.py --before /tmp/shipdeck-before   # + an older checkout

Hosts: ``tests/sshd.py`` with one sshd per host (distinct servers: each has its own
host key and sshd's default MaxStartups 10:30:100). The proxy of host i listens on
the host's own address (127.0.0.x) on another port and forwards to its sshd:

- a new connection reaches sshd one round trip after it was accepted (the TCP
  handshake a real link costs), then every chunk each way is delivered ``delay`` after
  it was read, in order;
- it counts, per connection, the client's round trips: the TCP handshake plus every
  time the server answers after the client sent (bytes each way too).

Columns: median wall seconds of the client process (start to exit, every host ok),
the median round trips per host the proxies counted, and per row the round-trip
floor: shipdeck's own start-up (its median at 0 ms: process start, git fetch,
package and the loopback work) + its round trips per host x RTT. A cell says which
runs failed. Runs are interleaved (run 1 of every tool, then run 2, ...), after one
uncounted warm-up run of every tool per fleet.

Runs as root in shipdeck's environment; the peers (asyncssh floor, Fabric, pyinfra)
run from bench/.venv (installed on first use, see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from _hosts import (
    PEERS,
    REPO,
    VENV,
    become_subreaper,
    ensure_venv,
    fleet,
    fleet_pids,
    hosts_file,
    init_repo,
    last_json,
    make_tarball,
    measure,
    new_commit,
    random_tree,
    venv_has,
    write_shipdeck_config,
)

ARTIFACT_BYTES = 256 * 1024  # the upload is not what this bench is about
TOOLS = ["shipdeck", "shipdeck-cap", "floor", "fabric", "pyinfra"]
LABELS = {
    "shipdeck": "shipdeck (defaults)",
    "shipdeck-cap": "shipdeck max_startups=N",
    "shipdeck-hs": "shipdeck max_handshakes=N",
    "shipdeck-wide": "shipdeck parallel=N",
    "before": "shipdeck before (defaults)",
    "floor": "asyncssh floor",
    "fabric": "Fabric (threads)",
    "pyinfra": "pyinfra",
}
NEEDS = {"floor": "asyncssh", "fabric": "fabric", "pyinfra": "pyinfra"}


# --------------------------------------------------------------------------- the proxy


@dataclass
class ConnStats:
    host: str
    round_trips: int = 1  # the TCP handshake
    up: int = 0
    down: int = 0
    _sent: bool = False


class DelayProxies:
    """One delaying TCP proxy per host, served by an event loop in a thread of its own."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.conns: list[ConnStats] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, hosts: list) -> list[int]:
        return [self.call(self._serve(h)) for h in hosts]

    async def _serve(self, h) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            st = ConnStats(h.name)
            self.conns.append(st)
            delay = self.delay
            accepted = self.loop.time()
            await asyncio.sleep(2 * delay)  # the TCP handshake's round trip
            try:
                up_r, up_w = await asyncio.open_connection(h.addr, h.port)
            except OSError:
                writer.close()
                return
            ready = max(self.loop.time(), accepted + 2 * delay)

            async def pipe(r, w, upstream: bool) -> None:
                queue: collections.deque = collections.deque()
                wake = asyncio.Event()
                done = False

                async def deliver() -> None:
                    while True:
                        while not queue:
                            if done:
                                return
                            wake.clear()
                            await wake.wait()
                        at, data = queue.popleft()
                        wait = at - self.loop.time()
                        if wait > 0:
                            await asyncio.sleep(wait)
                        w.write(data)
                        await w.drain()

                sender = asyncio.ensure_future(deliver())
                try:
                    while data := await r.read(65536):
                        if upstream:
                            st.up += len(data)
                            st._sent = True
                        else:
                            st.down += len(data)
                            if st._sent:
                                st.round_trips += 1
                                st._sent = False
                        queue.append((max(self.loop.time() + delay, ready), data))
                        wake.set()
                    done = True
                    wake.set()
                    await sender
                except (OSError, asyncio.CancelledError):
                    sender.cancel()
                finally:
                    try:
                        w.close()
                    except OSError:
                        pass

            await asyncio.gather(pipe(reader, up_w, True), pipe(up_r, writer, False))

        server = await asyncio.start_server(handle, h.addr, 0, backlog=512)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    def take(self) -> list[ConnStats]:
        out, self.conns = self.conns, []
        return out

    def close(self) -> None:
        async def stop() -> None:
            for s in self.servers:
                s.close()

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def proxied(f, ports: list[int], root: Path) -> SimpleNamespace:
    """The fleet as clients see it: the same hosts at their proxies' ports (and those
    ports in a known_hosts file of their own)."""
    hosts, lines = [], []
    keys = {}
    for line in f.known_hosts.read_text().splitlines():
        pattern, _, key = line.partition(" ")
        keys[pattern] = key
    for h, port in zip(f.hosts, ports, strict=True):
        p = SimpleNamespace(
            name=h.name, addr=h.addr, port=port, user=h.user, home=h.home, index=h.index
        )
        p.spec = f"{h.user}@{h.addr}:{port}"
        hosts.append(p)
        lines.append(f"[{h.addr}]:{port} {keys[f'[{h.addr}]:{h.port}']}")
    kh = root / "known_hosts_proxied"
    kh.write_text("\n".join(lines) + "\n")
    return SimpleNamespace(hosts=hosts, client_key=f.client_key, known_hosts=kh, procs=f.procs)


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    wall: float
    ok: bool
    note: str = ""
    rt: float = 0.0  # median round trips per host (proxy)


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)
    skipped: str = ""

    def median(self) -> float | None:
        good = [r.wall for r in self.runs if r.ok]
        return statistics.median(good) if good else None

    def rt(self) -> float | None:
        good = [r.rt for r in self.runs if r.ok]
        return statistics.median(good) if good else None


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.env = dict(os.environ)
        self.env.update(
            XDG_CACHE_HOME=str(work / "cache"),
            XDG_STATE_HOME=str(work / "state"),
            SHIPDECK_OPERATOR="bench",
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.env.pop("SSH_AUTH_SOCK", None)
        self.repo = init_repo(work / "repo")
        new_commit(self.repo, ARTIFACT_BYTES, "bench: initial")

    def run(self, tool: str, f, pf, n: int, rnd: int, nd: Path, proxies: DelayProxies) -> Run:
        exclude = fleet_pids(f)
        proxies.take()
        if tool in ("shipdeck", "shipdeck-cap", "shipdeck-hs", "shipdeck-wide", "before"):
            new_commit(self.repo, ARTIFACT_BYTES, f"bench: {tool} N={n} run {rnd}")
            cfg = write_shipdeck_config(nd / f"{tool}.toml", pf, self.repo, f"sd-{tool}")
            if tool == "shipdeck-cap":
                text = cfg.read_text().replace("[ssh]\n", f"[ssh]\nmax_startups = {n}\n")
                cfg.write_text(text)
            elif tool == "shipdeck-hs":  # every handshake of the fleet in flight at once
                text = cfg.read_text().replace("[ssh]\n", f"[ssh]\nmax_handshakes = {n}\n")
                cfg.write_text(text)
            elif tool == "shipdeck-wide":  # every host in flight (deploy.parallel)
                text = cfg.read_text().replace("[deploy]\n", f"[deploy]\nparallel = {n}\n")
                cfg.write_text(text)
            tree = self.args.before if tool == "before" else REPO
            env = dict(self.env, PYTHONPATH=str(tree))
            cmd = [sys.executable, "-m", "tui.cli", "deploy", "-c", str(cfg), "--json"]
            m = measure(cmd, env=env, cwd=tree, exclude=exclude, timeout=self.args.timeout)
            if self.args.keep_json:  # the run's events, for a timeline of where the time went
                self.args.keep_json.mkdir(parents=True, exist_ok=True)
                name = f"{tool}-n{n}-rtt{round(2000 * proxies.delay)}-run{rnd}.jsonl"
                (self.args.keep_json / name).write_text(m.stdout)
            finished: dict = {}
            for line in m.stdout.splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("type") == "finished":
                    finished = ev.get("summary", {})
            ok = m.returncode == 0 and finished.get("ok") == n
            note = "" if ok else (json.dumps(finished.get("failures", {}))[:300] or m.stderr[-300:])
        else:
            rid = f"r{rnd}-{int(time.time() * 1000) % 10**9}"
            src = random_tree(nd / f"art-{tool}-{rnd}", ARTIFACT_BYTES)
            tarball = make_tarball(src, nd / f"art-{tool}-{rnd}.tar.gz")
            shutil.rmtree(src)
            hj = hosts_file(pf, nd / "hosts.json")
            common = ["--hosts", str(hj), "--tarball", str(tarball), "--release", rid]
            common += ["--path", f"peer-{tool}"]
            py = str(VENV / "bin" / "python")
            env = dict(self.env)
            if tool == "floor":
                cmd = [py, str(PEERS / "asyncssh_floor.py"), *common, "--cap", "10"]
            elif tool == "fabric":
                cmd = [py, str(PEERS / "fabric_peer.py"), *common]
            elif tool == "pyinfra":
                env["BENCH_HOSTS"] = str(hj)
                cmd = [str(VENV / "bin" / "pyinfra"), "-y", str(PEERS / "pyinfra_inventory.py")]
                cmd += [str(PEERS / "pyinfra_deploy.py")]
                for k, v in (("release", rid), ("tarball", str(tarball)), ("path", f"peer-{tool}")):
                    cmd += ["--data", f"{k}={v}"]
            else:
                raise ValueError(tool)
            m = measure(cmd, env=env, cwd=nd, exclude=exclude, timeout=self.args.timeout)
            tarball.unlink(missing_ok=True)
            res = last_json(m.stdout)
            if tool == "pyinfra":
                ok = m.returncode == 0
            else:
                ok = m.returncode == 0 and res.get("ok") == n
            note = "" if ok else ("; ".join(res.get("errors", [])) or m.stderr[-300:])
        per_host: dict[str, int] = collections.Counter()
        for c in proxies.take():
            per_host[c.host] += c.round_trips
        rt = statistics.median(per_host.values()) if per_host else 0.0
        return Run(m.wall, ok, note.replace("\n", " "), rt)


def table(
    results: dict, ns: list[int], delays: list[int], tools: list[str], runs: int
) -> list[str]:
    out = [
        f"Median wall seconds over {runs} run(s), every host ok; (rt) = median round trips "
        "per host counted by the proxies; floor = shipdeck at 0 ms + its rt x RTT.",
        "",
    ]
    head = ["N", "RTT"] + [LABELS[t] for t in tools] + ["round-trip floor", "shipdeck / floor"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for n in ns:
        base = results.get((n, 0, "shipdeck"))
        start = base.median() if base else None
        for d in delays:
            row = [str(n), f"{2 * d} ms"]
            for t in tools:
                cell = results.get((n, d, t))
                if cell is None or cell.skipped:
                    row.append(cell.skipped if cell else "-")
                    continue
                med, rt = cell.median(), cell.rt()
                failed = [i + 1 for i, r in enumerate(cell.runs) if not r.ok]
                txt = f"{med:.2f} ({rt:g})" if med is not None else "failed"
                if failed and med is not None:
                    txt += f" [run {','.join(map(str, failed))} failed]"
                row.append(txt)
            sd = results.get((n, d, "shipdeck"))
            if start is not None and sd is not None and sd.rt() is not None:
                floor = start + sd.rt() * 2 * d / 1000
                row.append(f"{floor:.2f}")
                med = sd.median()
                row.append(f"{med / floor:.2f}x" if med else "-")
            else:
                row += ["-", "-"]
            out.append("| " + " | ".join(row) + " |")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", default="10,40,100", help="fleet sizes (comma separated)")
    p.add_argument("--delays", default="0,25,75", help="one-way delays in ms (0 = start-up)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--before", type=Path, help="an older shipdeck checkout to run beside")
    p.add_argument("--quick", action="store_true", help="N=10, 0 and 25 ms, 1 run")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--notes", action="store_true", help="print failed runs' reasons")
    p.add_argument("--keep-json", type=Path, help="keep each shipdeck run's --json events here")
    args = p.parse_args()
    if args.quick:
        args.n, args.delays, args.runs = "10", "0,25", 1
        if args.tools == ",".join(TOOLS):
            args.tools = "shipdeck,floor"
    ns = [int(x) for x in args.n.split(",")]
    delays = [int(x) for x in args.delays.split(",")]
    if 0 not in delays:
        delays.insert(0, 0)  # the start-up the floor is built on
    tools = [t for t in args.tools.split(",") if t]
    if args.before:
        tools.insert(1, "before")
    if os.geteuid() != 0:
        print("run as root (every host gets its own login user)", file=sys.stderr)
        return 2
    if any(t in NEEDS for t in tools):
        ensure_venv(["paramiko", "fabric", "asyncssh", "pyinfra"])
    become_subreaper()
    work = Path(tempfile.mkdtemp(prefix="shipdeck-wan-"))
    results: dict = {}
    notes: list[str] = []
    try:
        bench = Bench(args, work)
        for n in ns:
            nd = work / f"n{n}"
            nd.mkdir()
            with fleet(nd / "fleet", n, one_process_per_host=True) as f:
                proxies = DelayProxies()
                try:
                    pf = proxied(f, proxies.start(f.hosts), nd)
                    proxies.delay = 0
                    for t in tools:  # warm-up (not counted): layouts, caches, imports
                        if t not in NEEDS or venv_has(NEEDS[t]):
                            bench.run(t, f, pf, n, 0, nd, proxies)
                    for d in delays:
                        proxies.delay = d / 1000
                        for t in tools:
                            if t in NEEDS and not venv_has(NEEDS[t]):
                                results[(n, d, t)] = Cell(skipped="not installed")
                        for rnd in range(1, args.runs + 1):
                            for t in tools:
                                cell = results.setdefault((n, d, t), Cell())
                                if cell.skipped:
                                    continue
                                r = bench.run(t, f, pf, n, rnd, nd, proxies)
                                cell.runs.append(r)
                                state = "ok" if r.ok else f"FAILED {r.note[:200]}"
                                print(
                                    f"N={n} RTT={2 * d}ms {t} run {rnd}: {r.wall:.2f}s "
                                    f"rt/host={r.rt:g} {state}",
                                    file=sys.stderr,
                                    flush=True,
                                )
                                if not r.ok:
                                    notes.append(f"N={n} RTT={2 * d}ms {t} run {rnd}: {r.note}")
                finally:
                    proxies.close()
        print("\n".join(table(results, ns, delays, tools, args.runs)))
        if notes and args.notes:
            print("\nNotes:\n" + "\n".join(f"- {x}" for x in notes))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

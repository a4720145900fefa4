"""TUI under an event flood: the real ShipdeckApp on a real terminal (a pty), fed
N hosts × 9 steps of engine events at R events/s, with key presses during the flood.

    python bench/tui_flood.py            # 20 s per run
    python bench/tui_flood.py --quick    # 5 s per run

Each run is a fresh process whose stdin/stdout are a 120x40 pty (output read and
discarded by the parent), so frames are really rendered and written. Reported per run:
key-press-to-frame latency (p50/p95/max: key posted -> the first frame written after
the tree handled it), events applied per second, backlog at the end, CPU % of one core
(user+sys of the whole process, event generation included; ``gen %`` is what making
the same events costs with no app, measured right after, and ``app %`` the difference:
the TUI's own share), peak RSS, first paint
(process start of the app, plan included -> first frame written).

``merged`` is ``batched`` with the merged fleet log (L) shown in the per-node log's
place, every log line going into it (the tree keeps the focus for the key presses).

``naive`` is the baseline in the same run: each event applied and relabelled on
arrival (one set_label + header update per event), the design DESIGN.md warns about.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("connect", "lock", "upload", "unpack", "link", "before", "activate", "restart", "health")


# -- child: one measured run ------------------------------------------------------------


class FloodRunner:
    """Engine-shaped: a plan, subscribers; run() waits until the bench ends."""

    def __init__(self, hosts: int) -> None:
        from engine.plan import build_plan

        names = [f"web{i:04d}" for i in range(1, hosts + 1)]
        first = names[:1]
        rest = names[1:]
        half = (len(rest) + 1) // 2
        waves = [first, rest[:half], rest[half:]]
        self.deploy_id = "bench"
        self.plan = build_plan(
            "bench",
            [w for w in waves if w],
            meta={
                "project": "bench",
                "ref": "main",
                "sha": "3f2a9c1",
                "kind": "deploy",
                "operator": "bench",
            },
            steps=STEPS,
        )
        self.subscribers = []
        self.done = asyncio.Event()

    def subscribe(self, cb) -> None:
        self.subscribers.append(cb)

    async def run(self):
        await self.done.wait()

    def abort(self, by: str = "", reason: str = "") -> None:
        self.done.set()


class FloodBackend:
    read_only = False
    project = "bench"
    ref = "main"

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts
        self.runner: FloodRunner | None = None

    def new_deploy(self, prompter):
        self.runner = FloodRunner(self.hosts)
        return self.runner

    def history(self):
        return None

    def releases(self):
        return []


def event_cycle(plan, parallel: int = 200):
    """Endless engine-like stream: hosts in windows of ``parallel``, every step
    running -> log line (-> upload progress) -> ok, hosts running -> ok."""
    from engine.events import LogLine, NodeStatus, Progress

    hosts = [h.key for h in plan.hosts()]
    now = time.time
    while True:
        for i in range(0, len(hosts), parallel):
            window = hosts[i : i + parallel]
            for h in window:
                yield lambda h=h: NodeStatus("bench", key=h, status="running", at=now())
            for step in STEPS:
                for h in window:
                    key = f"{h}/{step}"
                    yield lambda key=key: NodeStatus("bench", key=key, status="running", at=now())
                    if step == "upload":
                        yield lambda key=key: Progress("bench", key=key, done=7000, total=14000)
                    yield lambda key=key, step=step: LogLine(
                        "bench", key=key, stream="stdout", text=f"{step} done", at=now()
                    )
                    yield lambda key=key: NodeStatus("bench", key=key, status="ok", at=now())
            for h in window:
                yield lambda h=h: NodeStatus("bench", key=h, status="ok", at=now())


async def measure(hosts: int, rate: int, duration: float, mode: str) -> dict:
    t_start = time.perf_counter()
    from engine.plan import Plan  # noqa: F401  (warm import outside the timing? no: part of startup)
    from tui.app import ShipdeckApp
    from tui.model import Batch

    backend = FloodBackend(hosts)
    app = ShipdeckApp(backend, operator="bench")
    frames: list[float] = []
    original = app._display

    def display(screen, renderable) -> None:
        original(screen, renderable)
        if renderable is not None and not app._batch_count:
            frames.append(time.perf_counter())

    app._display = display  # type: ignore[method-assign]
    handled: list[float] = []
    task = asyncio.create_task(app.run_async())
    while not frames:
        await asyncio.sleep(0.005)
    first_paint = frames[0] - t_start
    await asyncio.sleep(0.3)
    if mode == "merged":
        app.show_fleet_log(True, focus=False)
        await asyncio.sleep(0.1)
    tree = app.tree
    for name in ("action_cursor_down", "action_cursor_up"):
        orig = getattr(tree, name)

        def wrapped(orig=orig) -> None:
            orig()
            handled.append(time.perf_counter())

        setattr(tree, name, wrapped)

    runner = backend.runner
    applied = [0]
    if mode in ("batched", "merged"):
        callback = app.model.push
    else:
        model = app.model

        def callback(event) -> None:
            batch = Batch()
            model.apply(event, batch)
            applied[0] += 1
            for key in batch.dirty:
                node = tree.nodes_by_key.get(key)
                if node is not None:
                    node.set_label(model.label_for(key))
            model.dirty.clear()
            app.log_pane.add(batch.lines)
            app.update_header()

    gen = event_cycle(runner.plan)
    stop = asyncio.Event()
    sent = [0]
    latencies: list[float] = []

    async def flood() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            target = int((time.perf_counter() - t0) * rate)
            for _ in range(target - sent[0]):
                callback(next(gen)())
            sent[0] = max(sent[0], target)
            await asyncio.sleep(0.005)

    async def keys() -> None:
        n = 0
        while not stop.is_set():
            await asyncio.sleep(0.25)
            n += 1
            key = "j" if (n // 4) % 2 == 0 else "k"
            before = len(handled)
            t0 = time.perf_counter()
            app.simulate_key(key)
            deadline = t0 + 30
            while time.perf_counter() < deadline:
                if len(handled) > before:
                    t_h = handled[before]
                    after = [f for f in frames[-50:] if f >= t_h]
                    if after:
                        latencies.append(after[0] - t0)
                        break
                await asyncio.sleep(0.002)
            else:
                latencies.append(30.0)

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    base_applied = app.model.applied_total
    jobs = [asyncio.create_task(flood()), asyncio.create_task(keys())]
    await asyncio.sleep(duration)
    stop.set()
    wall = time.perf_counter() - w0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    for j in jobs:
        j.cancel()
    if mode in ("batched", "merged"):
        done = app.model.applied_total - base_applied
        backlog = len(app.model.pending)
    else:
        done = applied[0]
        backlog = max(0, int(wall * rate) - sent[0])
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / wall * 100
    # the harness's own share: making the same number of events with no app at all
    g = event_cycle(runner.plan)
    g0 = time.process_time()
    for _ in range(sent[0]):
        next(g)()
    gen_cpu = (time.process_time() - g0) / wall * 100
    runner.abort()
    app.exit(0)
    try:
        await asyncio.wait_for(task, 10)
    except (TimeoutError, asyncio.CancelledError):
        pass
    lat = sorted(latencies) or [float("nan")]
    return {
        "hosts": hosts,
        "rate": rate,
        "mode": mode,
        "keys": len(latencies),
        "p50": statistics.median(lat) * 1000,
        "p95": lat[min(len(lat) - 1, int(len(lat) * 0.95))] * 1000,
        "max": lat[-1] * 1000,
        "applied_per_s": done / wall,
        "backlog": backlog,
        "cpu": cpu,
        "gen_cpu": gen_cpu,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "first_paint_ms": first_paint * 1000,
        "frames_per_s": len([f for f in frames if f >= w0 and f <= w0 + wall]) / wall,
    }


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(measure(args.hosts, args.rate, args.duration, args.mode))
    Path(args.out).write_text(json.dumps(result))


# -- parent: orchestrate runs in ptys --------------------------------------------------------


def run_one(hosts: int, rate: int, duration: float, mode: str) -> dict:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--child",
            "--hosts",
            str(hosts),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--mode",
            mode,
            "--out",
            out,
        ],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=ROOT,
        close_fds=True,
    )
    os.close(slave)
    written = [0]

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            written[0] += len(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=duration + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    try:
        data = json.loads(Path(out).read_text())
    except (OSError, json.JSONDecodeError):
        data = {"hosts": hosts, "rate": rate, "mode": mode, "error": f"exit {proc.returncode}"}
    Path(out).unlink(missing_ok=True)
    data["tty_mb"] = written[0] / 1e6
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 s runs instead of 20 s")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--hosts", type=int, nargs="*", default=None)
    parser.add_argument("--rate", type=int, nargs="*", default=None)
    parser.add_argument(
        "--mode", default=None, help="batched, merged (the fleet log shown) or naive"
    )
    parser.add_argument(
        "--merged", action="store_true", help="add a run with the merged fleet log shown"
    )
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.hosts = args.hosts[0]
        args.rate = args.rate[0]
        child(args)
        return
    duration = args.duration or (5.0 if args.quick else 20.0)
    hosts_list = args.hosts or [1000, 3000]
    rates = args.rate or [5000, 20000]
    modes = [args.mode] if args.mode else (["batched"] if args.no_naive else ["batched", "naive"])
    if args.merged and "merged" not in modes:
        modes.insert(1, "merged")
    load = os.getloadavg()[0]
    print(
        f"TUI flood: {duration:.0f} s per run, 120x40 pty, {os.cpu_count()} cores, load avg {load:.1f}"
    )
    header = (
        f"{'hosts':>6} {'ev/s':>6} {'mode':<8} {'keys':>4} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>8} "
        f"{'applied/s':>9} {'backlog':>8} {'CPU %':>6} {'gen %':>6} {'app %':>6} {'RSS MB':>7} {'paint ms':>8} {'fps':>5}"
    )
    print(header)
    print("-" * len(header))
    for hosts in hosts_list:
        for rate in rates:
            for mode in modes:
                r = run_one(hosts, rate, duration, mode)
                if "error" in r:
                    print(f"{hosts:>6} {rate:>6} {mode:<8} failed: {r['error']}")
                    continue
                print(
                    f"{r['hosts']:>6} {r['rate']:>6} {r['mode']:<8} {r['keys']:>4} {r['p50']:>7.0f} "
                    f"{r['p95']:>7.0f} {r['max']:>8.0f} {r['applied_per_s']:>9.0f} {r['backlog']:>8} "
                    f"{r['cpu']:>6.0f} {r['gen_cpu']:>6.0f} {r['cpu'] - r['gen_cpu']:>6.0f} "
                    f"{r['rss_mb']:>7.0f} {r['first_paint_ms']:>8.0f} {r['frames_per_s']:>5.1f}",
                    flush=True,
                )
    print(
        "\nbacklog: events received but not yet applied when the run ended. Batched mode "
        "applies every 100 ms, so up to ev/s ÷ 10 are always in flight; a backlog above "
        "that (and applied/s below ev/s) means the app fell behind."
    )


if __name__ == "__main__":
    main()

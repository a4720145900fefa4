"""Zero downtime, measured: HAProxy in front of N real sshd hosts, each running a small
real HTTP app (``tests/haproxy.py``: its restart stops the old process and starts the
new one), a load generator at a fixed rate through HAProxy for the whole of rolling
deploys (2 waves), counting every non-2xx answer and connection error. The same
deploys run without the balancer configured, then with it, in one run.

    python bench/zero_downtime.py                      # 6 hosts, 300 req/s, >= 10,000 requests each
    python bench/zero_downtime.py --rate 400 --min-requests 20000
    python bench/zero_downtime.py --quick              # 3 hosts, 200 req/s, >= 2,000 requests

Each mode deploys a new version again and again under one continuous load until the
load has sent ``--min-requests``; the table gives requests, failures (by kind), the
rate reached (``late``: requests sent more than 1 s after their time, none when the
client pool keeps up) and the median wall time of one deploy. ``with`` drives HAProxy's admin
socket over SSH on the first host (``[balancer] host``), as an operator's separate
balancer host would be. Runs as root in shipdeck's environment; needs haproxy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.config import load_config  # noqa: E402
from engine.deploy import Deployment  # noqa: E402
from engine.localfleet import commit_version  # noqa: E402
from tests.haproxy import (  # noqa: E402
    HAProxy,
    Load,
    StatWatch,
    free_port,
    install_app_env,
    make_web_repo,
    stop_apps,
)
from tests.sshd import SshdFleet  # noqa: E402


def write_config(root: Path, name: str, fleet, repo: Path, lb: HAProxy | None) -> Path:
    lines = [
        "[project]",
        'name = "web"',
        f'repo = "{repo}"',
        "[build]",
        'commands = ["sh build.sh"]',
        'artifact = "dist"',
        "[deploy]",
        'path = "app"',
        'after_activate = ["./bin/restart"]',
        'health = "./bin/health"',
        "health_timeout = 15",
        "health_interval = 0.1",
        'batches = ["50%", "100%"]',
        "[ssh]",
        f'identity = "{fleet.client_key}"',
        f'known_hosts = "{fleet.known_hosts}"',
        'config = ""',
        "[hosts]",
        "web = [" + ", ".join(f'"{h.spec}"' for h in fleet.hosts) + "]",
    ]
    if lb is not None:
        lines += [
            "[balancer]",
            f'host = "{fleet.hosts[0].spec}"',
            f'socket = "{lb.sock}"',
            'backend = "web"',
            'server = "{host}"',
            "drain_timeout = 10",
        ]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


class Mode:
    def __init__(self, name: str) -> None:
        self.name = name
        self.walls: list[float] = []
        self.deploys_failed = 0
        self.load: Load | None = None
        self.max_out = 0


async def run_mode(mode: Mode, config, repo: Path, lb: HAProxy, args, version: list[int]) -> None:
    with (
        StatWatch(lb, every=0.05) as watch,
        Load(lb.port, rate=args.rate, workers=args.workers) as load,
    ):
        mode.load = load
        while load.total < args.min_requests or not mode.walls:
            version[0] += 1
            commit_version(repo, f"{version[0]}.0.0")
            started = time.monotonic()
            result = await Deployment(config).run()
            mode.walls.append(time.monotonic() - started)
            mode.deploys_failed += result.exit_code != 0
            print(
                f"  {mode.name}: deploy {len(mode.walls)} exit {result.exit_code} in "
                f"{mode.walls[-1]:.1f}s; {load.total} requests, {load.failed} failed",
                file=sys.stderr,
                flush=True,
            )
    mode.max_out = watch.out_at_once


def table(modes: list[Mode], args) -> str:
    rows = [
        "| balancer | deploys | requests | failed | failure kinds | req/s | late | deploy wall (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in modes:
        load = m.load
        assert load is not None
        kinds = ", ".join(f"{k} x{v}" for k, v in load.errors.most_common()) or "-"
        bad = f" ({m.deploys_failed} failed)" if m.deploys_failed else ""
        rows.append(
            f"| {m.name} | {len(m.walls)}{bad} | {load.total:,} | {load.failed:,} | {kinds} "
            f"| {load.rate:.0f} | {load.late} | {statistics.median(m.walls):.2f}s |"
        )
    return "\n".join(rows)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=6)
    p.add_argument("--rate", type=float, default=300.0, help="requests/s through HAProxy")
    p.add_argument("--min-requests", type=int, default=10_000, help="per mode")
    p.add_argument("--workers", type=int, default=128, help="keep-alive clients in the pool")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.hosts, args.rate, args.min_requests = 3, 200.0, 2_000
    os.environ.setdefault("SHIPDECK_OPERATOR", "bench")
    root = Path(tempfile.mkdtemp(prefix="shipdeck-zd-"))
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    os.environ["XDG_STATE_HOME"] = str(root / "state")
    with SshdFleet(root / "sshd", args.hosts) as fleet:
        repo = make_web_repo(root / "repo")
        port = free_port(fleet.hosts[0].addr)
        install_app_env(fleet.hosts, port)
        lb = HAProxy(fleet.root / "lb", [(h.addr, h.addr, port) for h in fleet.hosts]).start()
        try:
            plain = load_config(write_config(root, "plain.toml", fleet, repo, None))
            drained = load_config(write_config(root, "lb.toml", fleet, repo, lb))
            first = await Deployment(plain).run()  # the apps start
            assert first.exit_code == 0, first.summary
            version = [1]
            modes = [Mode("without"), Mode("with HAProxy drain")]
            await run_mode(modes[0], plain, repo, lb, args, version)
            await run_mode(modes[1], drained, repo, lb, args, version)
        finally:
            lb.stop()
            stop_apps(fleet.hosts)
    shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{args.hosts} hosts, 2 waves (50%, 100%), load {args.rate:g} req/s "
        f"(fixed arrival rate, {args.workers} keep-alive clients, 1 in 4 requests takes 150 ms), >= {args.min_requests:,} "
        "requests per mode\n"
    )
    print(table(modes, args))


if __name__ == "__main__":
    asyncio.run(main())

"""Upload benchmark (issue 6): a 100 MiB artifact (random data) to 1 and 10 real
sshd hosts on loopback, shipdeck's upload (engine.ssh ``Host.run`` with the file on stdin, as a deploy
uses it) vs OpenSSH's ``scp`` (SFTP protocol, its default), ``scp -O`` (the legacy
SCP protocol) and ``sftp`` (batch ``put``).

    python bench/upload.py                    # 1 and 10 hosts, 3 runs, median
    python bench/upload.py --n 1 --runs 1 --size-mib 20

Connections are opened before the clock starts for every tool (OpenSSH through a
ControlMaster per host), so the table compares transfer throughput, not handshakes.
With several hosts, all transfers run at once and MB/s is total bytes / wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _hosts import fleet, median, write_shipdeck_config

TOOLS = ["shipdeck", "scp", "scp -O", "sftp"]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _proc_cpu(pid: int) -> float:
    """user+sys seconds of a live process (the ControlMasters, which do the crypto)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OpenSSH:
    """One ControlMaster per host; scp/sftp ride on it. Client CPU = the scp/sftp
    processes plus the masters (which encrypt)."""

    def __init__(self, f, work: Path):
        self.f = f
        self.cp = Path(tempfile.mkdtemp(prefix="up", dir="/tmp"))
        self.masters: list[subprocess.Popen] = []

    def opts(self, h) -> list[str]:
        return [
            "-i",
            str(self.f.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.f.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ControlPath={self.cp}/{h.name}",
            "-F",
            "/dev/null",
        ]

    def start(self) -> None:
        for h in self.f.hosts:
            p = subprocess.Popen(
                ["ssh", *self.opts(h), "-o", "ControlMaster=yes", "-N", "-p", str(h.port)]
                + [f"{h.user}@{h.addr}"],
                stdin=subprocess.DEVNULL,
            )
            self.masters.append(p)
        deadline = time.monotonic() + 20
        for h in self.f.hosts:
            while not (self.cp / h.name).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ControlMaster for {h.name} did not come up")
                time.sleep(0.01)

    def stop(self) -> None:
        for p in self.masters:
            p.terminate()
        for p in self.masters:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.cp, ignore_errors=True)

    def command(self, tool: str, h, local: Path, remote: str, batch_dir: Path) -> list[str]:
        if tool == "sftp":
            batch = batch_dir / f"{h.name}.batch"
            batch.write_text(f"put {local} {remote}\n")
            return ["sftp", *self.opts(h), "-P", str(h.port), "-b", str(batch)] + [
                f"{h.user}@{h.addr}"
            ]
        legacy = ["-O"] if tool == "scp -O" else []
        return ["scp", *legacy, "-q", *self.opts(h), "-P", str(h.port), str(local)] + [
            f"{h.user}@{h.addr}:{remote}"
        ]

    def run(self, tool: str, local: Path, remote: str, batch_dir: Path) -> tuple[float, float]:
        cpu0 = _children_cpu() + sum(_proc_cpu(m.pid) for m in self.masters)
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                self.command(tool, h, local, remote, batch_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            for h in self.f.hosts
        ]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        if any(codes):
            raise RuntimeError(f"{tool} failed: exit codes {codes}")
        return wall, _children_cpu() + sum(_proc_cpu(m.pid) for m in self.masters) - cpu0


async def shipdeck_upload(f, work: Path, local: Path, runs: int) -> list[tuple[float, float]]:
    """engine.ssh: one connection per host (opened first), then the upload a deploy does
    (the file on a command's stdin, as the upload step sends it) to all at once."""
    from engine.config import load_config
    from engine.ssh import Connector

    cfg = load_config(write_shipdeck_config(work / "shipdeck.toml", f, work, "sd"))
    connector = Connector(cfg.ssh, cfg.base_dir)
    out = []
    try:
        hosts = await asyncio.gather(*(connector.connect(s) for s in cfg.select_hosts(None)))
        for rnd in range(runs):
            cpu0 = _self_cpu()
            t0 = time.perf_counter()
            # the deploy's path: the artifact on the host's shell session, read by
            # the upload step with head -c (exactly its bytes)
            size = local.stat().st_size
            await asyncio.gather(
                *(
                    h.run(f"head -c {size} > shipdeck-{rnd}.bin", stdin_file=local, timeout=600)
                    for h in hosts
                )
            )
            out.append((time.perf_counter() - t0, _self_cpu() - cpu0))
            for h in f.hosts:
                _check_and_remove(h.home / f"shipdeck-{rnd}.bin", local.stat().st_size)
    finally:
        await connector.close()
    return out


def _check_and_remove(path: Path, size: int) -> None:
    got = path.stat().st_size
    path.unlink()
    if got != size:
        raise RuntimeError(f"{path}: {got} bytes, expected {size}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", default="1,10", help="host counts")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--tools", default=",".join(TOOLS))
    args = ap.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    tools = args.tools.split(",")
    size = args.size_mib << 20
    work = Path(tempfile.mkdtemp(prefix="shipdeck-upload-"))
    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
    try:
        local = work / "artifact.tar.gz"
        with open(local, "wb") as fh:
            for _ in range(args.size_mib):
                fh.write(os.urandom(1 << 20))
        for n in ns:
            print(f"== {n} host(s)", file=sys.stderr, flush=True)
            nd = work / f"n{n}"
            nd.mkdir()
            with fleet(nd / "fleet", n) as f:
                ossh = OpenSSH(f, nd)
                ossh.start()
                try:
                    for tool in tools:
                        if tool == "shipdeck":
                            res = asyncio.run(shipdeck_upload(f, nd, local, args.runs))
                        else:
                            res = []
                            for rnd in range(args.runs):
                                remote = f"{tool.replace(' ', '')}-{rnd}.bin"
                                res.append(ossh.run(tool, local, remote, nd))
                                for h in f.hosts:
                                    _check_and_remove(h.home / remote, size)
                        results[(n, tool)] = res
                        for wall, cpu in res:
                            print(
                                f"   {n:>3} host(s) {tool:<9} {wall:6.2f}s "
                                f"{size * n / wall / 1e6:7.1f} MB/s cpu {cpu:.2f}s",
                                file=sys.stderr,
                                flush=True,
                            )
                finally:
                    ossh.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n# upload benchmark: {args.size_mib} MiB of random data, median of {args.runs}\n")
    print(
        "| hosts | tool | wall s | MB/s (total) | MB/s per host | client CPU s | vs best OpenSSH |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in ns:
        best = max(
            (n * size / median([w for w, _ in results[(n, t)]]) for t in tools if t != "shipdeck"),
            default=0.0,
        )
        for t in tools:
            walls = [w for w, _ in results[(n, t)]]
            cpus = [c for _, c in results[(n, t)]]
            w = median(walls)
            mbs = n * size / w / 1e6
            rel = f"{mbs * 1e6 / best:.0%}" if best else "-"
            print(
                f"| {n} | {t} | {w:.2f} | {mbs:.0f} | {mbs / n:.0f} | {median(cpus):.2f} | {rel} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What every peer script shares: arguments, the per-host workload, the result line.

Per host (the workload of issue 6): make the release dir, upload the tarball, unpack,
switch ``current`` atomically, restart, health check -- five commands and one SFTP
upload, over one connection per host.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def args(threads: int | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--hosts", required=True, help="JSON written by bench/_hosts.py")
    p.add_argument("--tarball", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--path", default="app", help="deploy path, relative to the login home")
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--cap", type=int, default=10, help="handshakes in flight (asyncssh floor)")
    a = p.parse_args()
    with open(a.hosts) as fh:
        a.fleet = json.load(fh)
    return a


def remote(a: argparse.Namespace) -> str:
    return f"{a.path}/artifacts/{a.release}.tar.gz"


def steps(a: argparse.Namespace) -> dict[str, str]:
    """The five remote commands, in order (the upload goes between mkdir and unpack)."""
    p, r = a.path, a.release
    return {
        "mkdir": f"mkdir -p {p}/releases/{r} {p}/artifacts",
        "unpack": f"tar -xzf {p}/artifacts/{r}.tar.gz -C {p}/releases/{r}",
        "switch": f"cd {p} && ln -sfn releases/{r} current.tmp && mv -T current.tmp current",
        "restart": f"cd {p}/current && sh -c 'sleep 0.05; echo restarted'",
        "health": f"cd {p}/current && test -f HEALTH && echo healthy",
    }


class Tally:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.retries = 0
        self.errors: list[str] = []
        self.started = time.perf_counter()

    def fail(self, host: str, exc: BaseException) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{host}: {type(exc).__name__}: {exc}"[:300])

    def report(self) -> int:
        print(
            json.dumps(
                {
                    "ok": self.ok,
                    "failed": self.failed,
                    "retries": self.retries,
                    "errors": self.errors,
                    "seconds": round(time.perf_counter() - self.started, 3),
                }
            )
        )
        sys.stdout.flush()
        return 0 if self.failed == 0 else 1

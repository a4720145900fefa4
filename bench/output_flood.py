"""A hook that floods its output: the deploying process's peak RSS.

On one real sshd host on loopback, an ``after_activate`` hook prints N MB (default
400) either as one line with no newline, or as 100-byte lines. ``shipdeck deploy
--headless`` runs it; the table gives its peak RSS (VmHWM) against a baseline deploy
whose hook prints nothing, and the size of the longest line in the transcript.

    python bench/output_flood.py [--mb 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.localfleet import make_sample_repo  # noqa: E402
from tests.sshd import SshdFleet  # noqa: E402

HOOKS = {
    "baseline (hook prints nothing)": "true",
    "one line, no newline": "head -c {n} /dev/zero | tr '\\0' x",
    "100-byte lines": "head -c {n} /dev/zero | tr '\\0' x | fold -w 99",
}


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, int, float]:
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    return peak / 1024, proc.returncode or 0, time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=400)
    args = ap.parse_args()
    n = args.mb * 1_000_000
    rows = []
    with tempfile.TemporaryDirectory(prefix="shipdeck-bench-") as tmp:
        root = Path(tmp)
        with SshdFleet(root / "fleet", 1) as fleet:
            repo = make_sample_repo(root / "repo")
            for label, hook in HOOKS.items():
                state = root / f"state-{len(rows)}"
                cfg = root / f"c{len(rows)}.toml"
                cfg.write_text(
                    "\n".join(
                        [
                            "[project]",
                            'name = "flood"',
                            f'repo = "{repo}"',
                            "[deploy]",
                            'path = "app"',
                            f"after_activate = {json.dumps([hook.format(n=n)])}",
                            "hook_timeout = 600",
                            "[ssh]",
                            f'identity = "{fleet.client_key}"',
                            f'known_hosts = "{fleet.known_hosts}"',
                            'config = ""',
                            "[hosts]",
                            f'web = ["{fleet.hosts[0].spec}"]',
                        ]
                    )
                    + "\n"
                )
                env = {
                    **os.environ,
                    "XDG_STATE_HOME": str(state),
                    "XDG_CACHE_HOME": str(root / "cache"),
                }
                cmd = [sys.executable, "-m", "tui.cli", "deploy", "-c", str(cfg), "--headless"]
                rss, code, secs = peak_rss_mb(cmd, env)
                longest = 0
                for t in state.rglob("*.jsonl"):
                    with open(t, "rb") as f:
                        for raw in f:
                            longest = max(longest, len(raw))
                rows.append((label, rss, code, secs, longest))
    print(
        f"\nhook output: {args.mb} MB, one real sshd host; peak RSS of `shipdeck deploy --headless`\n"
    )
    print(f"| {'hook':<32} | peak RSS MB | exit | seconds | longest transcript line |")
    print(f"|{'-' * 34}|------------:|-----:|--------:|------------------------:|")
    for label, rss, code, secs, longest in rows:
        print(f"| {label:<32} | {rss:11.1f} | {code:4d} | {secs:7.1f} | {longest:23,d} |")


if __name__ == "__main__":
    main()

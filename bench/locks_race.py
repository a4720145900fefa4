"""Colliding operators (issue 12): pairs of ``shipdeck deploy --headless`` started at
the same moment against the same real OpenSSH hosts, refs ``main`` and ``other``.

Scenarios, ``--pairs`` each (default 10):
  plain   two deploys, nothing else
  stale   a stale lock (heartbeat an hour old, owner "ghost") planted on every host
  pidns   like plain, the second one in another PID namespace
          (``unshare --pid --fork --mount-proc``): same hostname, other pid space

After each pair it reads every host (``current``, the lock) and counts: mixed fleet
(hosts on different releases), false OK (exit 0 although a host is not on that
deploy's release), double takeover (two processes took over the same host's lock),
locks left behind. Every column but the winners must be 0.

    python bench/locks_race.py               # 4 hosts, 10 pairs per scenario
    python bench/locks_race.py --pairs 3 --hosts 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.localfleet import commit_version, make_sample_repo  # noqa: E402
from tests.sshd import SshdFleet  # noqa: E402


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def write_config(path: Path, fleet: SshdFleet, repo: Path) -> Path:
    hosts = ", ".join(f'"{h.spec}"' for h in fleet.hosts)
    path.write_text(
        "\n".join(
            [
                "[project]",
                'name = "race"',
                f'repo = "{repo}"',
                "[build]",
                'commands = ["sh build.sh"]',
                'artifact = "dist"',
                "[deploy]",
                'path = "app"',
                # a second of work per host, so that the two deploys overlap
                'before_activate = ["sleep 1"]',
                'after_activate = ["./bin/restart"]',
                'health = "./bin/health"',
                "health_timeout = 5",
                "health_interval = 0.2",
                "[ssh]",
                f'identity = "{fleet.client_key}"',
                f'known_hosts = "{fleet.known_hosts}"',
                'config = ""',
                "connect_timeout = 5",
                "[hosts]",
                f"web = [{hosts}]",
                "",
            ]
        )
    )
    return path


def current(app: Path) -> str | None:
    link = app / "current"
    return os.readlink(link).rsplit("/", 1)[-1] if link.is_symlink() else None


def plant_stale(fleet: SshdFleet) -> None:
    for h in fleet.hosts:
        lock = h.home / "app" / ".shipdeck.lock"
        lock.mkdir(parents=True, exist_ok=True)
        owner = {"operator": "ghost", "deploy_id": "20260101T000000Z-60057a", "ttl": 60}
        (lock / "owner").write_text(json.dumps(owner) + "\n")
        (lock / "hb").write_text(f"{int(time.time()) - 3600}\n")
        for p in (h.home / "app", lock, lock / "owner", lock / "hb"):
            shutil.chown(p, h.user)


def start(
    config: Path, ref: str, operator: str, env: dict[str, str], pidns: bool
) -> subprocess.Popen[str]:
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if pidns else []
    return subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "tui.cli",
            "deploy",
            "-c",
            str(config),
            "--headless",
            "--ref",
            ref,
        ],
        cwd=REPO,
        env={**env, "SHIPDECK_OPERATOR": operator},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def deploy_id_of(output: str) -> str:
    """The deploy id from the headless header: ``deploy web@main ... [<id>]``."""
    first = output.splitlines()[0] if output.strip() else ""
    return first.rsplit("[", 1)[-1].rstrip("]") if first.startswith("deploy ") else "?"


def revisions(app: Path) -> list[str]:
    f = app / "revisions.log"
    return f.read_text().splitlines() if f.exists() else []


def ids_in(lines: list[str], outputs: tuple[str, str]) -> list[str]:
    ids = [deploy_id_of(o) for o in outputs]
    return [i for line in lines for i in ids if f"deploy={i}" in line]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--hosts", type=int, default=4)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shipdeck-race-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "CI": "true",
    }
    repo = make_sample_repo(root / "repo")
    git(repo, "checkout", "-q", "-b", "other")
    commit_version(repo, "9.0.0")
    git(repo, "checkout", "-q", "main")
    rows = []
    with SshdFleet(root / "fleet", args.hosts) as fleet:
        config = write_config(root / "shipdeck.toml", fleet, repo)
        for scenario in ("plain", "stale", "pidns"):
            c = dict(
                a=0,
                b=0,
                both=0,
                none=0,
                mixed=0,
                interleaved=0,
                false_ok=0,
                double=0,
                left=0,
                other=0,
            )
            for _ in range(args.pairs):
                if scenario == "stale":
                    plant_stale(fleet)
                pa = start(config, "main", "alice", env, False)
                pb = start(config, "other", "bob", env, scenario == "pidns")
                out_a, _ = pa.communicate(timeout=300)
                out_b, _ = pb.communicate(timeout=300)
                fleet_now = {current(h.home / "app") for h in fleet.hosts}
                if len(fleet_now) > 1:
                    c["mixed"] += 1
                logs = [revisions(h.home / "app") for h in fleet.hosts]
                order = {tuple(ids_in(lines, (out_a, out_b))) for lines in logs}
                if len(order) > 1:  # hosts saw the two deploys in different orders
                    c["interleaved"] += 1
                for rc, out in ((pa.returncode, out_a), (pb.returncode, out_b)):
                    did = deploy_id_of(out)
                    if rc == 0 and not all(f"deploy={did}" in "\n".join(lg) for lg in logs):
                        c["false_ok"] += 1  # said OK, a host has no ok line of it
                    if rc == 0 and any(
                        f"deploy={did}" in line and "outcome=ok" not in line
                        for lg in logs
                        for line in lg
                    ):
                        c["false_ok"] += 1
                    if rc not in (0, 3):
                        c["other"] += 1
                        print(out[-2000:], file=sys.stderr)
                wins = (pa.returncode == 0, pb.returncode == 0)
                key = {(True, False): "a", (False, True): "b", (True, True): "both"}.get(
                    wins, "none"
                )
                c[key] += 1
                for h in fleet.hosts:
                    took = sum(
                        f"{h.spec}: took over the lock of ghost" in out for out in (out_a, out_b)
                    )
                    c["double"] += took > 1
                c["left"] += sum((h.home / "app" / ".shipdeck.lock").exists() for h in fleet.hosts)
            rows.append((scenario, c))
    shutil.rmtree(root, ignore_errors=True)
    cols = ["a", "b", "both", "none", "mixed", "interleaved", "false_ok", "double", "left", "other"]
    names = [
        "A ok",
        "B ok",
        "both*",
        "none",
        "mixed",
        "interl.",
        "falseOK",
        "2xtake",
        "locks",
        "other",
    ]
    print(f"{'scenario':<8} {'pairs':>5} " + " ".join(f"{n:>7}" for n in names))
    for scenario, c in rows:
        print(f"{scenario:<8} {args.pairs:>5} " + " ".join(f"{c[k]:>7}" for k in cols))
    print(
        "both*: one after the other (serialised: same order on every host). "
        "Must be 0: mixed, interl., falseOK, 2xtake, locks, other."
    )
    bad = sum(
        c["mixed"] + c["interleaved"] + c["false_ok"] + c["double"] + c["left"] + c["other"]
        for _, c in rows
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

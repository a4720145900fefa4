"""Large artifacts through a bastion (issue 17): bytes across the bastion's link and
wall time, shipdeck against ``rsync -e ssh`` and Fabric ``put`` to each host.

N real sshd hosts (``tests/sshd.py``) behind one bastion sshd; the clients reach the
bastion through a rate-limiting, byte-counting TCP proxy on 127.0.0.1
(``tests/throttle.py``, 100 Mbit/s by default: a thin link; ``lo`` is never shaped).
Two releases, each tool deploying to its own folder on every host:

1. first deploy: an artifact of SIZE MiB (1 MiB files of random data);
2. one 1 MiB file changed.

Then (shipdeck only, unless ``--no-resume``) a release of all-new content is killed
(SIGKILL) mid-upload and run again: the rerun resumes.

For the change, ``floor`` is the least the hosts themselves must do when each rebuilds
the artifact from a patch and checks its sha256 before unpacking (what issue 17 asks
of a delta): N shells at once on this machine, each ``zstd -d --patch-from`` of the
same 1 MiB patch against its own copy of the previous tar, ``openssl dgst -sha256``,
``tar -x``; no SSH, no network, no deploy tool.

    python bench/large_artifact.py            # 100 MiB, 20 hosts, 100 Mbit/s (~10 min)
    python bench/large_artifact.py --quick    # 20 MiB, 6 hosts (~1 min)

Peers: rsync (apt-get install rsync) with ``ssh -J`` through the proxy, all hosts at
once; Fabric from bench/.venv (created on demand), one gateway connection to the
bastion, a thread per host, ``put`` of the tar.gz then ``tar -xzf``. The bastion's
sshd has ``MaxStartups 100:30:200`` here: rsync opens one jump connection per host.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _hosts import PEERS, REPO, ensure_venv, fleet, git, init_repo, write_shipdeck_config

from engine.build import _pack
from tests.throttle import ThrottledProxy

MB = 1 << 20


def write_tree(dist: Path, size_mb: int) -> None:
    dist.mkdir(parents=True, exist_ok=True)
    for i in range(size_mb):
        (dist / f"blob{i:04d}.bin").write_bytes(os.urandom(MB))
    (dist / "HEALTH").write_text("ok\n")


def setup_ssh(f, proxy: ThrottledProxy, root: Path) -> tuple[str, Path]:
    """The bastion's key known at the proxy's port; an OpenSSH config for rsync."""
    b = f.bastion
    lines = f.known_hosts.read_text().splitlines()
    key = next(ln for ln in lines if ln.startswith(f"[{b.addr}]:{b.port} ")).split(" ", 1)[1]
    with open(f.known_hosts, "a") as fh:
        fh.write(f"[127.0.0.1]:{proxy.port} {key}\n")
    common = [
        f"    IdentityFile {f.client_key}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {f.known_hosts}",
        "    StrictHostKeyChecking yes",
    ]
    blocks = [
        "Host bastion",
        "    HostName 127.0.0.1",
        f"    Port {proxy.port}",
        f"    User {b.user}",
    ]
    blocks += common
    for h in f.hosts:
        blocks += [
            f"Host {h.name}",
            f"    HostName {h.addr}",
            f"    Port {h.port}",
            f"    User {h.user}",
        ]
        blocks += common + ["    ProxyJump bastion"]
    cfg = root / "ssh_config"
    cfg.write_text("\n".join(blocks) + "\n")
    return f"{b.user}@127.0.0.1:{proxy.port}", cfg


def shipdeck_config(path: Path, f, repo: Path, jump: str) -> Path:
    steps = ('health = "test -f HEALTH && echo healthy"', "health_timeout = 30", "health_interval = 0.2")
    ssh = ("connect_timeout = 30", "command_timeout = 900", f'jump = "{jump}"')
    return write_shipdeck_config(path, f, repo, "sd", steps=steps, ssh=ssh)


def run_shipdeck(cfg: Path, env: dict[str, str], *extra: str) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "tui.cli", "deploy", "-c", str(cfg), "--headless", "--yes", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - t0
    lines = out.stdout.splitlines()
    if out.returncode != 0:
        raise SystemExit(
            f"shipdeck failed ({out.returncode}):\n" + "\n".join(lines[-30:]) + out.stderr[-2000:]
        )
    return wall, lines


def run_rsync(f, cfg: Path, dist: Path) -> float:
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["rsync", "-a", "--delete", "-e", f"ssh -F {cfg}", f"{dist}/", f"{h.name}:peer-rsync/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for h in f.hosts
    ]
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"rsync failed: {err.decode()[-500:]}")
    return time.perf_counter() - t0


def run_fabric(venv_py: Path, fleet_json: Path, dist: Path, work: Path) -> float:
    tarball = work / "artifact.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(dist), "."], check=True)
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(venv_py), str(PEERS / "fabric_put.py"), str(fleet_json), str(tarball), "peer-fabric"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if out.returncode != 0:
        raise SystemExit(f"fabric failed: {out.stderr[-1500:]}")
    return time.perf_counter() - t0


def host_work_floor(old: Path, new: Path, n: int, work: Path) -> float:
    """Wall seconds for n hosts' own work on a delta (see the module's doc): rebuild
    ``new`` from a patch against ``old``, hash it, unpack it, all n at once."""
    work.mkdir(parents=True, exist_ok=True)  # (zstd 1.5.4 crashes writing into a missing folder)
    patch = work / "floor.patch"
    zstd = ["zstd", "-q", "-f", "--long=31", f"--patch-from={old}", str(new), "-o", str(patch)]
    subprocess.run(zstd, check=True)
    dirs = []
    for i in range(n):
        d = work / f"floor-h{i}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        shutil.copyfile(old, d / "base.tar")
        dirs.append(d)
    work_sh = (
        'zstd -dcq --long=31 --patch-from=base.tar < "$1" > new.tar'
        " && openssl dgst -sha256 -r new.tar >/dev/null && mkdir r && tar -xf new.tar -C r"
    )
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["sh", "-c", work_sh, "sh", str(patch)], cwd=d) for d in dirs]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("the host-work floor failed")
    wall = time.perf_counter() - t0
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return wall


def summary_of(lines: list[str]) -> list[str]:
    at = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith("finished:")), None)
    return lines[at:] if at is not None else lines[-3:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 MiB to 6 hosts")
    ap.add_argument("--size", type=int, default=None, help="artifact MiB (default 100)")
    ap.add_argument("--hosts", type=int, default=None, help="hosts (default 20)")
    ap.add_argument("--mbit", type=float, default=100.0, help="the bastion link's rate")
    ap.add_argument("--tools", default="shipdeck,rsync,fabric,floor")
    ap.add_argument("--no-resume", action="store_true", help="skip the killed-upload run")
    ap.add_argument("--log", type=Path, help="keep each shipdeck run's headless output here")
    a = ap.parse_args()
    size = a.size or (20 if a.quick else 100)
    n = a.hosts or (6 if a.quick else 20)
    tools = [t for t in a.tools.split(",") if t]
    venv_py = ensure_venv(["fabric"]) if "fabric" in tools else None

    root = Path(tempfile.mkdtemp(prefix="shipdeck-bench-large-"))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_STATE_HOME": str(root / "state"),
    }
    rows: list[tuple[str, str, float, int]] = []
    notes: list[str] = []
    try:
        measure(a, root, env, size, n, tools, venv_py, rows, notes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(rows, size, n, a.mbit))
    print()
    print("\n".join(notes))


def measure(a, root, env, size, n, tools, venv_py, rows, notes) -> None:  # noqa: ANN001
    """Both releases with every tool (rows: scenario, tool, wall, bytes), then the
    killed-and-resumed one (notes)."""
    with (
        fleet(root / "fleet", n, bastion=True, user_keys=True, max_startups="100:30:200") as f,
        ThrottledProxy("127.0.0.1", f.bastion.port, rate=a.mbit * 1e6 / 8) as link,
    ):
        jump, ssh_cfg = setup_ssh(f, link, root)
        fleet_json = root / "fleet.json"
        b = f.bastion
        fleet_json.write_text(
            json.dumps(
                {
                    "key": str(f.client_key),
                    "known_hosts": str(f.known_hosts),
                    "bastion": {"addr": "127.0.0.1", "port": link.port, "user": b.user},
                    "hosts": [{"addr": h.addr, "port": h.port, "user": h.user} for h in f.hosts],
                }
            )
        )
        repo = init_repo(root / "repo")
        dist = repo / "dist"
        write_tree(dist, size)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "first")
        cfg = shipdeck_config(root / "shipdeck.toml", f, repo, jump)
        print(f"{n} hosts behind a bastion at {a.mbit:g} Mbit/s, artifact {size} MiB", flush=True)

        for scenario in ("first deploy", "one 1 MiB file changed"):
            if scenario != "first deploy":
                old = _pack(dist, root / "floor-old").path
                (dist / "blob0007.bin").write_bytes(os.urandom(MB))
                git(repo, "commit", "-qam", "one file")
            for tool in tools:
                if tool == "floor":
                    if scenario != "first deploy":
                        new = _pack(dist, root / "floor-new").path
                        wall = host_work_floor(old, new, n, root / "floor")
                        rows.append((scenario, "host-work floor", wall, 0))
                        print(f"  {scenario:24} {'floor':9} {wall:7.1f}s", flush=True)
                    continue
                link.reset()
                if tool == "shipdeck":
                    wall, lines = run_shipdeck(cfg, env, "--verbose")
                    if a.log:
                        a.log.mkdir(parents=True, exist_ok=True)
                        (a.log / f"{scenario.split()[0]}.log").write_text("\n".join(lines) + "\n")
                    notes += [f"shipdeck, {scenario}:", *("  " + ln for ln in summary_of(lines))]
                elif tool == "rsync":
                    wall = run_rsync(f, ssh_cfg, dist)
                else:
                    assert venv_py is not None
                    wall = run_fabric(venv_py, fleet_json, dist, root)
                rows.append((scenario, tool, wall, link.total))
                print(
                    f"  {scenario:24} {tool:9} {wall:7.1f}s {link.total / MB:9.1f} MiB", flush=True
                )

        if "shipdeck" in tools and not a.no_resume:
            notes += resume_demo(f, cfg, env, dist, repo, link, size)


def resume_demo(
    f, cfg: Path, env: dict[str, str], dist: Path, repo: Path, link, size: int
) -> list[str]:
    """All-new content (a full upload), the client killed once a host holds 40% of
    it, then run again."""
    write_tree(dist, size)
    git(repo, "commit", "-qam", "all new")
    link.reset()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "deploy", "-c", str(cfg), "--headless", "--yes"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    want = size * MB * 0.4
    biggest = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        parts = [p for h in f.hosts for p in (h.home / "sd" / "artifacts").glob("*.part")]
        biggest = max((p.stat().st_size for p in parts if p.exists()), default=0)
        if biggest >= want:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = link.total
    kept = max(
        (p.stat().st_size for h in f.hosts for p in (h.home / "sd" / "artifacts").glob("*.part")),
        default=0,
    )
    link.reset()
    wall, lines = run_shipdeck(cfg, env)  # the dead client's locks are taken over at once
    resumed = [ln for ln in lines if " resume " in ln or "resume:" in ln]
    return [
        "",
        f"killed mid-upload: {before / MB:.1f} MiB had crossed the bastion; {kept / MB:.1f} MiB kept in a .part",
        f"rerun: {wall:.1f}s, {link.total / MB:.1f} MiB across the bastion",
        *("  " + ln for ln in resumed[:3]),
        *("  " + ln for ln in summary_of(lines)),
    ]


def table(rows: list[tuple[str, str, float, int]], size: int, n: int, mbit: float) -> str:
    out = [
        f"{n} hosts, {size} MiB artifact, bastion link {mbit:g} Mbit/s",
        "",
        "| scenario | tool | wall s | MiB across the bastion | × artifact | wall / shipdeck's |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ship = {s: w for s, t, w, _ in rows if t == "shipdeck"}
    for scenario, tool, wall, moved in rows:
        ratio = f"{wall / ship[scenario]:.1f}" if scenario in ship else "-"
        out.append(
            f"| {scenario} | {tool} | {wall:.1f} | {moved / MB:.1f} | {moved / (size * MB):.2f} | {ratio} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()

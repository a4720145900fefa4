"""Fan-out benchmark (issue 6): shipdeck's headless deploy vs the peers on N real
OpenSSH sshd hosts on loopback (sshd's default MaxStartups, 16 addresses per sshd).

Per host: make a release dir, upload a ~1 MiB tar.gz, unpack, switch ``current``
atomically, restart (``sh -c 'sleep 0.05; echo restarted'``), health command.

    python bench/fanout.py                      # N=1,10,50,100, 3 runs, every tool
    python bench/fanout.py --quick              # N=1,10, 1 run, the fast tools
    python bench/fanout.py --n 50 --runs 1 --tools shipdeck,floor
    python bench/fanout.py --ansible-max-n 50   # no Ansible above N=50

Runs as root in shipdeck's environment; the peers are installed into bench/.venv
from PyPI on first use. See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _hosts import (
    PEERS,
    REPO,
    VENV,
    Measured,
    become_subreaper,
    ensure_shipdeck,
    ensure_venv,
    fleet,
    fleet_pids,
    hosts_file,
    init_repo,
    last_json,
    make_tarball,
    measure,
    median,
    new_commit,
    random_tree,
    venv_has,
    write_shipdeck_config,
)

ARTIFACT_BYTES = 1 << 20  # random data: the tar.gz is ~1 MiB too

ALL_TOOLS = [
    "shipdeck",
    "floor",
    "paramiko-serial",
    "paramiko-pool",
    "fabric",
    "pyinfra",
    "ansible-pipelining",
    "ansible",
]
QUICK_TOOLS = ["shipdeck", "floor", "paramiko-pool", "fabric", "pyinfra"]
LABELS = {
    "shipdeck": "shipdeck (headless)",
    "floor": "asyncssh floor",
    "paramiko-serial": "paramiko serial",
    "paramiko-pool": "paramiko pool(10)",
    "fabric": "Fabric (threads)",
    "pyinfra": "pyinfra",
    "ansible-pipelining": "Ansible pipelining",
    "ansible": "Ansible",
}
NEEDS = {
    "floor": "asyncssh",
    "paramiko-serial": "paramiko",
    "paramiko-pool": "paramiko",
    "fabric": "fabric",
    "pyinfra": "pyinfra",
    "ansible-pipelining": "ansible",
    "ansible": "ansible",
}


@dataclass
class Run:
    m: Measured
    ok: bool
    note: str = ""
    retries: int = 0
    release_s: float | None = None  # shipdeck: the release phase alone (after fetch/package)


@dataclass
class Cell:
    runs: list[Run] = field(default_factory=list)
    skipped: str = ""

    @property
    def good(self) -> list[Run]:
        return [r for r in self.runs if r.ok]


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
        self._warm_mirror()
        self.venv_bin = VENV / "bin"
        self.shipdeck_bin: Path | None = None

    def _warm_mirror(self) -> None:
        """Clone shipdeck's git mirror once, so measured runs only fetch a commit."""
        old = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME",)}
        os.environ["XDG_CACHE_HOME"] = self.env["XDG_CACHE_HOME"]
        try:
            from engine import git as gitmod

            asyncio.run(gitmod.fetch(str(self.repo), "main"))
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    # -- one run of one tool -------------------------------------------------

    def run_tool(self, tool: str, f, n: int, rnd: int, hosts_json: Path, nd: Path) -> Run:
        exclude = fleet_pids(f)
        rid = f"r{rnd}-{int(time.time() * 1000) % 10**9}"
        path = f"peer-{tool}"
        if tool == "shipdeck":
            return self._shipdeck(f, n, rnd, nd, exclude)
        src = random_tree(nd / f"art-{tool}-{rnd}", ARTIFACT_BYTES)
        tarball = make_tarball(src, nd / f"art-{tool}-{rnd}.tar.gz")
        shutil.rmtree(src)
        common = ["--hosts", str(hosts_json), "--tarball", str(tarball), "--release", rid]
        common += ["--path", path]
        py = str(self.venv_bin / "python")
        env = dict(self.env)
        if tool == "floor":
            cmd = [py, str(PEERS / "asyncssh_floor.py"), *common, "--cap", "10"]
        elif tool == "paramiko-serial":
            cmd = [py, str(PEERS / "paramiko_peer.py"), *common, "--threads", "1"]
        elif tool == "paramiko-pool":
            cmd = [py, str(PEERS / "paramiko_peer.py"), *common, "--threads", "10"]
        elif tool == "fabric":
            cmd = [py, str(PEERS / "fabric_peer.py"), *common]
        elif tool == "pyinfra":
            env["BENCH_HOSTS"] = str(hosts_json)
            cmd = [str(self.venv_bin / "pyinfra"), "-y"]
            if self.args.pyinfra_parallel:
                cmd += ["--parallel", str(self.args.pyinfra_parallel)]
            cmd += [str(PEERS / "pyinfra_inventory.py"), str(PEERS / "pyinfra_deploy.py")]
            for k, v in (("release", rid), ("tarball", str(tarball)), ("path", path)):
                cmd += ["--data", f"{k}={v}"]
        elif tool.startswith("ansible"):
            cmd, env = self._ansible(
                f, n, rnd, nd, tarball, rid, path, tool == "ansible-pipelining"
            )
        else:
            raise ValueError(tool)
        m = measure(cmd, env=env, cwd=nd, exclude=exclude, timeout=self.args.timeout)
        tarball.unlink(missing_ok=True)
        if "ANSIBLE_SSH_CONTROL_PATH_DIR" in env:
            shutil.rmtree(env["ANSIBLE_SSH_CONTROL_PATH_DIR"], ignore_errors=True)
        res = last_json(m.stdout)
        if tool.startswith("ansible") or tool == "pyinfra":
            ok = m.returncode == 0
            note = "" if ok else _tail(m.stdout + m.stderr)
            retries = 0
        else:
            ok = m.returncode == 0 and res.get("ok") == n
            note = "" if ok else "; ".join(res.get("errors", [])) or _tail(m.stderr)
            retries = int(res.get("retries", 0))
        return Run(m, ok, note, retries)

    def _shipdeck(self, f, n: int, rnd: int, nd: Path, exclude: set[int]) -> Run:
        new_commit(self.repo, ARTIFACT_BYTES, f"bench: N={n} run {rnd}")
        cfg = write_shipdeck_config(
            nd / "shipdeck.toml", f, self.repo, "sd", parallel=self.args.shipdeck_parallel
        )
        cmd = [str(self.shipdeck_bin), "deploy", "-c", str(cfg), "--json"]
        m = measure(cmd, env=self.env, cwd=nd, exclude=exclude, timeout=self.args.timeout)
        release_s = None
        t0 = t1 = None
        finished: dict = {}
        for line in m.stdout.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("type") == "status" and ev.get("key") == "release":
                if ev["status"] == "running":
                    t0 = ev["at"]
                elif ev["status"] in ("ok", "failed", "cancelled"):
                    t1 = ev["at"]
            elif ev.get("type") == "finished":
                finished = ev.get("summary", {})
        if t0 is not None and t1 is not None:
            release_s = t1 - t0
        ok = m.returncode == 0 and finished.get("ok") == n
        note = "" if ok else (json.dumps(finished.get("failures", {}))[:300] or _tail(m.stderr))
        return Run(m, ok, note, 0, release_s)

    def _ansible(self, f, n, rnd, nd, tarball, rid, path, pipelining):
        d = nd / f"ansible-{'p' if pipelining else 'np'}-{rnd}"
        d.mkdir()
        inv = d / "inventory.ini"
        lines = ["[bench]"]
        for h in f.hosts:
            lines.append(
                f"{h.name} ansible_host={h.addr} ansible_port={h.port} ansible_user={h.user}"
            )
        lines += [
            "[bench:vars]",
            f"ansible_ssh_private_key_file={f.client_key}",
            "ansible_python_interpreter=/usr/bin/python3",
        ]
        inv.write_text("\n".join(lines) + "\n")
        cp = Path(tempfile.mkdtemp(prefix="cp", dir="/tmp"))  # short: unix socket paths
        env = dict(self.env)
        env.update(
            ANSIBLE_HOME=str(nd / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(d / "tmp"),
            ANSIBLE_FORKS=str(n),
            ANSIBLE_PIPELINING="True" if pipelining else "False",
            ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_SSH_ARGS=(
                "-C -o ControlMaster=auto -o ControlPersist=60s "
                f"-o UserKnownHostsFile={f.known_hosts} -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes"
            ),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(cp),
            ANSIBLE_SSH_RETRIES="5",
            ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
            ANSIBLE_DISPLAY_SKIPPED_HOSTS="False",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="False",
            ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
        )
        cmd = [
            str(self.venv_bin / "ansible-playbook"),
            "-i",
            str(inv),
            str(PEERS / "ansible_playbook.yml"),
            "-e",
            f"release={rid} tarball={tarball} path={path}",
        ]
        return cmd, env


def profile(args: argparse.Namespace, n: int) -> int:
    """One shipdeck deploy to n hosts under py-spy (on-CPU samples): top costs."""
    ensure_venv()
    pyspy = VENV / "bin" / "py-spy"
    work = Path(tempfile.mkdtemp(prefix="shipdeck-profile-"))
    try:
        bench = Bench(args, work)
        nd = work / f"n{n}"
        nd.mkdir()
        with fleet(nd / "fleet", n) as f:
            for rnd in (1, 2):  # the first deploy creates the layout; profile the second
                new_commit(bench.repo, ARTIFACT_BYTES, f"bench: profile {rnd}")
                cfg = write_shipdeck_config(nd / "shipdeck.toml", f, bench.repo, "sd")
                cmd = [sys.executable, "-m", "tui.cli", "deploy", "-c", str(cfg), "--json"]
                raw = nd / "profile.txt"
                if rnd == 2:
                    cmd = [str(pyspy), "record", "-r", "500", "-f", "raw", "-o", str(raw)]
                    cmd += ["--", *[sys.executable, "-m", "tui.cli", "deploy", "-c", str(cfg)]]
                    cmd += ["--json"]
                out = subprocess.run(cmd, env=bench.env, cwd=REPO, capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-2000:], file=sys.stderr)
                    return 1
        stacks = []
        for line in raw.read_text().splitlines():
            frames, _, count = line.rpartition(" ")
            if frames and count.isdigit():
                stacks.append((frames.split(";"), int(count)))
        total = sum(c for _, c in stacks)
        incl: dict[str, int] = {}
        self_: dict[str, int] = {}
        mod_self: dict[str, int] = {}
        for frames, c in stacks:
            names = [_frame(fr) for fr in frames]
            for name in set(names):
                incl[name] = incl.get(name, 0) + c
            self_[names[-1]] = self_.get(names[-1], 0) + c
            m = _module(frames[-1])
            mod_self[m] = mod_self.get(m, 0) + c
        print(f"# py-spy: shipdeck deploy to {n} hosts, {total} on-CPU samples at 500 Hz\n")
        for title, table, k in (
            ("self time by module", mod_self, 15),
            ("self time by function", self_, 25),
            ("inclusive time by function", incl, 40),
        ):
            print(f"## {title}\n")
            for name, c in sorted(table.items(), key=lambda kv: -kv[1])[:k]:
                print(f"{100 * c / total:5.1f}%  {c / 500:6.2f}s  {name}")
            print()
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _frame(fr: str) -> str:
    """'func (path/to/file.py:123)' -> 'func (file.py)' so lines of one function merge."""
    func, _, where = fr.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{func} ({short})"


def _module(fr: str) -> str:
    where = fr.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    if "site-packages/" in where:
        return where.split("site-packages/", 1)[1].split("/", 1)[0]
    if str(REPO) in where:
        return where.split(str(REPO) + "/", 1)[1]
    if "/lib/python3" in where:
        return "stdlib:" + where.rsplit("/", 1)[-1]
    return where or "?"


def _tail(text: str, n: int = 300) -> str:
    return " ".join(text.strip().splitlines()[-4:])[-n:]


# --------------------------------------------------------------------------- tables


def fmt_s(x: float | None) -> str:
    return "-" if x is None else (f"{x:.2f}" if x < 100 else f"{x:.0f}")


def render(results: dict[int, dict[str, Cell]], tools: list[str], ns: list[int], runs: int) -> str:
    out: list[str] = []

    def cell_median(c: Cell | None) -> float | None:
        if c is None or not c.good:
            return None
        return median([r.m.wall for r in c.good])

    def status(c: Cell | None) -> str:
        if c is None:
            return "not run"
        if c.skipped:
            return c.skipped
        if not c.good:
            return "FAILED"
        return ""

    out.append("## Median wall seconds (lower is better)\n")
    out.append("| tool | " + " | ".join(f"N={n}" for n in ns) + " |")
    out.append("|---|" + "---:|" * len(ns))
    for t in tools:
        row = []
        for n in ns:
            c = results.get(n, {}).get(t)
            med = cell_median(c)
            s = status(c)
            txt = fmt_s(med) if med is not None else s
            if c is not None and c.runs and len(c.good) < len(c.runs):
                txt += f" ({len(c.runs) - len(c.good)}/{len(c.runs)} runs failed)"
            elif c is not None and c.runs and len(c.runs) < runs:
                txt += f" ({len(c.runs)} run{'s' if len(c.runs) > 1 else ''})"
            row.append(txt)
        out.append(f"| {LABELS[t]} | " + " | ".join(row) + " |")
    # shipdeck's release phase alone
    row = []
    for n in ns:
        c = results.get(n, {}).get("shipdeck")
        vals = [r.release_s for r in (c.good if c else []) if r.release_s is not None]
        row.append(fmt_s(median(vals)) if vals else "-")
    if "shipdeck" in tools:
        out.append("| ↳ shipdeck release phase only | " + " | ".join(row) + " |")

    out.append("\n## Ratio peer / shipdeck (median wall; > 1 means shipdeck is faster)\n")
    out.append("| tool | " + " | ".join(f"N={n}" for n in ns) + " |")
    out.append("|---|" + "---:|" * len(ns))
    for t in tools:
        if t == "shipdeck":
            continue
        row = []
        for n in ns:
            base = cell_median(results.get(n, {}).get("shipdeck"))
            med = cell_median(results.get(n, {}).get(t))
            row.append(f"{med / base:.2f}×" if base and med else "-")
        out.append(f"| {LABELS[t]} | " + " | ".join(row) + " |")

    out.append("\n## Client resources (median over runs): peak RSS MiB / CPU ms per host\n")
    out.append("| tool | " + " | ".join(f"N={n}" for n in ns) + " |")
    out.append("|---|" + "---:|" * len(ns))
    for t in tools:
        row = []
        for n in ns:
            c = results.get(n, {}).get(t)
            if c is None or not c.good:
                row.append(status(c) or "-")
                continue
            rss = median([r.m.peak_rss / 2**20 for r in c.good])
            cpu = median([r.m.cpu * 1000 / n for r in c.good])
            row.append(f"{rss:.0f} MiB / {cpu:.0f} ms")
        out.append(f"| {LABELS[t]} | " + " | ".join(row) + " |")

    out.append("\n## Server side: sshd CPU ms per host (sessions, shells, commands; median)\n")
    out.append("| tool | " + " | ".join(f"N={n}" for n in ns) + " |")
    out.append("|---|" + "---:|" * len(ns))
    for t in tools:
        row = []
        for n in ns:
            c = results.get(n, {}).get(t)
            vals = [r.m.server_cpu for r in (c.good if c else []) if r.m.server_cpu is not None]
            row.append(f"{median(vals) * 1000 / n:.0f} ms" if vals else (status(c) or "-"))
        out.append(f"| {LABELS[t]} | " + " | ".join(row) + " |")

    notes = []
    for n in ns:
        for t in tools:
            c = results.get(n, {}).get(t)
            if c is None:
                continue
            retries = sum(r.retries for r in c.runs)
            if retries:
                notes.append(
                    f"- {LABELS[t]} N={n}: {retries} connection(s) dropped by sshd (MaxStartups) and retried"
                )
            for r in c.runs:
                if not r.ok:
                    notes.append(f"- {LABELS[t]} N={n}: failed run: {r.note[:300]}")
            if c.skipped:
                notes.append(f"- {LABELS[t]} N={n}: {c.skipped}")
    if notes:
        out.append("\n## Notes\n")
        out.extend(dict.fromkeys(notes))
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", default=None, help="host counts, e.g. 1,10,50,100")
    ap.add_argument("--runs", type=int, default=None, help="runs per tool and N (median)")
    ap.add_argument("--tools", default=None, help=f"comma list of: {','.join(ALL_TOOLS)}")
    ap.add_argument("--quick", action="store_true", help="N=1,10, 1 run, the fast tools")
    ap.add_argument(
        "--ansible-max-n",
        type=int,
        default=100,
        help="skip Ansible above this N (default 100: Ansible runs everywhere)",
    )
    ap.add_argument(
        "--ansible-runs",
        type=int,
        default=1,
        help="runs for each Ansible variant at N>=50 (default 1: Ansible at N=100 takes\n"
        "~1.5-2 min a run here; --ansible-runs 3 for a median, +~10 min)",
    )
    ap.add_argument(
        "--serial-runs",
        type=int,
        default=None,
        help="runs for paramiko serial at N>=50 (default: --runs)",
    )
    ap.add_argument(
        "--pyinfra-parallel", type=int, default=0, help="pyinfra --parallel (0: its default)"
    )
    ap.add_argument(
        "--shipdeck-parallel",
        type=int,
        default=None,
        help="set deploy.parallel in shipdeck's config (default: shipdeck's own default)",
    )
    ap.add_argument(
        "--timeout", type=float, default=900, help="seconds per run before it is killed"
    )
    ap.add_argument("--json-out", type=Path, help="also write every run as JSON here")
    ap.add_argument(
        "--profile", type=int, metavar="N", help="instead: profile one shipdeck deploy to N hosts"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    if args.profile:
        return profile(args, args.profile)
    ns = [int(x) for x in (args.n or ("1,10" if args.quick else "1,10,50,100")).split(",")]
    runs = args.runs or (1 if args.quick else 3)
    tools = args.tools.split(",") if args.tools else (QUICK_TOOLS if args.quick else ALL_TOOLS)
    for t in tools:
        if t not in ALL_TOOLS:
            ap.error(f"unknown tool {t!r}; choose from {', '.join(ALL_TOOLS)}")
    if os.geteuid() != 0:
        print("warning: not root: every host logs in as you (shared $HOME)", file=sys.stderr)

    ensure_venv()
    shipdeck_bin = ensure_shipdeck() if "shipdeck" in tools else None
    available = {t: (t == "shipdeck" or venv_has(NEEDS[t])) for t in tools}
    become_subreaper()
    work = Path(tempfile.mkdtemp(prefix="shipdeck-fanout-"))
    results: dict[int, dict[str, Cell]] = {}
    raw: list[dict] = []
    started = time.monotonic()
    try:
        bench = Bench(args, work)
        bench.shipdeck_bin = shipdeck_bin
        for n in ns:
            results[n] = {t: Cell() for t in tools}
            nd = work / f"n{n}"
            nd.mkdir()
            print(f"== N={n}: starting {n} sshd hosts", file=sys.stderr, flush=True)
            with fleet(nd / "fleet", n) as f:
                hj = hosts_file(f, nd / "hosts.json")
                for rnd in range(1, runs + 1):
                    for t in tools:
                        cell = results[n][t]
                        if not available[t]:
                            cell.skipped = f"not installable here ({NEEDS[t]} import failed)"
                            continue
                        if t.startswith("ansible") and n > args.ansible_max_n:
                            cell.skipped = f"skipped (--ansible-max-n {args.ansible_max_n})"
                            continue
                        limit = runs
                        if t.startswith("ansible") and n >= 50 and args.ansible_runs:
                            limit = args.ansible_runs
                        if t == "paramiko-serial" and n >= 50 and args.serial_runs:
                            limit = args.serial_runs
                        if rnd > limit:
                            continue
                        r = bench.run_tool(t, f, n, rnd, hj, nd)
                        cell.runs.append(r)
                        raw.append(
                            {
                                "n": n,
                                "tool": t,
                                "run": rnd,
                                "ok": r.ok,
                                "wall": round(r.m.wall, 4),
                                "cpu": round(r.m.cpu, 4),
                                "peak_rss": r.m.peak_rss,
                                "server_cpu": r.m.server_cpu,
                                "retries": r.retries,
                                "release_s": r.release_s,
                                "note": r.note,
                            }
                        )
                        print(
                            f"   N={n:<3} run {rnd} {LABELS[t]:<22} {r.m.wall:7.2f}s "
                            f"cpu {r.m.cpu:6.2f}s rss {r.m.peak_rss / 2**20:5.0f} MiB "
                            f"sshd cpu {r.m.server_cpu or 0:6.2f}s"
                            + ("" if r.ok else f"  FAILED: {r.note[:160]}")
                            + (f"  ({r.retries} retries)" if r.retries else ""),
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        if args.json_out:
            args.json_out.write_text(json.dumps(raw, indent=1))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"\n# shipdeck fan-out benchmark: {runs} run(s), median; "
        f"{os.cpu_count()} CPUs; total {time.monotonic() - started:.0f}s\n"
    )
    print(render(results, tools, ns, runs))
    bad = [t for t in tools if any(not c.good and c.runs for c in (results[n][t] for n in ns))]
    return 1 if "shipdeck" in bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

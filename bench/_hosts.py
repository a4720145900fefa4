"""Shared plumbing of the benchmarks: the sshd fleet, the bench virtualenv, artifacts,
shipdeck configs and measuring one client run (wall, CPU, peak RSS of its tree).

Imported by bench/fanout.py and bench/upload.py, which run in shipdeck's own
environment (they need ``engine`` and ``tests.sshd``); the peers run in bench/.venv.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.sshd import SshdFleet  # noqa: E402

VENV = BENCH / ".venv"
VENV_PY = VENV / "bin" / "python"
PEERS = BENCH / "peers"
PEER_PACKAGES = ["paramiko", "fabric", "asyncssh", "pyinfra", "ansible-core", "py-spy"]


# --------------------------------------------------------------------------- venv


def ensure_venv(packages: list[str] | None = None) -> Path:
    """Create bench/.venv and install the peers from PyPI (once)."""
    packages = packages or PEER_PACKAGES
    stamp = VENV / ".installed"
    want = " ".join(sorted(packages))
    if stamp.exists() and stamp.read_text() == want:
        return VENV_PY
    if not VENV_PY.exists():
        print(f"creating {VENV} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print(f"installing {want} into {VENV} ...", file=sys.stderr, flush=True)
    out = subprocess.run(
        [str(VENV_PY), "-m", "pip", "install", "-q", *packages], capture_output=True, text=True
    )
    if out.returncode != 0:
        # install what can be installed, one by one; missing peers are reported as such
        for p in packages:
            subprocess.run([str(VENV_PY), "-m", "pip", "install", "-q", p], capture_output=True)
    stamp.write_text(want)
    return VENV_PY


def ensure_shipdeck() -> Path:
    """Install this checkout of shipdeck into bench/.venv the way a user would
    (``pip install``, a regular install with its bytecode compiled), so it runs with
    the same interpreter and site setup as the peers. Returns its ``shipdeck`` script."""
    script = VENV / "bin" / "shipdeck"
    print(f"installing shipdeck ({REPO}) into {VENV} ...", file=sys.stderr, flush=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    pip = [str(VENV_PY), "-m", "pip", "install", "-q"]
    if not script.exists():
        subprocess.run([*pip, str(REPO)], check=True, env=env, capture_output=True)
    # this checkout's code, whatever version number it carries
    subprocess.run(
        [*pip, "--no-deps", "--force-reinstall", str(REPO)],
        check=True,
        env=env,
        capture_output=True,
    )
    return script


def venv_has(module: str) -> bool:
    if not VENV_PY.exists():
        return False
    out = subprocess.run(
        [str(VENV_PY), "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    return out.returncode == 0


# --------------------------------------------------------------------------- fleet


@contextlib.contextmanager
def fleet(root: Path, n: int, **kw) -> Iterator[SshdFleet]:
    """A started SshdFleet with sshd's default MaxStartups; always stopped."""
    f = SshdFleet(root, n, log_level="INFO", **kw)
    try:
        f.start()
        yield f
    finally:
        f.stop()


def hosts_file(f: SshdFleet, path: Path) -> Path:
    """The fleet as JSON for the peer scripts."""
    data = {
        "key": str(f.client_key),
        "known_hosts": str(f.known_hosts),
        "hosts": [
            {"name": h.name, "addr": h.addr, "port": h.port, "user": h.user, "home": str(h.home)}
            for h in f.hosts
        ],
    }
    path.write_text(json.dumps(data, indent=1))
    return path


def fleet_pids(f: SshdFleet) -> set[int]:
    return {p.pid for p in f.procs if p.pid is not None}


# --------------------------------------------------------------------------- artifacts


def random_tree(dest: Path, size: int) -> Path:
    """A folder with ``size`` bytes of random data (incompressible) and a HEALTH file."""
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "payload.bin", "wb") as fh:
        left = size
        while left:
            chunk = min(left, 1 << 20)
            fh.write(os.urandom(chunk))
            left -= chunk
    (dest / "HEALTH").write_text("ok\n")
    return dest


def make_tarball(src: Path, out: Path) -> Path:
    subprocess.run(["tar", "-czf", str(out), "-C", str(src), "."], check=True)
    return out


def git(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@localhost",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@localhost",
    )
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout.strip()


def init_repo(repo: Path) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    return repo


def new_commit(repo: Path, size: int, label: str) -> str:
    """Replace dist/ with new random data and commit: a new package, a real upload."""
    dist = repo / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    random_tree(dist, size)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", label)
    return git(repo, "rev-parse", "HEAD")


#: what the benches' hosts do after the switch: a restart and a health check
DEPLOY_STEPS = (
    "after_activate = [\"sh -c 'sleep 0.05; echo restarted'\"]",
    'health = "test -f HEALTH && echo healthy"',
    "health_timeout = 10",
    "health_interval = 0.2",
)


def write_shipdeck_config(
    path: Path,
    f: SshdFleet,
    repo: Path,
    deploy_path: str,
    *,
    parallel: int | None = None,
    steps: tuple[str, ...] = DEPLOY_STEPS,
    ssh: tuple[str, ...] = ("connect_timeout = 10",),
) -> Path:
    """shipdeck's config for the fleet ``f``: ``[deploy]`` with ``steps``, ``[ssh]``
    with the fleet's key and known_hosts and the ``ssh`` lines."""
    deploy = [f'path = "{deploy_path}"', "keep_releases = 3", *steps]
    if parallel is not None:
        deploy.append(f"parallel = {parallel}")
    text = "\n".join(
        [
            "[project]",
            'name = "bench"',
            f'repo = "{repo}"',
            'ref = "main"',
            "[build]",
            'artifact = "dist"',
            "[deploy]",
            *deploy,
            "[ssh]",
            f'identity = "{f.client_key}"',
            f'known_hosts = "{f.known_hosts}"',
            'config = ""',
            *ssh,
            "[hosts]",
            "bench = [" + ", ".join(f'"{h.spec}"' for h in f.hosts) + "]",
        ]
    )
    path.write_text(text + "\n")
    return path


# --------------------------------------------------------------------------- measuring

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans of a measured client (ssh ControlPersist masters) become our children,
    so their CPU is counted and they are ended with the run."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _ppids() -> dict[int, int]:
    table: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
            table[int(entry.name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
    return table


def _tree(roots: set[int], table: dict[int, int]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p, pp in table.items():
        kids.setdefault(pp, []).append(p)
    out = set()
    todo = [r for r in roots if r in table]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(kids.get(p, []))
    return out


def _mem(pid: int) -> tuple[int, int]:
    """(PSS, VmHWM) of one process in bytes; PSS splits pages shared by forks fairly."""
    pss = hwm = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    pss = int(line.split()[1]) * 1024
                    break
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return pss, hwm


@dataclass
class Measured:
    wall: float
    cpu: float  # user+sys of the client and every descendant
    peak_rss: int  # bytes: peak of the client tree's summed PSS (or its largest VmHWM)
    returncode: int
    stdout: str
    stderr: str
    server_cpu: float | None = None  # user+sys of the sshd side (sessions, shells, commands)
    extra: dict = field(default_factory=dict)


def _tree_cpu(pid: int) -> float:
    """user+sys of a live process plus every child it has reaped (cutime/cstime)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            f = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK")


_SERVER_REAPED = [0.0]  # CPU of server-side orphans (sshd, host users) we reaped


def server_cpu(listeners: set[int]) -> float:
    """CPU used so far by sshd listeners, the sessions they reaped, and server-side
    processes orphaned to us (we are a subreaper above the sshd listeners)."""
    return sum(_tree_cpu(p) for p in listeners) + _SERVER_REAPED[0]


def _is_server(pid: int) -> bool | None:
    """True: an sshd process or one of a host user's; False: the client's; None: gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            status = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    name = fields.get("Name", "").strip()
    uid = int(fields.get("Uid", "0").split()[0])
    return name == "sshd" or uid != 0


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return ""


def _reap(pid: int) -> float:
    try:
        got, _, ru = os.wait4(pid, os.WNOHANG)
    except ChildProcessError:
        return 0.0
    return ru.ru_utime + ru.ru_stime if got else 0.0


def settle(listeners: set[int], timeout: float = 3.0) -> None:
    """Wait until every sshd session has ended and been reaped: no live child of a
    listener, and no live server-side orphan of ours (dead ones are reaped, their
    CPU counted as the server's)."""
    me = os.getpid()
    deadline = time.monotonic() + timeout
    while True:
        table = _ppids()
        busy = any(pp in listeners for pp in table.values())
        for p, pp in table.items():
            if pp != me or p in listeners or not _is_server(p):
                continue
            if _state(p) == "Z":
                _SERVER_REAPED[0] += _reap(p)
            else:
                busy = True
        if not busy or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _client_orphans(me: int, exclude: set[int]) -> list[int]:
    """Our children that are neither listeners nor server-side: the client's orphans."""
    return [
        p for p, pp in _ppids().items() if pp == me and p not in exclude and _is_server(p) is False
    ]


def measure(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    exclude: set[int] = frozenset(),  # type: ignore[assignment]
    timeout: float = 900,
    interval: float = 0.05,
) -> Measured:
    """Run ``cmd`` (``exclude``: the sshd listeners, whose sessions' CPU is measured
    as ``server_cpu``); wall time, CPU (rusage of it and everything it forked, orphans
    included) and the peak memory of its process tree: the largest summed PSS seen
    by sampling, or the largest single process's VmHWM if that is higher. (wait4's
    ru_maxrss is no use here: it inherits the forking parent's RSS across exec.)"""
    settle(set(exclude))
    for p in _client_orphans(os.getpid(), set(exclude)):  # a previous run's leftovers
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
        _reap_blocking(p)
    srv0 = server_cpu(set(exclude))
    out_f = tempfile.TemporaryFile()
    err_f = tempfile.TemporaryFile()
    me = os.getpid()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out_f, stderr=err_f)
    peak = [0]
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            table = _ppids()
            # the client's tree, plus orphans re-parented to us (we are a subreaper)
            roots = {proc.pid} | {
                p
                for p, pp in table.items()
                if pp == me and p not in exclude and _is_server(p) is False
            }
            t0 = time.perf_counter()
            total = 0
            for p in _tree(roots, table):
                pss, hwm = _mem(p)
                total += pss
                peak[0] = max(peak[0], hwm)
            peak[0] = max(peak[0], total)
            # never let sampling take more than ~10% of a core
            done.wait(max(interval, 10 * (time.perf_counter() - t0)))

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    cpu = 0.0
    try:
        _, status, ru = os.wait4(proc.pid, 0) if timeout is None else _wait4(proc, timeout)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        cpu += ru.ru_utime + ru.ru_stime
    finally:
        done.set()
        t.join()
        # orphans left behind (ControlPersist masters): end them, count their CPU
        for p in _client_orphans(me, exclude | {proc.pid}):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
            cpu += _reap_blocking(p)
    settle(set(exclude))
    srv = server_cpu(set(exclude)) - srv0
    out_f.seek(0)
    err_f.seek(0)
    return Measured(
        server_cpu=srv,
        wall=wall,
        cpu=cpu,
        peak_rss=peak[0],
        returncode=proc.returncode,
        stdout=out_f.read().decode(errors="replace"),
        stderr=err_f.read().decode(errors="replace"),
    )


def _wait4(proc: subprocess.Popen, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return pid, status, ru
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            return os.wait4(proc.pid, 0)
        time.sleep(0.005)


def _reap_blocking(pid: int) -> float:
    try:
        _, _, ru = os.wait4(pid, 0)
    except ChildProcessError:
        return 0.0
    return ru.ru_utime + ru.ru_stime


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}

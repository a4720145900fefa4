"""A fleet of real OpenSSH ``sshd`` hosts on loopback, for integration tests and benchmarks.

Usage::

    with SshdFleet(tmp_path, 3) as fleet:
        for host in fleet.hosts:          # .name .addr .port .user .home .spec .proc_index
            conn = await asyncssh.connect(host.addr, host.port, username=host.user,
                                          client_keys=[fleet.client_key],
                                          known_hosts=str(fleet.known_hosts))

Layout of ``root``::

    root/client_key{,.pub}    client key pair (ed25519), authorised on every host
    root/authorized_keys      the one AuthorizedKeysFile of every sshd (mode 0644)
    root/known_hosts          "[addr]:port ssh-ed25519 ..." for every host (+ bastion)
    root/hosts/<name>/        host <name>'s home directory, owned by its login user
    root/sshd/<k>/            sshd process k: sshd_config, host key, pid file, sshd.log

How hosts map to processes: one sshd listens on at most 16 addresses, so host ``i``
(0-based; name ``h{i+1}``) gets address ``127.0.0.{i+2}`` and is served by process
``i // 16`` on that process's port (one free port per process, the same on all of its
addresses). ``one_process_per_host=True`` gives every host its own sshd, so that
``freeze_host``/``stop_host`` hit exactly one host. The bastion (``bastion=True``) is
always its own process on ``127.0.0.1``. ``bastion_chain=True`` adds a second hop,
``fleet.bastion2`` (its own process on ``127.0.0.1``); the first bastion then forwards
only to the second (``PermitOpen``), so targets are reached through both hops.

As root (the normal case), every host has its own login user (``sdh<rand4><n>``, shell
``/bin/sh``, home = the host directory), so ``~`` and relative paths are per host, just
like on separate machines. Without root, every host logs in as the current user
(``host.shared_user`` is True): ``$HOME`` is then the same real home directory for all
hosts and ``host.home`` is only a per-host scratch directory; deploy to absolute paths
under ``host.home``.

Faults: ``freeze_host(i)`` sends SIGSTOP to the sshd listener serving host ``i`` and to
all of its descendants found through ``/proc`` (per-connection privsep monitors, the
unprivileged children and the session shells), so both new and already-open
connections hang. ``stop_host(i)`` ends that listener and its descendants (open
connections drop). Both act on a whole process: with the default packing of 16 hosts
per process they hit every host that process serves (the returned list says which);
use ``one_process_per_host=True`` for per-host faults. ``thaw_all()`` undoes freezes
and runs on stop.

Clean-up: ``stop()`` (also run from ``__exit__``, the pytest fixtures and ``atexit``)
thaws, terminates every sshd and its descendants, kills any leftover process of the
fleet's users and deletes those users. sshd listeners are started with
``PR_SET_PDEATHSIG`` (when started from the main thread), so they die with the test
process even on ``kill -9``; users and sshd processes left behind by a killed run are
swept by the next ``start()`` (they carry the creating pid, which must be dead).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.localproc import pid_alive

__all__ = [
    "SSHD",
    "SshAgent",
    "SshdFleet",
    "SshdFleetError",
    "SshdHost",
    "SshdProcess",
    "sshd3",
    "sshd_available",
    "sshd_fleet",
    "sshd_fleet_factory",
    "sshd_installed",
    "ssh_agent",
    "make_user_key",
    "sweep_stale",
]

SSHD = "/usr/sbin/sshd"
MAX_ADDRS_PER_PROCESS = 16
_MARKER = "shipdeck-sshd-fleet"  # in the GECOS field of users and in the sshd environment
_OWNER_ENV = "SHIPDECK_SSHD_FLEET_OWNER"


class SshdFleetError(RuntimeError):
    """The fleet could not be started (bad config, sshd died, port never opened...)."""


@dataclass
class SshdHost:
    """One host of the fleet (or the bastion)."""

    name: str
    addr: str
    port: int
    user: str
    home: Path
    proc_index: int
    index: int  # position in fleet.hosts; -1 for the bastion
    shared_user: bool = False

    @property
    def spec(self) -> str:
        """``user@addr:port``, as a shipdeck host entry."""
        return f"{self.user}@{self.addr}:{self.port}"


@dataclass
class SshdProcess:
    """One sshd listener and the hosts it serves."""

    index: int
    dir: Path
    hosts: list[SshdHost]
    port: int = 0
    popen: subprocess.Popen | None = None
    frozen: set[int] = field(default_factory=set)

    @property
    def config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


# --------------------------------------------------------------------------- helpers


def sshd_installed() -> bool:
    return os.access(SSHD, os.X_OK)


def _ed25519_keypair(comment: str) -> tuple[bytes, bytes]:
    """(private key in OpenSSH format, public key line) for a new ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + b" " + comment.encode() + b"\n"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _password_hash(password: str) -> str:
    out = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _host_addr(i: int) -> str:
    """Address of host i: 127.0.0.2 ... 127.0.0.254, then 127.0.1.1 ... (no .0/.255)."""
    block, off = divmod(i + 1, 254)
    return str(ipaddress.IPv4Address("127.0.0.0") + block * 256 + off + 1)


def _listener_inode(addr: str, port: int) -> int | None:
    """The socket inode listening on ``addr:port`` (IPv4, from /proc/net/tcp), if any."""
    want = f"{socket.inet_aton(addr)[::-1].hex().upper()}:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        f = line.split()
        if len(f) > 9 and f[1] == want and f[3] == "0A":  # 0A: LISTEN
            return int(f[9])
    return None


def _socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open."""
    found = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            found.add(int(link[8:-1]))
    return found


def _free_port(addrs: list[str]) -> int:
    """A port that is free on every address in ``addrs`` right now."""
    for _ in range(50):
        socks: list[socket.socket] = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(first)
            first.bind((addrs[0], 0))
            port = first.getsockname()[1]
            for addr in addrs[1:]:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SshdFleetError(f"no port free on all of {addrs}")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, uid) for every process visible in /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                ppid = uid = -1
                for line in f:
                    if line.startswith("PPid:"):
                        ppid = int(line.split()[1])
                    elif line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        break
            table[int(entry.name)] = (ppid, uid)
        except (OSError, ValueError):
            continue
    return table


def _descendants(pid: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

    return True


def _pdeathsig() -> Callable[[], None] | None:
    """preexec_fn making the child get SIGTERM when its parent dies (Linux only).

    The signal fires when the *thread* that forked exits, so only used from the main
    thread (whose end is the process's end).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None

    def set_pdeathsig() -> None:
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    return set_pdeathsig


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@contextlib.contextmanager
def _passwd_turn() -> Iterator[None]:
    """Take turns with other test processes (pytest -n) at useradd/userdel: when two
    collide on /etc/passwd's lock, shadow's tools sleep a whole second per retry."""
    path = "/run/lock/shipdeck-tests-passwd.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # no /run/lock: take our chances with shadow's own lock
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def sweep_stale() -> None:
    """Remove users and sshd listeners left behind by fleets whose creator is dead."""
    if os.geteuid() != 0:
        return
    table = _proc_table()
    for pid in table:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        key = _OWNER_ENV.encode() + b"="
        for item in env.split(b"\0"):
            if item.startswith(key):
                owner = int(item[len(key) :] or b"0")
                if not pid_alive(owner):
                    for p in [pid, *_descendants(pid, table)]:
                        _kill(p, signal.SIGKILL)
                break
    try:
        lines = Path("/etc/passwd").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":")
        if len(parts) < 7 or not parts[4].startswith(_MARKER + " pid="):
            continue
        try:
            owner = int(parts[4].split("pid=", 1)[1])
        except ValueError:
            continue
        if pid_alive(owner):
            continue
        uid = int(parts[2])
        for p, (_, puid) in _proc_table().items():
            if puid == uid:
                _kill(p, signal.SIGKILL)
        _run(["userdel", "-f", parts[0]])


def _make_traversable(path: Path) -> None:
    """Let other users traverse (x, not r) every directory from / down to ``path``.

    pytest's temp dirs are 0700; host users need to reach their homes and the
    authorized_keys file (sshd opens it with the user's uid). pytest tightens its own
    base directory again at the start of the next session.
    """
    for parent in [*reversed(path.parents), path]:
        st = parent.stat()
        if st.st_mode & 0o001 == 0:
            os.chmod(parent, (st.st_mode & 0o7777) | 0o001)


_LIVE: set[SshdFleet] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for fleet in list(_LIVE):
        try:
            fleet.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


# --------------------------------------------------------------------------- the fleet


class SshdFleet:
    """Real OpenSSH sshd hosts on loopback addresses; see the module docstring."""

    def __init__(
        self,
        root: Path,
        n_hosts: int,
        *,
        password: str | None = None,
        log_level: str = "VERBOSE",
        max_startups: str | None = None,
        bastion: bool = False,
        bastion_chain: bool = False,
        extra_config: str = "",
        one_process_per_host: bool = False,
        start_timeout: float = 15.0,
        user_keys: bool = False,
    ) -> None:
        if n_hosts < 0:
            raise ValueError("n_hosts must be >= 0")
        self.root = Path(root).absolute()
        self.n_hosts = n_hosts
        self.password = password
        self.log_level = log_level
        self.max_startups = max_startups
        self.extra_config = extra_config
        self.one_process_per_host = one_process_per_host
        #: also read each user's own ~/.ssh/authorized_keys (keys a deploy installs)
        self.user_keys = user_keys
        self.start_timeout = start_timeout
        self.want_bastion = bastion or bastion_chain
        self.want_chain = bastion_chain
        self.bastion2: SshdHost | None = None
        self.shared_user = os.geteuid() != 0
        self.tag = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))
        self.client_key = self.root / "client_key"
        self.known_hosts = self.root / "known_hosts"
        self.authorized_keys = self.root / "authorized_keys"
        self.hosts: list[SshdHost] = []
        self.bastion: SshdHost | None = None
        self.procs: list[SshdProcess] = []
        self._created_users: list[str] = []
        self._started = False

    # ---- context manager

    def __enter__(self) -> SshdFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- lifecycle

    def start(self) -> SshdFleet:
        """Create users, keys and configs, start every sshd and wait until all listen.

        Raises SshdFleetError (with sshd's own output) if a config does not validate
        or a process does not come up within ``start_timeout`` seconds.
        """
        if self._started:
            raise SshdFleetError("fleet already started")
        if not sshd_installed():
            raise SshdFleetError(f"OpenSSH sshd not installed ({SSHD})")
        self._started = True
        _LIVE.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if not self.shared_user:
            sweep_stale()
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        if not self.shared_user:
            _make_traversable(self.root)
        (self.root / "hosts").mkdir(exist_ok=True)
        (self.root / "sshd").mkdir(exist_ok=True)

        private, public = _ed25519_keypair(f"shipdeck-test-client-{self.tag}")
        _write_private(self.client_key, private)
        (self.root / "client_key.pub").write_bytes(public)
        self.authorized_keys.write_bytes(public)
        os.chmod(self.authorized_keys, 0o644)

        self._plan()
        with _passwd_turn():
            self._create_users()
        for proc in self.procs:
            self._write_config(proc)
        self._validate()
        for proc in self.procs:
            self._launch(proc)
        self._wait_ready(self.procs)
        self._write_known_hosts()

    def _plan(self) -> None:
        per = 1 if self.one_process_per_host else MAX_ADDRS_PER_PROCESS
        me = os.environ.get("USER") or _current_user()
        for i in range(self.n_hosts):
            name = f"h{i + 1}"
            user = me if self.shared_user else f"sdh{self.tag}{i + 1}"
            host = SshdHost(
                name=name,
                addr=_host_addr(i),
                port=0,
                user=user,
                home=self.root / "hosts" / name,
                proc_index=i // per,
                index=i,
                shared_user=self.shared_user,
            )
            self.hosts.append(host)
        for k in range(0, self.n_hosts, per):
            idx = len(self.procs)
            self.procs.append(
                SshdProcess(
                    index=idx, dir=self.root / "sshd" / str(idx), hosts=self.hosts[k : k + per]
                )
            )
        if self.want_bastion:
            idx = len(self.procs)
            self.bastion = SshdHost(
                name="bastion",
                addr="127.0.0.1",
                port=0,
                user=me if self.shared_user else f"sdh{self.tag}b",
                home=self.root / "hosts" / "bastion",
                proc_index=idx,
                index=-1,
                shared_user=self.shared_user,
            )
            self.procs.append(
                SshdProcess(index=idx, dir=self.root / "sshd" / "bastion", hosts=[self.bastion])
            )
        if self.want_chain:
            idx = len(self.procs)
            self.bastion2 = SshdHost(
                name="bastion2",
                addr="127.0.0.1",
                port=0,
                user=me if self.shared_user else f"sdh{self.tag}c",
                home=self.root / "hosts" / "bastion2",
                proc_index=idx,
                index=-2,
                shared_user=self.shared_user,
            )
            self.procs.append(
                SshdProcess(index=idx, dir=self.root / "sshd" / "bastion2", hosts=[self.bastion2])
            )
        for proc in self.procs:
            proc.dir.mkdir(parents=True, exist_ok=True)
            proc.port = _free_port([h.addr for h in proc.hosts])
            for h in proc.hosts:
                h.port = proc.port

    def _all_hosts(self) -> list[SshdHost]:
        return (
            self.hosts
            + ([self.bastion] if self.bastion else [])
            + ([self.bastion2] if self.bastion2 else [])
        )

    def _create_users(self) -> None:
        pw = "*" if self.password is None else _password_hash(self.password)
        for host in self._all_hosts():
            host.home.mkdir(parents=True, exist_ok=True)
            if self.shared_user:
                continue
            cmd = ["useradd", "-M", "-N", "-d", str(host.home), "-s", "/bin/sh"]
            cmd += ["-c", f"{_MARKER} pid={os.getpid()}", "-p", pw, host.user]
            out = _run(cmd)
            if out.returncode != 0:
                raise SshdFleetError(f"useradd {host.user} failed: {out.stderr.strip()}")
            self._created_users.append(host.user)
            shutil.chown(host.home, host.user)
            os.chmod(host.home, 0o755)

    def _write_config(self, proc: SshdProcess) -> None:
        private, _ = _ed25519_keypair(f"shipdeck-test-host-{self.tag}-{proc.index}")
        _write_private(proc.host_key, private)
        is_bastion = self.bastion is not None and proc.hosts == [self.bastion]
        # sshd keeps the first value it reads for a keyword, so extra_config goes first
        # and wins; a Match block in it (and everything after) has to go last.
        extra = self.extra_config.strip()
        at = next((m.start() for m in re.finditer(r"(?im)^\s*Match\s", extra)), len(extra))
        head, tail = extra[:at].strip(), extra[at:].strip()
        lines = [head] if head else []
        if self.max_startups is not None:
            lines.append(f"MaxStartups {self.max_startups}")
        lines += [f"ListenAddress {h.addr}:{proc.port}" for h in proc.hosts]
        lines += [
            f"HostKey {proc.host_key}",
            f"PidFile {proc.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}"
            + (" .ssh/authorized_keys" if self.user_keys else ""),
            f"AllowUsers {' '.join(sorted({h.user for h in proc.hosts}))}",
            "UsePAM no",
            "StrictModes no",
            "SetEnv SHLVL=1",
            f"LogLevel {self.log_level}",
            "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.password is not None else 'no'}",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "UseDNS no",
            "Subsystem sftp internal-sftp",
        ]
        if is_bastion and self.bastion2 is not None:
            # the first hop of a chain forwards only to the second hop
            b2 = self.bastion2
            lines += ["AllowTcpForwarding yes", f"PermitOpen {b2.addr}:{b2.port}"]
        elif is_bastion or (self.bastion2 is not None and proc.hosts == [self.bastion2]):
            lines += ["AllowTcpForwarding yes", "PermitOpen any"]
        if tail:
            lines.append(tail)
        proc.config.write_text("\n".join(lines) + "\n")

    def _validate(self) -> None:
        for proc in self.procs:
            out = _run([SSHD, "-t", "-f", str(proc.config)])
            if out.returncode != 0:
                raise SshdFleetError(
                    f"sshd -t -f {proc.config} failed (exit {out.returncode}):\n"
                    f"{(out.stdout + out.stderr).strip()}\n--- config ---\n{proc.config.read_text()}"
                )

    def _launch(self, proc: SshdProcess) -> None:
        env = dict(os.environ)
        env[_OWNER_ENV] = str(os.getpid())
        proc.frozen.clear()
        proc.popen = subprocess.Popen(
            [SSHD, "-D", "-f", str(proc.config), "-E", str(proc.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            preexec_fn=_pdeathsig(),
        )

    def _wait_ready(self, procs: list[SshdProcess], retries: int = 3) -> None:
        """Poll-connect to every address of every process until it accepts.

        A process whose port was taken in the meantime (sshd logs "Bind to port ...
        failed") is restarted on a new port, up to ``retries`` times.
        """
        deadline = time.monotonic() + self.start_timeout
        pending = {proc.index: list(proc.hosts) for proc in procs}
        attempts = dict.fromkeys(pending, 0)
        while pending:
            for idx in list(pending):
                proc = self.procs[idx]
                left = []
                # the listener must be this sshd's: fleets of other test workers use the
                # same addresses, and one may hold this port (then this sshd logs "Address
                # already in use" and is moved to another port below)
                ours = _socket_inodes(proc.popen.pid) if proc.popen is not None else None
                for h in pending[idx]:
                    if ours is not None and _listener_inode(h.addr, proc.port) not in ours:
                        left.append(h)
                        continue
                    try:
                        with socket.create_connection((h.addr, proc.port), timeout=1):
                            pass
                    except OSError:
                        left.append(h)
                if not left:
                    del pending[idx]
                    continue
                pending[idx] = left
                log = proc.log.read_text(errors="replace") if proc.log.exists() else ""
                died = proc.popen is not None and proc.popen.poll() is not None
                if "Address already in use" in log and attempts[idx] < retries:
                    attempts[idx] += 1
                    self._terminate(proc)
                    proc.log.unlink(missing_ok=True)
                    proc.port = _free_port([h.addr for h in proc.hosts])
                    for h in proc.hosts:
                        h.port = proc.port
                    self._write_config(proc)
                    self._launch(proc)
                    pending[idx] = list(proc.hosts)
                elif died:
                    raise SshdFleetError(
                        f"sshd process {idx} exited with {proc.popen.returncode}; log {proc.log}:\n{log}"
                    )
            if not pending:
                break
            if time.monotonic() > deadline:
                where = ", ".join(f"{h.addr}:{h.port}" for hs in pending.values() for h in hs)
                raise SshdFleetError(
                    f"sshd not listening after {self.start_timeout:.1f}s on {where}; "
                    f"logs under {self.root / 'sshd'}"
                )
            time.sleep(0.005)
        # The probes above each made sshd fork a pre-auth child; wait for them to go so
        # they do not count against MaxStartups in the test that follows.
        quiet_deadline = time.monotonic() + 2.0
        while time.monotonic() < quiet_deadline:
            table = _proc_table()
            if not any(_descendants(p.pid, table) for p in procs if p.pid is not None):
                break
            time.sleep(0.005)

    def _write_known_hosts(self) -> None:
        lines = []
        for proc in self.procs:
            pub = _public_of(proc.host_key)
            for h in proc.hosts:
                lines.append(f"[{h.addr}]:{h.port} {pub}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def _terminate(self, proc: SshdProcess, timeout: float = 3.0) -> None:
        """End a listener and everything it forked (open connections drop)."""
        if proc.popen is None:
            return
        pid = proc.popen.pid
        table = _proc_table()
        family = [pid, *_descendants(pid, table)] if proc.popen.poll() is None else []
        for p in family:
            _kill(p, signal.SIGCONT)
        _kill(pid, signal.SIGTERM)
        for p in family[1:]:
            _kill(p, signal.SIGKILL)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill(pid, signal.SIGKILL)
            proc.popen.wait(timeout)
        # children forked between the scan and SIGTERM
        for p in _descendants(pid):
            _kill(p, signal.SIGKILL)
        proc.frozen.clear()

    def stop(self) -> None:
        """Thaw and end every sshd and its children, then delete the fleet's users.

        Safe to call more than once and on a fleet that failed halfway through start().
        """
        errors = []
        for proc in self.procs:
            try:
                self._terminate(proc)
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                errors.append(e)
        if self._created_users:
            uids = set()
            for user in self._created_users:
                try:
                    uids.add(pwd.getpwnam(user).pw_uid)
                except KeyError:
                    pass
            for _ in range(3):
                left = [p for p, (_, uid) in _proc_table().items() if uid in uids]
                if not left:
                    break
                for p in left:
                    _kill(p, signal.SIGKILL)
                time.sleep(0.02)
            with _passwd_turn():
                for user in list(self._created_users):
                    out = _run(["userdel", "-f", user])
                    if out.returncode in (0, 6):  # 6: no such user
                        self._created_users.remove(user)
                    else:
                        errors.append(SshdFleetError(f"userdel {user}: {out.stderr.strip()}"))
        _LIVE.discard(self)
        if errors:
            raise errors[0]

    # ---- faults

    def _proc_of(self, host: int | SshdHost) -> SshdProcess:
        h = host if isinstance(host, SshdHost) else self.hosts[host]
        return self.procs[h.proc_index]

    def freeze_host(self, host: int | SshdHost) -> list[SshdHost]:
        """SIGSTOP the sshd serving ``host`` and all its descendants.

        New connections then hang in the TCP backlog (connect succeeds, no banner) and
        open connections stop answering. Returns every host that process serves (all of
        them are frozen; use ``one_process_per_host=True`` to freeze exactly one).
        """
        proc = self._proc_of(host)
        if not proc.running:
            raise SshdFleetError(f"sshd process {proc.index} is not running")
        _kill(proc.pid, signal.SIGSTOP)
        proc.frozen.add(proc.pid)
        for _ in range(2):  # a second pass catches children forked meanwhile
            for p in _descendants(proc.pid):
                if p not in proc.frozen:
                    _kill(p, signal.SIGSTOP)
                    proc.frozen.add(p)
        return list(proc.hosts)

    def thaw_all(self) -> None:
        """SIGCONT everything freeze_host stopped (and any descendant of a listener)."""
        table = _proc_table()
        for proc in self.procs:
            pids = set(proc.frozen)
            if proc.running:
                pids |= {proc.pid, *_descendants(proc.pid, table)}
            for p in pids:
                _kill(p, signal.SIGCONT)
            proc.frozen.clear()

    def stop_host(self, host: int | SshdHost) -> list[SshdHost]:
        """End the sshd serving ``host`` (and its connections): the host is down.

        Returns every host that process served. ``start_host`` brings it back.
        """
        proc = self._proc_of(host)
        self._terminate(proc)
        return list(proc.hosts)

    def start_host(self, host: int | SshdHost) -> list[SshdHost]:
        """Restart the sshd serving ``host`` on the same port (and host key)."""
        proc = self._proc_of(host)
        if proc.running:
            return list(proc.hosts)
        self._launch(proc)
        self._wait_ready([proc], retries=0)
        return list(proc.hosts)

    # ---- observation

    def log_text(self, proc_index: int | None = None) -> str:
        """The sshd log of one process, or of all of them concatenated."""
        procs = self.procs if proc_index is None else [self.procs[proc_index]]
        return "".join(p.log.read_text(errors="replace") for p in procs if p.log.exists())

    def accepted_logins(self, proc_index: int | None = None) -> int:
        """How many logins (publickey or password) the sshd log(s) recorded."""
        return sum(
            1
            for line in self.log_text(proc_index).splitlines()
            if "Accepted publickey for " in line or "Accepted password for " in line
        )

    def authorize(self, public_key: Path | str) -> None:
        """Authorise one more client public key (a file or a key line) on every host."""
        line = Path(public_key).read_text() if isinstance(public_key, Path) else public_key
        with open(self.authorized_keys, "a") as f:
            f.write(line.strip() + "\n")

    def hosts_of_process(self, proc_index: int) -> list[SshdHost]:
        return list(self.procs[proc_index].hosts)

    # ---- client config

    def write_ssh_config(
        self,
        path: Path,
        aliases: dict[str, SshdHost],
        *,
        proxy_jump: str | SshdHost | None = None,
        identity: bool = True,
    ) -> Path:
        """Write an OpenSSH client config with one ``Host`` block per alias.

        ``proxy_jump`` may be an alias present in ``aliases``, a ``user@host:port``
        string or an SshdHost (written as its spec). Every block names the fleet's
        known_hosts with strict checking; ``identity=False`` leaves IdentityFile out.
        """
        if isinstance(proxy_jump, SshdHost):
            proxy_jump = proxy_jump.spec
        jump_alias = proxy_jump if proxy_jump in aliases else None
        blocks = []
        for alias, h in aliases.items():
            lines = [
                f"Host {alias}",
                f"    HostName {h.addr}",
                f"    Port {h.port}",
                f"    User {h.user}",
            ]
            if identity:
                lines += [f"    IdentityFile {self.client_key}", "    IdentitiesOnly yes"]
            lines += [
                f"    UserKnownHostsFile {self.known_hosts}",
                "    StrictHostKeyChecking yes",
            ]
            if proxy_jump and alias != jump_alias:
                lines.append(f"    ProxyJump {proxy_jump}")
            blocks.append("\n".join(lines))
        path = Path(path)
        path.write_text("\n\n".join(blocks) + "\n")
        return path

    def __repr__(self) -> str:
        return f"<SshdFleet {self.n_hosts} hosts, {len(self.procs)} sshd processes at {self.root}>"


def _public_of(private_key: Path) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(private_key.read_bytes(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def _current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


# --------------------------------------------------------------------------- pytest fixtures
# Import into a conftest: from tests.sshd import sshd_available, sshd_fleet, sshd3


@pytest.fixture(scope="session")
def sshd_available() -> None:
    """Skip (or, with CI=true, fail) when OpenSSH's sshd is not installed."""
    if not sshd_installed():
        reason = f"OpenSSH sshd not installed ({SSHD})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true: the CI image must provide it", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def sshd_fleet(sshd_available, tmp_path_factory) -> Iterator[Callable[..., SshdFleet]]:
    """Factory: ``sshd_fleet(n_hosts=3, **SshdFleet kwargs)`` -> a started fleet.

    Every fleet made through it is stopped at the end of the test.
    """
    fleets: list[SshdFleet] = []

    def make(n_hosts: int = 3, **kwargs) -> SshdFleet:
        fleet = SshdFleet(tmp_path_factory.mktemp("sshd"), n_hosts, **kwargs)
        fleets.append(fleet)
        return fleet.start()

    yield make
    errors = []
    for fleet in fleets:
        try:
            fleet.stop()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def sshd_fleet_factory(sshd_fleet) -> Callable[..., SshdFleet]:
    """Alias of ``sshd_fleet``."""
    return sshd_fleet


class SshAgent:
    """An ssh-agent of a test's own: ``ssh-agent -D -a SOCK``, keys added with ssh-add
    (an encrypted key's passphrase is given through SSH_ASKPASS, as a desktop would)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.sock = self.root / "agent.sock"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> SshAgent:
        self.popen = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.sock)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_pdeathsig(),
        )
        deadline = time.monotonic() + timeout
        while not self.sock.exists():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise SshdFleetError(f"ssh-agent did not create {self.sock}")
            time.sleep(0.01)
        return self

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SSH_AUTH_SOCK": str(self.sock)}

    def add(self, key: Path, passphrase: str | None = None) -> None:
        env = self.env
        if passphrase is not None:
            askpass = self.root / "askpass.sh"
            askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{passphrase}'\n")
            os.chmod(askpass, 0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        out = _run(["ssh-add", str(key)], env=env, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise SshdFleetError(f"ssh-add {key} failed: {out.stderr.strip()}")

    def public_keys(self) -> list[str]:
        out = _run(["ssh-add", "-L"], env=self.env)
        return out.stdout.splitlines() if out.returncode == 0 else []

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            self.popen.wait(5)
        self.sock.unlink(missing_ok=True)


def make_user_key(path: Path, passphrase: str = "", comment: str = "shipdeck-test") -> Path:
    """A new ed25519 key pair at ``path`` (+ ``.pub``), encrypted when a passphrase is
    given (ssh-keygen, as an operator makes one)."""
    out = _run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)]
    )
    if out.returncode != 0:
        raise SshdFleetError(f"ssh-keygen failed: {out.stderr.strip()}")
    return path


@pytest.fixture
def ssh_agent(tmp_path_factory, monkeypatch) -> Iterator[SshAgent]:
    """A running ssh-agent; SSH_AUTH_SOCK points at it for the test."""
    agent = SshAgent(tmp_path_factory.mktemp("agent")).start()
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def sshd3(sshd_available, tmp_path_factory) -> Iterator[SshdFleet]:
    """A module-scoped, started fleet of 3 hosts (one sshd process)."""
    with SshdFleet(tmp_path_factory.mktemp("sshd3"), 3) as fleet:
        yield fleet

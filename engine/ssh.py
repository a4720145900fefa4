"""The SSH layer: one asyncssh connection per host, reused for every command and
SFTP transfer of a deploy.

- handshakes are capped where the limit lives: at most ``ssh.max_startups`` in flight
  per sshd (its resolved address and port, or the host key known_hosts expects there;
  per jump chain for tunnelled targets), plus ``ssh.max_handshakes`` over the fleet;
  a connection sshd resets before the handshake (MaxStartups) is tried again;
- commands on one connection are capped (``ssh.max_sessions``) below MaxSessions;
- a jump host (or each hop of a ProxyJump chain) is connected once and every target
  is tunnelled through it;
- the OpenSSH client config is read as OpenSSH reads it (asyncssh's parser: Host,
  Match, Include, HostName, User, Port, IdentityFile, IdentitiesOnly, IdentityAgent,
  CertificateFile, UserKnownHostsFile, ProxyJump, ProxyCommand); an encrypted
  identity whose key is in ssh-agent is signed by the agent, one that is not asks for
  its passphrase once (``ssh.passphrase_env`` or the prompter);
- host keys are strict by default, ``accept-new`` records an unknown key, a changed
  key is always refused; each host is asked about at most once per deploy;
- timeouts everywhere: connect, commands, keepalives (``ssh.dead_after``).
"""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from engine.config import HostSpec, SshConfig, parse_host
from engine.session import CommandResult, CommandTimeout, Host, LineHandler, SSHError, q

__all__ = [
    "CommandResult",
    "CommandTimeout",
    "Connector",
    "Host",
    "HostKeyError",
    "LineHandler",
    "Prompter",
    "SSHError",
    "Target",
    "WireStats",
    "q",
]

log = logging.getLogger("shipdeck.ssh")

#: tries per connection when sshd resets it before the handshake (MaxStartups)
CONNECT_ATTEMPTS = 4
#: hops of a ProxyJump chain followed at most (a loop in ssh config ends here)
MAX_JUMP_HOPS = 8
#: bytes of an ssh config file (and its includes) read at most
MAX_CONFIG_BYTES = 1 << 20


class HostKeyError(SSHError):
    """The host key is unknown (strict policy) or has CHANGED."""

    def __init__(self, message: str, *, changed: bool, fingerprint: str, key_type: str):
        super().__init__(message)
        self.changed = changed
        self.fingerprint = fingerprint
        self.key_type = key_type


class Prompter(Protocol):
    """How the engine asks the operator (the TUI shows modals; headless may use a TTY).

    A prompter with ``interactive = False`` has nobody to ask: the engine then reports
    what it would have asked instead of asking."""

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool: ...

    async def ask_password(self, host: str, user: str) -> str | None: ...

    async def ask_passphrase(self, path: str) -> str | None:
        """The passphrase of the encrypted key file ``path`` (None: not given).

        Prompters without this method are asked through ``ask_password``."""
        ...


async def _ask_passphrase(prompter: Any, path: str) -> str | None:
    ask = getattr(prompter, "ask_passphrase", None)
    if ask is not None:
        return await ask(path)
    return await prompter.ask_password(f"key {path}", "passphrase")


def _can_ask(prompter: Any) -> bool:
    return prompter is not None and getattr(prompter, "interactive", True) is not False


def _expand(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)


@dataclass(frozen=True)
class Target:
    """Where to connect, after ssh config and shipdeck.toml are merged."""

    name: str
    host: str  # what we connect to (after HostName)
    port: int
    user: str
    identities: tuple[str, ...]
    jump: str | None
    certificates: tuple[str, ...] = ()  # CertificateFile
    identities_only: bool = False  # IdentitiesOnly: agent keys only if they match a file
    known_hosts: tuple[str, ...] = ()  # UserKnownHostsFile (first: where keys are added)
    proxy_command: str | None = None  # ProxyCommand (when no ProxyJump)
    agent: str | None = None  # IdentityAgent; "" = none


@dataclass
class WireStats:
    """What one connection cost on the wire (a debug counter).

    ``round_trips`` counts turns: a read that follows a write since the previous read
    (the client waited for the peer), plus the TCP handshake of a direct connection.
    Bytes are the SSH stream's (after encryption), both directions."""

    round_trips: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    handshake_round_trips: int = 0  # round_trips when authentication completed
    handshake_s: float = 0.0
    _waiting: bool = field(default=False, repr=False)

    def as_dict(self) -> dict[str, float]:
        return {
            "round_trips": self.round_trips,
            "handshake_round_trips": self.handshake_round_trips,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "handshake_s": round(self.handshake_s, 4),
        }


class _CountingTransport:
    """The transport asyncssh writes to, counting bytes and turns."""

    def __init__(self, inner: Any, stats: WireStats):
        self._inner = inner
        self._stats = stats

    def write(self, data: bytes) -> None:
        self._stats.bytes_out += len(data)
        self._stats._waiting = True
        self._inner.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CountingProtocol:
    """Wraps asyncssh's connection protocol on its TCP (or tunnel) transport."""

    def __init__(self, inner: Any, stats: WireStats):
        self._inner = inner
        self._stats = stats

    def connection_made(self, transport: Any) -> None:
        self._inner.connection_made(_CountingTransport(transport, self._stats))

    def data_received(self, data: bytes, *args: Any) -> None:
        self._stats.bytes_in += len(data)
        if self._stats._waiting:
            self._stats.round_trips += 1
            self._stats._waiting = False
        self._inner.data_received(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CountingTunnel:
    """asyncssh's ``tunnel`` interface: open the stream (TCP, or a channel of a jump
    connection) with the protocol wrapped in counters."""

    def __init__(self, stats: WireStats, via: Any = None, addr: str | None = None):
        self.stats = stats
        self.via = via
        self.addr = addr  # resolved already (for the handshake cap): not looked up twice

    async def create_connection(self, factory: Callable[[], Any], host: str, port: int) -> Any:
        made: list[Any] = []

        def wrapped() -> _CountingProtocol:
            made.append(factory())
            return _CountingProtocol(made[0], self.stats)

        if self.via is not None:
            transport, _ = await self.via.create_connection(wrapped, host, port)
        else:
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_connection(wrapped, self.addr or host, port)
            self.stats.round_trips += 1  # the TCP handshake
        return transport, made[0]


class _HostKeys:
    """The host keys of one deploy: what known_hosts trusts, what was presented, what
    the operator decided. A key is recorded once, asked about once."""

    def __init__(self, default_file: str, policy: str):
        self.default_file = default_file
        self.policy = policy
        #: (host, port) -> (changed, key) as last presented
        self.seen: dict[tuple[str, int], tuple[bool, asyncssh.SSHKey]] = {}
        #: (host, port, key blob) -> the operator's answer
        self.answers: dict[tuple[str, int, bytes], bool] = {}
        self.recorded = 0  # keys appended to a known_hosts file by this deploy
        self._cache: dict[tuple[str, ...], tuple[int, Any]] = {}

    def files(self, target: Target) -> tuple[str, ...]:
        """Every file trusted for ``target``; the first is where new keys go."""
        files = list(target.known_hosts)
        if self.default_file not in files:
            files.append(self.default_file)
        return tuple(files)

    def trusted(self, files: tuple[str, ...]) -> Any:
        """The files parsed (once per deploy; again after a key was recorded)."""
        cached = self._cache.get(files)
        if cached is not None and cached[0] == self.recorded:
            return cached[1]
        parts = []
        for path in files:
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    parts.append(f.read(MAX_CONFIG_BYTES * 16))
            except OSError:
                continue
        try:
            kh = asyncssh.import_known_hosts("\n".join(parts))
        except (ValueError, asyncssh.KeyImportError):
            kh = asyncssh.import_known_hosts("")
        self._cache[files] = (self.recorded, kh)
        return kh

    def decide(
        self, files: tuple[str, ...], host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        """asyncssh asks about a key known_hosts does not trust."""
        kh = self.trusted(files)
        keys = kh.match(host, addr, port if port != 22 else None)[0]
        if key.public_data in {k.public_data for k in keys}:
            return True  # recorded since this connection started
        changed = bool(keys)
        self.seen[(host, port)] = (changed, key)
        if changed:
            return False
        if self.answers.get((host, port, key.public_data)):
            return True
        if self.policy == "accept-new":
            self.record(files[0], host, port, key)
            return True
        return False

    def record(self, path: str, host: str, port: int, key: asyncssh.SSHKey) -> None:
        """Append the key for host:port to ``path`` unless a line already says so."""
        self.answers[(host, port, key.public_data)] = True
        pattern = host if port == 22 else f"[{host}]:{port}"
        try:
            existing = asyncssh.import_known_hosts(Path(path).read_text(errors="replace"))
            if key.public_data in {
                k.public_data for k in existing.match(host, host, port if port != 22 else None)[0]
            }:
                return
        except (OSError, ValueError, asyncssh.KeyImportError):
            pass
        line = f"{pattern} {key.export_public_key().decode().strip()}\n"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
        self.recorded += 1


class _PromptClock:
    """Time spent waiting for the operator to answer a prompt."""

    def __init__(self) -> None:
        self.active = False
        self._spent = 0.0
        self._since = 0.0

    def start(self) -> None:
        self.active, self._since = True, time.monotonic()

    def stop(self) -> None:
        if self.active:
            self._spent += time.monotonic() - self._since
        self.active = False

    def spent(self) -> float:
        return self._spent + (time.monotonic() - self._since if self.active else 0.0)


def _client_factory(
    keys: _HostKeys,
    files: tuple[str, ...],
    prompter: Prompter | None,
    password: str | None,
    label: str,
    user: str,
    clock: _PromptClock,
    lost: list[str],
    on_auth: Callable[[], None],
) -> type:
    class Client(asyncssh.SSHClient):
        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            return keys.decide(files, host, addr, port, key)

        _password_tries = 0

        def auth_completed(self) -> None:
            on_auth()

        def connection_lost(self, exc: Exception | None) -> None:
            if exc is not None:
                lost.append(str(exc))

        async def password_auth_requested(self) -> str | None:  # type: ignore[override]
            # like ssh: the configured password once, or up to 3 prompts; then give up
            self._password_tries += 1
            if password is not None:
                return password if self._password_tries == 1 else None
            if not _can_ask(prompter) or self._password_tries > 3:
                return None
            assert prompter is not None
            clock.start()
            try:
                return await prompter.ask_password(label, user)
            finally:
                clock.stop()

    return Client


class _Host(Host):
    """A host whose connection says why it ended: a host that stops answering
    keepalives fails its step with that reason, not "the remote shell ended"."""

    def __init__(self, *args: Any, lost: list[str], dead_after: float, wire: WireStats | None):
        super().__init__(*args)
        self._lost = lost
        self._dead_after = dead_after
        self.wire = wire

    def _why(self, exc: SSHError) -> SSHError:
        if isinstance(exc, CommandTimeout) or not self._lost or "keepalive" not in self._lost[0]:
            return exc
        return SSHError(
            f"host stopped answering: no reply to keepalives for {self._dead_after:g}s"
            " (ssh.dead_after)"
        )

    async def run(self, command: str, **kw: Any) -> CommandResult:
        try:
            result = await super().run(command, **kw)
        except SSHError as exc:
            raise self._why(exc) from None
        return result

    async def get(self, remote: str, local: Path) -> None:
        try:
            await super().get(remote, local)
        except SSHError as exc:
            raise self._why(exc) from None


def _tcp_bytes(conn: Any) -> tuple[int, int] | None:
    """(bytes sent and acknowledged, bytes received) of a TCP connection (Linux)."""
    sock = conn.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
        return struct.unpack_from("QQ", info, 120)  # tcpi_bytes_acked, tcpi_bytes_received
    except (OSError, struct.error):
        return None


class Connector:
    """Opens (and closes) the connections of one deploy."""

    def __init__(
        self,
        ssh: SshConfig,
        base_dir: Path,
        *,
        prompter: Prompter | None = None,
        on_log: Callable[[str], None] | None = None,
    ):
        self.ssh = ssh
        self.base_dir = base_dir
        self.prompter = prompter
        self.on_log = on_log or (lambda _msg: None)
        self.known_hosts = _expand(ssh.known_hosts, base_dir) or os.path.expanduser(
            "~/.ssh/known_hosts"
        )
        self.config_path = _expand(ssh.config, base_dir)
        if self.config_path and not os.path.isfile(self.config_path):
            self.config_path = None
        self.keys = _HostKeys(self.known_hosts, ssh.host_key_policy)
        self.password = os.environ.get(ssh.password_env) if ssh.password_env else None
        self.passphrase = os.environ.get(ssh.passphrase_env) if ssh.passphrase_env else None
        self._global = asyncio.Semaphore(ssh.max_handshakes)
        self._endpoints: dict[tuple[Any, ...], asyncio.Semaphore] = {}
        self._key_cache: dict[str, Any] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._agents: dict[str, tuple[Any, list[tuple[bytes, bytes]]] | None] = {}
        self._agent_lock = asyncio.Lock()
        self._jumps: dict[str, asyncio.Task[asyncssh.SSHClientConnection]] = {}
        self._hosts: list[Host] = []
        self._prompt_lock = asyncio.Lock()
        self._resolved: dict[tuple[str, bool], dict[str, Any]] = {}
        self.connections_opened = 0
        self.connect_retries = 0
        #: handshakes in flight now / at most, per endpoint key and over the fleet
        self.in_flight: dict[tuple[Any, ...], int] = {}
        self.peak_in_flight: dict[tuple[Any, ...], int] = {}
        self.peak_global = 0
        self._global_now = 0
        #: wire counters per host name (see WireStats)
        self.wire: dict[str, WireStats] = {}

    # -- resolution ----------------------------------------------------------

    def _ssh_config(self, host: str) -> dict[str, Any]:
        """The OpenSSH client config's options for ``host`` (as ssh -G would say)."""
        if not self.config_path:
            return {}
        try:
            if os.path.getsize(self.config_path) > MAX_CONFIG_BYTES:
                raise SSHError(
                    f"ssh config {self.config_path} is larger than {MAX_CONFIG_BYTES} bytes"
                )
            cfg = asyncssh.config.SSHClientConfig.load(
                None, [self.config_path], False, False, False, getpass.getuser(), (), host, ()
            )
        except (OSError, asyncssh.Error, ValueError) as exc:
            raise SSHError(f"cannot read ssh config {self.config_path}: {exc}") from None
        return cfg.get_options(False)

    def resolve(self, spec: HostSpec, *, inherit: bool = True) -> Target:
        """Merge the host spec, [ssh] and the OpenSSH client config for this host.

        ``inherit=False`` (a jump host): [ssh] user and port, meant for the fleet, do
        not apply; only the spec and the ssh config do."""
        opts = self._ssh_config(spec.host)
        host = opts.get("Hostname") or spec.host
        fleet_port = self.ssh.port if inherit else None
        fleet_user = self.ssh.user if inherit else None
        port = spec.port or fleet_port or opts.get("Port") or 22
        user = spec.user or fleet_user or opts.get("User") or getpass.getuser()
        identities: list[str] = []
        if self.ssh.identity:
            identities.append(_expand(self.ssh.identity, self.base_dir) or "")
        for ident in opts.get("IdentityFile") or ():
            if str(ident).lower() != "none":
                identities.append(os.path.expanduser(str(ident)))
        certs = tuple(
            os.path.expanduser(str(c))
            for c in opts.get("CertificateFile") or ()
            if str(c).lower() != "none"
        )
        jump = (self.ssh.jump if inherit else None) or opts.get("ProxyJump")
        if isinstance(jump, (list, tuple)):
            jump = ",".join(jump)
        if jump in ("none", ""):
            jump = None
        proxy = opts.get("ProxyCommand")
        if isinstance(proxy, (list, tuple)):
            proxy = " ".join(proxy)
        if not proxy or str(proxy).lower() == "none" or jump:
            proxy = None
        known = tuple(
            os.path.expanduser(str(p))
            for p in opts.get("UserKnownHostsFile") or ()
            if str(p).lower() != "none"
        )
        agent = opts.get("IdentityAgent")
        if agent is not None:
            agent = "" if str(agent).lower() == "none" else os.path.expanduser(str(agent))
            if agent == "SSH_AUTH_SOCK":
                agent = None
        return Target(
            spec.name,
            str(host),
            int(port),
            str(user),
            tuple(dict.fromkeys(i for i in identities if i)),
            jump,
            certificates=certs,
            identities_only=bool(opts.get("IdentitiesOnly")),
            known_hosts=known,
            proxy_command=proxy,
            agent=agent,
        )

    # -- identities ------------------------------------------------------------

    async def _agent(self, path: str | None) -> tuple[Any, list[tuple[bytes, bytes]]] | None:
        """The ssh-agent at ``path`` (None: SSH_AUTH_SOCK) and its keys (blob,
        algorithm), listed once per deploy."""
        where = os.environ.get("SSH_AUTH_SOCK", "") if path is None else path
        if not where:
            return None
        async with self._agent_lock:
            if where not in self._agents:
                try:
                    agent = await asyncio.wait_for(asyncssh.connect_agent(where), 5)
                    keys = await asyncio.wait_for(agent.get_keys(), 5)
                    self._agents[where] = (
                        agent,
                        [(k.public_data, k.algorithm) for k in keys],
                    )
                except (OSError, asyncssh.Error, ValueError, TimeoutError) as exc:
                    log.info("ssh-agent %s not usable: %s", where, exc)
                    self._agents[where] = None
            return self._agents[where]

    async def _private_key(self, path: str) -> Any:
        """The private key in ``path``, decrypted with the passphrase (asked once)."""
        lock = self._key_locks.setdefault(path, asyncio.Lock())
        async with lock:
            if path in self._key_cache:
                return self._key_cache[path]
            try:
                key = asyncssh.read_private_key(path)
            except asyncssh.KeyEncryptionError:
                raise SSHError(f"cannot use identity {path}: cannot decrypt it") from None
            except asyncssh.KeyImportError as exc:
                if "passphrase" not in str(exc).lower():
                    raise SSHError(f"cannot use identity {path}: {exc}") from None
                key = await self._decrypt(path)
            except OSError as exc:
                raise SSHError(f"cannot read identity {path}: {exc.strerror or exc}") from None
            self._key_cache[path] = key
            return key

    async def _decrypt(self, path: str) -> Any:
        tries = 1 if self.passphrase is not None else 3
        for n in range(tries):
            if self.passphrase is not None:
                phrase: str | None = self.passphrase
                where = f"ssh.passphrase_env ({self.ssh.passphrase_env})"
            elif _can_ask(self.prompter):
                async with self._prompt_lock:
                    phrase = await _ask_passphrase(self.prompter, path)
                where = "the passphrase given"
            else:
                raise SSHError(
                    f"cannot use identity {path}: it is encrypted, its key is not in "
                    "ssh-agent and there is no terminal to ask for its passphrase; "
                    "add it with ssh-add or set ssh.passphrase_env"
                )
            if phrase is None:
                raise SSHError(f"cannot use identity {path}: no passphrase given")
            try:
                return asyncssh.read_private_key(path, phrase)
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError):
                if n == tries - 1:
                    raise SSHError(
                        f"cannot use identity {path}: {where} does not decrypt it"
                    ) from None
        raise AssertionError("unreachable")

    def _public_half(self, path: str) -> bytes | None:
        """The public key of identity ``path`` without decrypting it: ``<path>.pub``,
        ``<path>-cert.pub`` or the private file's own public part."""
        for candidate in (path + ".pub", path + "-cert.pub"):
            try:
                if os.path.getsize(candidate) < 64 * 1024:
                    try:
                        return asyncssh.read_certificate(candidate).key.public_data
                    except (asyncssh.KeyImportError, ValueError):
                        return asyncssh.read_public_key(candidate).public_data
            except (OSError, asyncssh.KeyImportError, ValueError):
                continue
        try:  # OpenSSH-format private keys carry the public key in clear
            return asyncssh.read_public_key(path).public_data
        except (OSError, asyncssh.KeyImportError, ValueError):
            return None

    def _certificates(self, target: Target, identities: tuple[str, ...]) -> dict[bytes, Any]:
        """Certificates by the public key they certify: CertificateFile and
        ``<identity>-cert.pub`` files."""
        paths = list(target.certificates) + [p + "-cert.pub" for p in identities]
        certs: dict[bytes, Any] = {}
        for path in paths:
            try:
                if os.path.getsize(path) > 64 * 1024:
                    continue
                cert = asyncssh.read_certificate(path)
            except (OSError, asyncssh.KeyImportError, ValueError):
                continue
            certs.setdefault(cert.key.public_data, cert)
        return certs

    async def _client_keys(self, target: Target) -> tuple[list[Any] | None, str | None]:
        """The keys to offer, in OpenSSH's order (agent keys, then files), and the
        agent path for asyncssh (None: keys are explicit)."""
        files = tuple(p for p in target.identities if os.path.exists(p))  # noqa: ASYNC240
        if not target.identities and not target.certificates:
            return None, None  # asyncssh's defaults: the agent, then ~/.ssh/id_*
        agent = await self._agent(target.agent)
        certs = self._certificates(target, files)
        offered: list[Any] = []
        in_agent: set[bytes] = set()
        wanted = {self._public_half(p) for p in files} - {None}
        if agent is not None:
            client, listing = agent
            for blob, algorithm in listing:
                if target.identities_only and blob not in wanted:
                    continue
                pair = asyncssh.agent.SSHAgentKeyPair(client, algorithm, blob, b"")
                in_agent.add(blob)
                if blob in certs:
                    cert_pair = asyncssh.agent.SSHAgentKeyPair(client, algorithm, blob, b"")
                    cert_pair.set_certificate(certs[blob])
                    offered.append(cert_pair)
                offered.append(pair)
        for path in files:
            if self._public_half(path) in in_agent:
                continue  # the agent signs for it; no passphrase needed
            key = await self._private_key(path)
            cert = certs.get(key.public_data)
            offered.extend(asyncssh.load_keypairs([(key, cert)] if cert else [key]))
            if cert is not None:
                offered.extend(asyncssh.load_keypairs([key]))
        return offered, None

    # -- connecting ------------------------------------------------------------

    async def _endpoint(
        self, target: Target, tunnel_key: str | None
    ) -> tuple[tuple[Any, ...], str | None]:
        """Where the handshake limit lives for ``target`` (the sshd behind it), and
        the address its name resolved to (direct connections)."""
        if target.proxy_command:
            return ("proxy", target.proxy_command), None
        if tunnel_key:
            return ("via", tunnel_key), None
        try:
            addr = str(ipaddress.ip_address(target.host))
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM
                )
                addr = str(infos[0][4][0])
            except (OSError, IndexError):
                # the connection attempt reports the lookup failure, with the host name
                return ("addr", target.host, target.port), None
        # hosts whose known_hosts entries name the same key are one sshd (several
        # addresses of one server): its MaxStartups counts them together
        kh = self.keys.trusted(self.keys.files(target))
        keys = kh.match(target.host, addr, target.port if target.port != 22 else None)[0]
        if keys:
            return ("sshd", frozenset(k.public_data for k in keys)), addr
        return ("addr", addr, target.port), addr

    async def _open(self, target: Target, tunnel: Any) -> asyncssh.SSHClientConnection:
        tunnel_key = getattr(tunnel, "_shipdeck_chain", None) if tunnel is not None else None
        endpoint, addr = await self._endpoint(target, tunnel_key)
        sem = self._endpoints.setdefault(endpoint, asyncio.Semaphore(self.ssh.max_startups))
        prompt = _PromptClock()
        lost: list[str] = []
        stats = WireStats()
        loop = asyncio.get_running_loop()
        started = loop.time()

        def on_auth() -> None:
            stats.handshake_round_trips = stats.round_trips
            stats.handshake_s = loop.time() - started

        files = self.keys.files(target)
        client = _client_factory(
            self.keys,
            files,
            self.prompter,
            self.password,
            target.name,
            target.user,
            prompt,
            lost,
            on_auth,
        )
        keys, _ = await self._client_keys(target)
        # OpenSSH's ServerAliveInterval/CountMax: the connection is dropped after
        # count + 1 silent intervals, i.e. dead_after
        interval = self.ssh.keepalive or self.ssh.dead_after / 4
        count = max(1, round(self.ssh.dead_after / interval) - 1)
        options: dict[str, Any] = dict(
            known_hosts=self.keys.trusted(files),
            username=target.user,
            port=target.port,
            connect_timeout=None,  # enforced around the whole connect, prompts excluded
            login_timeout=600 if _can_ask(self.prompter) else self.ssh.connect_timeout,
            keepalive_interval=interval,
            keepalive_count_max=count,
            config=None,
            password=None,
            # AES-GCM is hardware-accelerated almost everywhere: about twice the
            # SFTP throughput of chacha20 for half the client CPU
            encryption_algs=[
                "aes128-gcm@openssh.com",
                "aes256-gcm@openssh.com",
                "chacha20-poly1305@openssh.com",
                "aes128-ctr",
                "aes256-ctr",
            ],
        )
        if keys is not None:
            options["client_keys"] = keys
            options["agent_path"] = None
        elif target.agent is not None:
            options["agent_path"] = target.agent or None
        if target.proxy_command:
            options["proxy_command"] = target.proxy_command
            via = None
        else:
            via = _CountingTunnel(stats, tunnel, None if tunnel is not None else addr)

        async def attempt() -> Any:
            # sshd drops connections beyond its MaxStartups before the handshake (a
            # reset, nothing ran on the host): try again, like ssh's
            # ConnectionAttempts, a few times with a short random pause
            for n in range(1, CONNECT_ATTEMPTS + 1):
                stats.round_trips = stats.bytes_in = stats.bytes_out = 0
                try:
                    return await asyncssh.create_connection(
                        client, target.host, tunnel=via, **options
                    )
                except (ConnectionResetError, asyncssh.ConnectionLost) as exc:
                    if n == CONNECT_ATTEMPTS:
                        raise
                    log.info(
                        "%s:%s dropped the connection before the handshake (%s); retrying",
                        target.host,
                        target.port,
                        exc,
                    )
                    self.connect_retries += 1
                    await asyncio.sleep(0.05 * n + random.random() * 0.05)
            raise AssertionError("unreachable")

        async with sem, self._global:
            self.in_flight[endpoint] = self.in_flight.get(endpoint, 0) + 1
            self._global_now += 1
            self.peak_in_flight[endpoint] = max(
                self.peak_in_flight.get(endpoint, 0), self.in_flight[endpoint]
            )
            self.peak_global = max(self.peak_global, self._global_now)
            started = loop.time()
            task = asyncio.ensure_future(attempt())
            try:
                # connect_timeout covers TCP, handshake and auth -- but not the time an
                # operator spends typing a password into a prompt
                while not task.done():
                    remaining = started + self.ssh.connect_timeout + prompt.spent() - loop.time()
                    if remaining <= 0 and not prompt.active:
                        task.cancel()
                        raise TimeoutError
                    await asyncio.wait({task}, timeout=max(remaining, 0.05))
                conn, _ = task.result()
            except TimeoutError:
                raise SSHError(
                    f"timed out connecting to {target.host}:{target.port} after {self.ssh.connect_timeout:g}s"
                ) from None
            except asyncio.CancelledError:
                task.cancel()
                raise
            except asyncssh.HostKeyNotVerifiable:
                raise self._host_key_error(target) from None
            except asyncssh.PermissionDenied as exc:
                raise SSHError(
                    f"authentication failed for {target.user}@{target.host}:{target.port}: {exc.reason}"
                ) from None
            except asyncssh.DisconnectError as exc:
                raise SSHError(f"{target.host}:{target.port} disconnected: {exc.reason}") from None
            except ConnectionRefusedError:
                raise SSHError(f"connection refused by {target.host}:{target.port}") from None
            except OSError as exc:
                raise SSHError(
                    f"cannot reach {target.host}:{target.port}: {exc.strerror or exc}"
                ) from None
            except asyncssh.Error as exc:
                raise SSHError(f"{target.host}:{target.port}: {exc}") from None
            except (ValueError, TypeError) as exc:  # key or option problems
                raise SSHError(f"{target.host}:{target.port}: {exc}") from None
            finally:
                self.in_flight[endpoint] -= 1
                self._global_now -= 1
        self.connections_opened += 1
        conn._shipdeck_lost = lost  # type: ignore[attr-defined]
        conn._shipdeck_wire = stats  # type: ignore[attr-defined]
        return conn

    def _host_key_error(self, target: Target) -> HostKeyError:
        changed, key = self.keys.seen.get((target.host, target.port), (False, None))
        where = self.keys.files(target)[0]
        if key is None:
            return HostKeyError(
                f"host key for {target.host}:{target.port} is not trusted",
                changed=False,
                fingerprint="",
                key_type="",
            )
        fp, kt = key.get_fingerprint(), key.get_algorithm()
        if changed:
            return HostKeyError(
                f"HOST KEY CHANGED for {target.host}:{target.port} (now {kt} {fp}); refusing to connect. "
                f"If the change is expected, remove the old entry from {where}",
                changed=True,
                fingerprint=fp,
                key_type=kt,
            )
        scan = (
            f"ssh-keyscan {target.host}"
            if target.port == 22
            else f"ssh-keyscan -p {target.port} {target.host}"
        )
        return HostKeyError(
            f"unknown host key for {target.host}:{target.port} ({kt} {fp}), and no terminal "
            f"to ask on; verify it, then add it (`{scan} >> {where}`) "
            f'or set ssh.host_key_policy = "accept-new"',
            changed=False,
            fingerprint=fp,
            key_type=kt,
        )

    async def _jump(self, jump: str, seen: tuple[str, ...] = ()) -> asyncssh.SSHClientConnection:
        """The connection to the last hop of ``jump`` (``a,b``: b reached through a),
        opened once per deploy and shared by every target behind it."""
        if jump in seen or len(seen) >= MAX_JUMP_HOPS:
            raise SSHError(f"jump host {seen[0] if seen else jump}: ProxyJump loops through {jump}")
        task = self._jumps.get(jump)
        if task is None:
            hops = [h.strip() for h in jump.split(",") if h.strip()]
            try:
                spec = parse_host(hops[-1])
            except ValueError as exc:
                raise SSHError(f"jump host {jump}: {exc}") from None
            target = self.resolve(spec, inherit=False)
            before = ",".join(hops[:-1]) or target.jump
            target = Target(
                f"jump {hops[-1]}",
                target.host,
                target.port,
                target.user,
                target.identities,
                None,
                certificates=target.certificates,
                identities_only=target.identities_only,
                known_hosts=target.known_hosts,
                proxy_command=target.proxy_command,
                agent=target.agent,
            )

            async def open_hop() -> asyncssh.SSHClientConnection:
                via = await self._jump(before, (*seen, jump)) if before else None
                conn = await self._open_checked(target, via)
                conn._shipdeck_chain = jump  # type: ignore[attr-defined]
                return conn

            task = asyncio.ensure_future(open_hop())
            self._jumps[jump] = task
            self.on_log(f"jump host {jump}: one connection for every target")
        try:
            return await asyncio.shield(task)
        except SSHError as exc:
            if str(exc).startswith("jump host "):
                raise
            raise SSHError(f"jump host {jump}: {exc}") from None

    async def _open_checked(self, target: Target, tunnel: Any) -> asyncssh.SSHClientConnection:
        """Open, asking the operator about an unknown host key when someone can answer;
        each key is asked about once per deploy."""
        try:
            return await self._open(target, tunnel)
        except HostKeyError as exc:
            if exc.changed or not exc.fingerprint or not _can_ask(self.prompter):
                raise
            assert self.prompter is not None
            _, key = self.keys.seen[(target.host, target.port)]
            ident = (target.host, target.port, key.public_data)
            async with self._prompt_lock:
                accepted = self.keys.answers.get(ident)
                if accepted is None:
                    accepted = bool(
                        await self.prompter.confirm_host_key(
                            target.name, exc.fingerprint, exc.key_type
                        )
                    )
                    if accepted:
                        self.keys.record(self.keys.files(target)[0], *ident[:2], key)
                    else:
                        self.keys.answers[ident] = False
            if not accepted:
                raise HostKeyError(
                    f"host key {exc.key_type} {exc.fingerprint} of {target.host}:{target.port} "
                    "rejected by the operator",
                    changed=False,
                    fingerprint=exc.fingerprint,
                    key_type=exc.key_type,
                ) from None
            return await self._open(target, tunnel)

    async def connect(self, spec: HostSpec) -> Host:
        """Connect to one host (through its jump hosts if any). Raises SSHError."""
        target = self.resolve(spec)
        tunnel = await self._jump(target.jump) if target.jump else None
        conn = await self._open_checked(target, tunnel)
        wire: WireStats | None = getattr(conn, "_shipdeck_wire", None)
        if wire is not None:
            self.wire[spec.name] = wire
        host = _Host(
            spec.name,
            conn,
            max(1, self.ssh.max_sessions),
            self.ssh.command_timeout,
            lost=getattr(conn, "_shipdeck_lost", []),
            dead_after=self.ssh.dead_after,
            wire=wire,
        )
        self._hosts.append(host)
        return host

    def stats(self) -> dict[str, dict[str, float]]:
        """Per host: round trips, bytes and handshake time (a debug counter), with the
        commands and shell sessions its Host ran."""
        out: dict[str, dict[str, float]] = {}
        for host in self._hosts:
            wire = getattr(host, "wire", None)
            row: dict[str, float] = wire.as_dict() if wire is not None else {}
            row["commands"] = getattr(host, "commands_run", 0)
            row["sessions"] = getattr(host, "shells_started", 0)
            tcp = _tcp_bytes(host.conn)
            if tcp is not None:
                row["tcp_bytes_acked"], row["tcp_bytes_received"] = tcp
            out[host.name] = row
        return out

    async def close(self) -> None:
        for host in self._hosts:
            host.close()

        async def closed(host: Host) -> None:
            try:
                await asyncio.wait_for(host.conn.wait_closed(), 2)
            except (TimeoutError, asyncssh.Error, OSError):
                pass

        await asyncio.gather(*(closed(h) for h in self._hosts))
        self._hosts.clear()
        for task in reversed(list(self._jumps.values())):
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
            else:
                task.cancel()
        self._jumps.clear()
        for entry in self._agents.values():
            if entry is not None:
                entry[0].close()
        self._agents.clear()

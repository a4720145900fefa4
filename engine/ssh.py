"""The SSH layer: one asyncssh connection per host, reused for every command and
SFTP transfer of a deploy.

- handshakes are capped (``ssh.max_startups``) so sshd's MaxStartups never drops us;
- commands on one connection are capped (``ssh.max_sessions``) below MaxSessions;
- a jump host is connected once and every target is tunnelled through it;
- ~/.ssh/config (Host aliases, HostName, User, Port, IdentityFile, ProxyJump),
  ssh-agent and known_hosts are honoured; host keys are strict by default,
  ``accept-new`` records an unknown key, a changed key is always refused;
- timeouts everywhere: connect, commands, keepalives.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    "q",
]

log = logging.getLogger("shipdeck.ssh")

#: tries per connection when sshd resets it before the handshake (MaxStartups)
CONNECT_ATTEMPTS = 4


class HostKeyError(SSHError):
    """The host key is unknown (strict policy) or has CHANGED."""

    def __init__(self, message: str, *, changed: bool, fingerprint: str, key_type: str):
        super().__init__(message)
        self.changed = changed
        self.fingerprint = fingerprint
        self.key_type = key_type


class Prompter(Protocol):
    """How the engine asks the operator (the TUI shows modals; headless may use a TTY)."""

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool: ...

    async def ask_password(self, host: str, user: str) -> str | None: ...


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


class _HostKeyCheck:
    """Decides on keys that known_hosts does not already trust."""

    def __init__(self, known_hosts: str, policy: str, lock: asyncio.Lock | None = None):
        self.path = known_hosts
        self.policy = policy
        self.seen: dict[tuple[str, int], tuple[bool, asyncssh.SSHKey]] = {}
        self.recorded = 0  # keys appended to known_hosts by this deploy

    def has_entry(self, host: str, addr: str, port: int) -> bool:
        try:
            kh = asyncssh.read_known_hosts(self.path)
        except (OSError, ValueError):
            return False
        keys = kh.match(host, addr, port if port != 22 else None)[0]
        return bool(keys)

    def record(self, host: str, port: int, key: asyncssh.SSHKey) -> None:
        pattern = host if port == 22 else f"[{host}]:{port}"
        line = f"{pattern} {key.export_public_key().decode().strip()}\n"
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
        self.recorded += 1

    def decide(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        changed = self.has_entry(host, addr, port)
        self.seen[(host, port)] = (changed, key)
        if changed:
            return False
        if self.policy == "accept-new":
            self.record(host, port, key)
            return True
        return False


class _PromptClock:
    """Time spent waiting for the operator to answer a password prompt."""

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
    check: _HostKeyCheck,
    prompter: Prompter | None,
    password: str | None,
    label: str,
    user: str,
    clock: _PromptClock | None = None,
) -> type:
    class Client(asyncssh.SSHClient):
        def validate_host_public_key(
            self, host: str, addr: str, port: int, key: asyncssh.SSHKey
        ) -> bool:
            return check.decide(host, addr, port, key)

        _password_tries = 0

        async def password_auth_requested(self) -> str | None:  # type: ignore[override]
            # like ssh: the configured password once, or up to 3 prompts; then give up
            self._password_tries += 1
            if password is not None:
                return password if self._password_tries == 1 else None
            if prompter is None or self._password_tries > 3:
                return None
            if clock is not None:
                clock.start()
            try:
                return await prompter.ask_password(label, user)
            finally:
                if clock is not None:
                    clock.stop()

    return Client


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
        self.check = _HostKeyCheck(self.known_hosts, ssh.host_key_policy)
        self.password = os.environ.get(ssh.password_env) if ssh.password_env else None
        self._startups = asyncio.Semaphore(ssh.max_startups)
        self._kh_cache: Any = None
        self._kh_version = -1
        self._key_cache: dict[str, Any] = {}
        self._jumps: dict[str, asyncio.Task[asyncssh.SSHClientConnection]] = {}
        self._hosts: list[Host] = []
        self._prompt_lock = asyncio.Lock()
        self.connections_opened = 0
        self.connect_retries = 0

    # -- resolution ----------------------------------------------------------

    def resolve(self, spec: HostSpec, *, inherit: bool = True) -> Target:
        """Merge the host spec, [ssh] and the OpenSSH client config for this host.

        ``inherit=False`` (a jump host): [ssh] user and port, meant for the fleet, do
        not apply; only the spec and the ssh config do."""
        opts: dict[str, Any] = {}
        if self.config_path:
            try:
                cfg = asyncssh.config.SSHClientConfig.load(
                    None,
                    [self.config_path],
                    False,
                    False,
                    False,
                    getpass.getuser(),
                    (),
                    spec.host,
                    (),
                )
                opts = {
                    k: cfg.get(k) for k in ("Hostname", "User", "Port", "IdentityFile", "ProxyJump")
                }
            except (OSError, asyncssh.Error, ValueError) as exc:
                raise SSHError(f"cannot read ssh config {self.config_path}: {exc}") from None
        host = opts.get("Hostname") or spec.host
        fleet_port = self.ssh.port if inherit else None
        fleet_user = self.ssh.user if inherit else None
        port = spec.port or fleet_port or opts.get("Port") or 22
        user = spec.user or fleet_user or opts.get("User") or getpass.getuser()
        identities: list[str] = []
        if self.ssh.identity:
            identities.append(_expand(self.ssh.identity, self.base_dir) or "")
        for ident in opts.get("IdentityFile") or ():
            identities.append(os.path.expanduser(str(ident)))
        jump = self.ssh.jump or opts.get("ProxyJump")
        if isinstance(jump, (list, tuple)):
            jump = ",".join(jump)
        if jump in ("none", ""):
            jump = None
        return Target(
            spec.name, str(host), int(port), str(user), tuple(i for i in identities if i), jump
        )

    # -- connecting ------------------------------------------------------------

    def _known_hosts(self) -> Any:
        """known_hosts parsed once per deploy (re-read after a key is recorded)."""
        if self._kh_cache is None or self.check.recorded != self._kh_version:
            try:
                self._kh_cache = (
                    asyncssh.read_known_hosts(self.known_hosts)
                    if os.path.exists(self.known_hosts)
                    else b""
                )
            except (OSError, ValueError):
                self._kh_cache = b""
            self._kh_version = self.check.recorded
        return self._kh_cache

    def _keys(self, paths: tuple[str, ...]) -> list[Any]:
        """Private keys loaded once per deploy; an unusable key file is an SSHError."""
        keys = []
        for path in paths:
            if not os.path.exists(path):
                continue
            if path not in self._key_cache:
                try:
                    self._key_cache[path] = asyncssh.read_private_key(path)
                except asyncssh.KeyImportError as exc:
                    raise SSHError(
                        f"cannot use identity {path}: {exc} (an encrypted key needs ssh-agent)"
                    ) from None
                except OSError as exc:
                    raise SSHError(f"cannot read identity {path}: {exc.strerror or exc}") from None
            keys.append(self._key_cache[path])
        return keys

    def _options(self, target: Target, login_timeout: float) -> dict[str, Any]:
        options: dict[str, Any] = dict(
            known_hosts=self._known_hosts(),
            username=target.user,
            port=target.port,
            connect_timeout=None,  # enforced around the whole connect, prompts excluded
            login_timeout=login_timeout,
            keepalive_interval=self.ssh.keepalive,
            keepalive_count_max=3,
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
        keys = self._keys(target.identities)
        if keys:
            options["client_keys"] = keys
        return options

    async def _open(self, target: Target, tunnel: Any) -> asyncssh.SSHClientConnection:
        prompt = _PromptClock()
        client = _client_factory(
            self.check, self.prompter, self.password, target.name, target.user, prompt
        )
        options = self._options(
            target, login_timeout=600 if self.prompter else self.ssh.connect_timeout
        )
        loop = asyncio.get_running_loop()
        async with self._startups:

            async def attempt() -> Any:
                # sshd drops connections beyond its MaxStartups before the handshake
                # (a reset, nothing ran on the host): try again, like ssh's
                # ConnectionAttempts, a few times with a short random pause
                for n in range(1, CONNECT_ATTEMPTS + 1):
                    try:
                        return await asyncssh.create_connection(
                            client, target.host, tunnel=tunnel, **options
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

            task = asyncio.ensure_future(attempt())
            try:
                # connect_timeout covers TCP, handshake and auth -- but not the time an
                # operator spends typing a password into a prompt
                started = loop.time()
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
            except (
                ValueError,
                TypeError,
            ) as exc:  # key or option problems asyncssh reports this way
                raise SSHError(f"{target.host}:{target.port}: {exc}") from None
        self.connections_opened += 1
        return conn

    def _host_key_error(self, target: Target) -> HostKeyError:
        changed, key = self.check.seen.get((target.host, target.port), (False, None))
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
                f"If the change is expected, remove the old entry from {self.known_hosts}",
                changed=True,
                fingerprint=fp,
                key_type=kt,
            )
        return HostKeyError(
            f"unknown host key for {target.host}:{target.port} ({kt} {fp}); verify it and add it to "
            f'{self.known_hosts}, or set ssh.host_key_policy = "accept-new"',
            changed=False,
            fingerprint=fp,
            key_type=kt,
        )

    async def _jump(self, jump: str) -> asyncssh.SSHClientConnection:
        task = self._jumps.get(jump)
        if task is None:
            spec = parse_host(jump.split(",")[0])
            target = self.resolve(spec, inherit=False)
            target = Target(
                f"jump {jump}", target.host, target.port, target.user, target.identities, None
            )
            task = asyncio.ensure_future(self._open_checked(target, None))
            self._jumps[jump] = task
            self.on_log(f"jump host {jump}: one connection for every target")
        try:
            return await asyncio.shield(task)
        except SSHError as exc:
            raise SSHError(f"jump host {jump}: {exc}") from None

    async def _open_checked(self, target: Target, tunnel: Any) -> asyncssh.SSHClientConnection:
        """Open, asking the operator about an unknown host key when a prompter exists."""
        try:
            return await self._open(target, tunnel)
        except HostKeyError as exc:
            if exc.changed or self.prompter is None or not exc.fingerprint:
                raise
            async with self._prompt_lock:
                accepted = await self.prompter.confirm_host_key(
                    target.name, exc.fingerprint, exc.key_type
                )
            if not accepted:
                raise HostKeyError(
                    f"host key {exc.key_type} {exc.fingerprint} rejected by the operator",
                    changed=False,
                    fingerprint=exc.fingerprint,
                    key_type=exc.key_type,
                ) from None
            _, key = self.check.seen[(target.host, target.port)]
            self.check.record(target.host, target.port, key)
            return await self._open(target, tunnel)

    async def connect(self, spec: HostSpec) -> Host:
        """Connect to one host (through its jump host if any). Raises SSHError."""
        target = self.resolve(spec)
        tunnel = await self._jump(target.jump) if target.jump else None
        conn = await self._open_checked(target, tunnel)
        host = Host(spec.name, conn, max(1, self.ssh.max_sessions), self.ssh.command_timeout)
        self._hosts.append(host)
        return host

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
        for task in self._jumps.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result().close()
            else:
                task.cancel()
        self._jumps.clear()

"""The SSH layer: one asyncssh connection per host, reused for every command and
SFTP transfer of a deploy. :class:`Connector` opens (and closes) the connections of
one deploy; it is cut along these seams:

- :mod:`engine.sshconfig`: a host resolved through the OpenSSH client config into a
  :class:`Target` (HostName, User, Port, identities, ProxyJump, ProxyCommand ...);
- :mod:`engine.identities`: the keys offered (ssh-agent, then identity files; an
  encrypted one asks for its passphrase once: ``ssh.passphrase_env`` or the prompter);
- :mod:`engine.hostkeys`: host keys are strict by default, ``accept-new`` records an
  unknown key, a changed key is always refused; each host is asked about at most once
  per deploy;
- :mod:`engine.handshake`: at most ``ssh.max_startups`` handshakes in flight per sshd
  (its resolved address and port, or the host key known_hosts expects there; per jump
  chain for tunnelled targets), plus ``ssh.max_handshakes`` over the fleet; a
  connection sshd resets before the handshake (MaxStartups) is tried again; wire
  counters;
- :mod:`engine.host`: the connected :class:`Host` (commands capped at
  ``ssh.max_sessions`` below MaxSessions), over :mod:`engine.session`'s shell protocol.

Here: a jump host (or each hop of a ProxyJump chain) is connected once and every
target is tunnelled through it. Timeouts everywhere: connect, commands, keepalives
(``ssh.dead_after``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from engine.config import HostSpec, SshConfig, parse_host
from engine.errors import AuthFailed, JumpHostError, SSHError
from engine.handshake import (
    CountingTunnel,
    Handshakes,
    WireStats,
    client_factory,
    handshake,
    tcp_bytes,
    wire_summary,
)
from engine.host import Host
from engine.hostkeys import HostKeyError, HostKeys, host_key_error
from engine.identities import Identities
from engine.prompter import PromptClock, Prompter, can_ask
from engine.session import CommandResult, CommandTimeout, LineHandler, q
from engine.sshconfig import Target, expand_path, read_ssh_config, resolve_target

__all__ = [
    "AuthFailed",
    "CommandResult",
    "CommandTimeout",
    "Connector",
    "Host",
    "HostKeyError",
    "JumpHostError",
    "LineHandler",
    "Prompter",
    "SSHError",
    "Target",
    "WireStats",
    "q",
]

#: hops of a ProxyJump chain followed at most (a loop in ssh config ends here)
MAX_JUMP_HOPS = 8

#: ciphers offered, in order: AES-GCM is hardware-accelerated almost everywhere, about
#: twice the SFTP throughput of chacha20 for half the client CPU
CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]


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
        self._prompter = prompter
        self.on_log = on_log or (lambda _msg: None)
        self.known_hosts = expand_path(ssh.known_hosts, base_dir) or os.path.expanduser(
            "~/.ssh/known_hosts"
        )
        self.config_path = expand_path(ssh.config, base_dir)
        if self.config_path and not os.path.isfile(self.config_path):
            self.config_path = None
        self.keys = HostKeys(self.known_hosts, ssh.host_key_policy)
        self.password = os.environ.get(ssh.password_env) if ssh.password_env else None
        self._prompt_lock = asyncio.Lock()
        self.identities = Identities(ssh, prompter, self._prompt_lock)
        self.handshakes = Handshakes(ssh.max_startups, ssh.max_handshakes)
        self._jumps: dict[str, asyncio.Task[asyncssh.SSHClientConnection]] = {}
        #: the jump chain each jump connection ends (its targets' handshake endpoint)
        self._chains: dict[asyncssh.SSHClientConnection, str] = {}
        #: why each connection ended and its wire counters, until its Host takes them
        self._opened: dict[asyncssh.SSHClientConnection, tuple[list[Exception], WireStats]] = {}
        self._hosts: list[Host] = []
        self.connections_opened = 0
        #: wire counters per host name (see WireStats)
        self.wire: dict[str, WireStats] = {}

    @property
    def prompter(self) -> Prompter | None:
        """Who is asked about host keys, passwords and passphrases (settable)."""
        return self._prompter

    @prompter.setter
    def prompter(self, prompter: Prompter | None) -> None:
        self._prompter = self.identities.prompter = prompter

    @property
    def connect_retries(self) -> int:
        """Connections tried again after sshd reset them before the handshake."""
        return self.handshakes.retries

    @property
    def in_flight(self) -> dict[tuple[Any, ...], int]:
        """Handshakes in flight now, per endpoint (see ``_endpoint``)."""
        return self.handshakes.in_flight

    @property
    def peak_in_flight(self) -> dict[tuple[Any, ...], int]:
        """Handshakes in flight at most, per endpoint."""
        return self.handshakes.peak_in_flight

    @property
    def peak_global(self) -> int:
        """Handshakes in flight at most over the fleet."""
        return self.handshakes.peak_global

    def resolve(self, spec: HostSpec, *, inherit: bool = True) -> Target:
        """Merge the host spec, [ssh] and the OpenSSH client config for this host.

        ``inherit=False`` (a jump host): [ssh] user and port, meant for the fleet, do
        not apply; only the spec and the ssh config do. Raises SSHError when the ssh
        config cannot be read."""
        opts = read_ssh_config(self.config_path, spec.host)
        return resolve_target(spec, self.ssh, self.base_dir, opts, inherit=inherit)

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
        keys = self.keys.sshd(target, addr)
        if keys:
            return ("sshd", keys), addr
        return ("addr", addr, target.port), addr

    def _options(
        self, target: Target, files: tuple[str, ...], keys: list[Any] | None
    ) -> dict[str, Any]:
        """asyncssh's connect options for ``target`` (host keys trusted from ``files``,
        ``keys`` offered; None: asyncssh's defaults)."""
        # OpenSSH's ServerAliveInterval/CountMax: the connection is dropped after
        # count + 1 silent intervals, i.e. dead_after
        interval = self.ssh.keepalive or self.ssh.dead_after / 4
        count = max(1, round(self.ssh.dead_after / interval) - 1)
        options: dict[str, Any] = dict(
            known_hosts=self.keys.trusted(files),
            username=target.user,
            port=target.port,
            connect_timeout=None,  # enforced around the whole connect, prompts excluded
            login_timeout=600 if can_ask(self.prompter) else self.ssh.connect_timeout,
            keepalive_interval=interval,
            keepalive_count_max=count,
            config=None,
            password=None,
            encryption_algs=CIPHERS,
        )
        if keys is not None:
            options["client_keys"] = keys
            options["agent_path"] = None
        elif target.agent is not None:
            options["agent_path"] = target.agent or None
        if target.proxy_command:
            options["proxy_command"] = target.proxy_command
        return options

    async def _open(self, target: Target, tunnel: Any) -> asyncssh.SSHClientConnection:
        """One connection to ``target`` (through ``tunnel``, a jump connection, if any),
        within the handshake caps. Raises HostKeyError, AuthFailed or SSHError."""
        tunnel_key = self._chains.get(tunnel) if tunnel is not None else None
        endpoint, addr = await self._endpoint(target, tunnel_key)
        clock, stats = PromptClock(), WireStats()
        lost: list[Exception] = []  # why the connection ended (see keepalive_lost)
        files = self.keys.files(target)
        client = client_factory(
            self.keys, files, self.prompter, self.password, target, clock, lost, stats
        )
        options = self._options(target, files, await self.identities.client_keys(target))
        via = None
        if not target.proxy_command:
            via = CountingTunnel(stats, tunnel, None if tunnel is not None else addr)

        def retried() -> None:
            self.handshakes.retries += 1

        async with self.handshakes.slot(endpoint):
            try:
                conn = await handshake(
                    client,
                    target,
                    via,
                    options,
                    stats=stats,
                    clock=clock,
                    timeout=self.ssh.connect_timeout,
                    on_retry=retried,
                )
            except asyncssh.HostKeyNotVerifiable:
                raise host_key_error(self.keys, target) from None
        self.connections_opened += 1
        self._opened[conn] = (lost, stats)
        return conn

    async def _jump(self, jump: str, seen: tuple[str, ...] = ()) -> asyncssh.SSHClientConnection:
        """The connection to the last hop of ``jump`` (``a,b``: b reached through a),
        opened once per deploy and shared by every target behind it."""
        if jump in seen or len(seen) >= MAX_JUMP_HOPS:
            raise JumpHostError(
                f"jump host {seen[0] if seen else jump}: ProxyJump loops through {jump}"
            )
        task = self._jumps.get(jump)
        if task is None:
            hops = [h.strip() for h in jump.split(",") if h.strip()]
            try:
                spec = parse_host(hops[-1])
            except ValueError as exc:
                raise JumpHostError(f"jump host {jump}: {exc}") from None
            target = self.resolve(spec, inherit=False)
            before = ",".join(hops[:-1]) or target.jump
            target = target.as_jump(f"jump {hops[-1]}")

            async def open_hop() -> asyncssh.SSHClientConnection:
                via = await self._jump(before, (*seen, jump)) if before else None
                conn = await self._open_checked(target, via)
                self._chains[conn] = jump
                return conn

            task = asyncio.ensure_future(open_hop())
            self._jumps[jump] = task
            self.on_log(f"jump host {jump}: one connection for every target")
        try:
            return await asyncio.shield(task)
        except JumpHostError:
            raise  # a hop before this one: it says which
        except SSHError as exc:
            raise JumpHostError(f"jump host {jump}: {exc}") from None

    async def _open_checked(self, target: Target, tunnel: Any) -> asyncssh.SSHClientConnection:
        """Open, asking the operator about an unknown host key when someone can answer;
        each key is asked about once per deploy."""
        try:
            return await self._open(target, tunnel)
        except HostKeyError as exc:
            if exc.changed or not exc.fingerprint or not can_ask(self.prompter):
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
        lost, wire = self._opened.pop(conn)
        self.wire[spec.name] = wire
        host = Host(
            spec.name,
            conn,
            max(1, self.ssh.max_sessions),
            self.ssh.command_timeout,
            lost=lost,
            dead_after=self.ssh.dead_after,
            wire=wire,
        )
        host.jump = target.jump
        host.addr, host.port, host.user = target.host, target.port, target.user
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
            tcp = tcp_bytes(host.conn)
            if tcp is not None:
                row["tcp_bytes_acked"], row["tcp_bytes_received"] = tcp
            out[host.name] = row
        return out

    def wire_summary(self) -> dict[str, Any]:
        """What this run's connections cost (round trips and bytes), for its summary:
        :func:`engine.handshake.wire_summary`."""
        return wire_summary(self.wire)

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
        self._chains.clear()
        self._opened.clear()
        self.identities.close()

"""Taking a host out of rotation before its switch and putting it back once healthy.

The ``[balancer]`` section (its keys in :mod:`engine.balancerconfig`)
names a balancer the run drives over its own connection, opened once per run: the
built-in HAProxy adapter speaks HAProxy's runtime API on its admin socket, on the
balancer host over SSH or on this machine (``host = "local"``). ``deploy.drain`` and
``deploy.undrain`` hooks do the same for any other balancer (run where the balancer
is, else locally), after the adapter when both are set.

HAProxy: drain = ``set server <backend>/<server> state drain``, wait until the
server's current sessions (``scur`` in ``show stat``) reach 0 or ``drain_timeout``
(which fails the host unless ``drain_timeout_ok``), then ``state maint``; undrain =
``state ready``. Each command is built beside the parser of its answer, below.

Errors: :class:`engine.errors.StepFailed` for a refused command, an unreachable
socket, a drain that timed out or a failed hook; :class:`engine.errors.SSHError`
when the balancer host cannot be reached.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple

from engine.balancerconfig import LOCAL
from engine.errors import Interrupted, StepFailed
from engine.events import MaintenanceChanged
from engine.hosts import HostSpec, parse_host
from engine.remote.hooks import client_timeout, failure_line, hooks_script
from engine.session import CommandTimeout, Host, SSHError, q

if TYPE_CHECKING:
    from engine.config import Config
    from engine.ssh import Connector


#: seconds between two ``show stat`` reads while a drained server's sessions end
POLL = 0.1


def drains(config: Config) -> bool:
    """Whether the run takes hosts out of rotation (a balancer or drain hooks)."""
    d = config.deploy
    return config.balancer is not None or bool(d.drain or d.undrain)


# -- HAProxy's runtime API: each command beside the parser of its answer --------------


def set_state_command(backend: str, server: str, state: str) -> str:
    """``set server web/h1 state drain`` (``ready``, ``drain`` or ``maint``)."""
    if state not in ("ready", "drain", "maint"):
        raise ValueError(f"unknown server state {state!r}")
    return f"set server {backend}/{server} state {state}"


def parse_set_state(answer: str) -> str:
    """HAProxy answers a ``set server`` with nothing when done; else what it said."""
    return answer.strip()


SHOW_STAT = "show stat"


class ServerStat(NamedTuple):
    """One server's row of ``show stat``: its status (``UP``, ``DRAIN``, ``MAINT``,
    ``no check`` ...) and its current sessions."""

    status: str
    scur: int


def parse_stat(answer: str, backend: str, server: str) -> ServerStat | None:
    """The row of ``backend/server`` in a ``show stat`` CSV answer; None if absent.
    Raises StepFailed when the answer is not a stat CSV (HAProxy refused)."""
    text = answer.lstrip()
    if not text.startswith("# "):
        raise StepFailed(f"HAProxy: {text.strip()[:200] or 'no answer to show stat'}")
    rows = csv.DictReader(io.StringIO(text[2:]))
    for row in rows:
        if row.get("pxname") == backend and row.get("svname") == server:
            scur = row.get("scur") or "0"
            return ServerStat(row.get("status", ""), int(scur) if scur.isdigit() else 0)
    return None


def parse_servers(answer: str, backend: str) -> dict[str, ServerStat]:
    """Every server of ``backend`` in a ``show stat`` answer, in HAProxy's order (its
    FRONTEND/BACKEND rows left out). Raises StepFailed when the answer is not a stat CSV."""
    text = answer.lstrip()
    if not text.startswith("# "):
        raise StepFailed(f"HAProxy: {text.strip()[:200] or 'no answer to show stat'}")
    out: dict[str, ServerStat] = {}
    for row in csv.DictReader(io.StringIO(text[2:])):
        name = row.get("svname") or ""
        if row.get("pxname") == backend and name not in ("FRONTEND", "BACKEND", ""):
            scur = row.get("scur") or "0"
            out[name] = ServerStat(row.get("status", ""), int(scur) if scur.isdigit() else 0)
    return out


def in_maint(status: str) -> bool:
    """Whether a ``show stat`` status is maintenance (``MAINT``, ``MAINT (via x/y)``, ...)."""
    return status.startswith("MAINT")


#: sends one line to a unix socket and prints the answer (where socat is missing)
_SEND_PY = """import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
while True:
    b = s.recv(65536)
    if not b:
        break
    sys.stdout.buffer.write(b)
"""


def socket_script(socket_path: str, command: str) -> str:
    """The remote command that sends ``command`` to the admin socket (socat, else python3)."""
    sock, cmd = q(socket_path), q(command)
    return (
        "if command -v socat >/dev/null 2>&1; then "
        f"printf '%s\\n' {cmd} | socat -t 10 - UNIX-CONNECT:{sock}; "
        f"else python3 -c {q(_SEND_PY)} {sock} {cmd}; fi"
    )


# -- where the balancer is ---------------------------------------------------------------


class _Place:
    """The balancer's machine: sends admin commands, runs hooks."""

    async def admin(self, socket_path: str, command: str) -> str:
        raise NotImplementedError

    async def hooks(self, commands: tuple[str, ...], env: dict[str, str], timeout: float) -> None:
        raise NotImplementedError


class _Local(_Place):
    def __init__(self, cwd: str) -> None:
        self.cwd = cwd

    async def admin(self, socket_path: str, command: str) -> str:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(socket_path), 10)
        except (OSError, TimeoutError) as exc:
            raise StepFailed(f"HAProxy admin socket {socket_path}: {exc}") from None
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.read(), 30)).decode(errors="replace")
        except (OSError, TimeoutError) as exc:
            raise StepFailed(f"HAProxy admin socket {socket_path}: {exc}") from None
        finally:
            writer.close()

    async def hooks(self, commands: tuple[str, ...], env: dict[str, str], timeout: float) -> None:
        for command in commands:
            proc = await asyncio.create_subprocess_shell(
                command,
                cwd=self.cwd,
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise StepFailed(f"`{command}` timed out after {timeout:g}s") from None
            if proc.returncode:
                last = out.decode(errors="replace").strip().splitlines()[-1:] or [""]
                tail = f": {last[0][:200]}" if last[0] else ""
                raise StepFailed(f"`{command}` exited {proc.returncode}{tail}")


class _Remote(_Place):
    def __init__(self, host: Host) -> None:
        self.host = host

    async def admin(self, socket_path: str, command: str) -> str:
        try:
            res = await self.host.run(socket_script(socket_path, command), timeout=30)
        except CommandTimeout as exc:
            raise StepFailed(f"HAProxy admin socket {socket_path}: {exc}") from None
        if not res.ok:
            why = (res.stderr or res.stdout).strip().splitlines()[-1:] or [
                f"exit {res.exit_status}"
            ]
            raise StepFailed(
                f"HAProxy admin socket {socket_path} on {self.host.name}: {why[0][:200]}"
            )
        return res.stdout

    async def hooks(self, commands: tuple[str, ...], env: dict[str, str], timeout: float) -> None:
        script = hooks_script(".", commands, env, timeout=timeout)
        res = await self.host.run(script, timeout=client_timeout(timeout) * len(commands))
        if not res.ok:
            raise StepFailed(failure_line(res.stdout, res.stderr, res.exit_status) or "hook failed")


# -- the balancer of one run -------------------------------------------------------------


class Balancer:
    """Drains and undrains the hosts of one run. Its connection to the balancer host is
    opened at the first drain and closed by :meth:`close`."""

    def __init__(self, config: Config, connector: Callable[[], Connector]) -> None:
        self.config = config
        self.lb = config.balancer
        self._connector_factory = connector
        self._connector: Connector | None = None
        self._place: _Place | None = None
        self._opening = asyncio.Lock()
        #: maintenance mode found on at the run's start (see :mod:`engine.maintenance`):
        #: a host's undrain then leaves it out of rotation
        self.maintenance: MaintenanceChanged | None = None

    @classmethod
    def of(cls, config: Config, connector: Callable[[], Connector]) -> Balancer | None:
        """The run's balancer, or None when it drains nothing (see :func:`drains`)."""
        return cls(config, connector) if drains(config) else None

    @property
    def adapter(self) -> bool:
        """Whether the built-in HAProxy adapter is configured (not only hooks)."""
        return self.lb is not None and self.lb.kind == "haproxy"

    @property
    def where(self) -> str:
        return self.lb.host if self.lb is not None else LOCAL

    def server(self, spec: HostSpec) -> str:
        """The HAProxy server name of a host."""
        assert self.lb is not None
        return self.lb.server.format(name=spec.name, host=spec.host)

    async def _open(self) -> _Place:
        """The balancer's machine, connected once. Raises SSHError."""
        async with self._opening:
            if self._place is None:
                if self.where == LOCAL:
                    self._place = _Local(str(self.config.base_dir))
                else:
                    self._connector = self._connector_factory()
                    spec = next(
                        (h for h in self.config.all_hosts() if h.name == self.where),
                        None,
                    ) or parse_host(self.where)
                    self._place = _Remote(await self._connector.connect(spec))
            return self._place

    async def close(self) -> None:
        if self._connector is not None:
            await self._connector.close()
        self._connector, self._place = None, None

    def _env(self, spec: HostSpec, env: dict[str, str]) -> dict[str, str]:
        extra = {"SHIPDECK_HOST": spec.name, "SHIPDECK_HOST_ADDR": spec.host}
        if self.lb is not None:
            extra |= {"SHIPDECK_BACKEND": self.lb.backend, "SHIPDECK_SERVER": self.server(spec)}
        return {**env, **extra}

    async def _call(self, work: Awaitable[str]) -> str:
        try:
            return await work
        except SSHError as exc:
            raise StepFailed(f"balancer {self.where}: {exc}") from None

    # -- the whole backend (maintenance mode) ------------------------------------------

    async def servers(self) -> dict[str, ServerStat]:
        """Every server of the backend as HAProxy reports it now. Raises StepFailed
        (also when the balancer host cannot be reached)."""
        return await self._call(self._servers())

    async def _servers(self) -> dict[str, ServerStat]:
        assert self.lb is not None
        place = await self._open()
        return parse_servers(await place.admin(self.lb.socket, SHOW_STAT), self.lb.backend)

    async def set_state(self, server: str, state: str) -> None:
        """``set server <backend>/<server> state <state>``. Raises StepFailed."""
        await self._call(self._set_on(server, state))

    async def _set_on(self, server: str, state: str) -> str:
        await self._set(await self._open(), server, state)
        return ""

    async def hooks(self, commands: tuple[str, ...], env: dict[str, str]) -> None:
        """Run ``commands`` where the balancer is (else locally), ``env`` added to their
        environment. Raises StepFailed."""

        async def run() -> str:
            await (await self._open()).hooks(commands, env, self.config.deploy.hook_timeout)
            return ""

        await self._call(run())

    # -- one host ----------------------------------------------------------------------

    async def drain(
        self, spec: HostSpec, env: dict[str, str], stop: asyncio.Event | None = None
    ) -> str:
        """Take ``spec`` out of rotation: the adapter, then the drain hooks. Returns what
        happened. ``stop`` (an abort) ends the wait for sessions: the server is put back
        and Interrupted raised. Raises StepFailed (a drain that timed out: the server
        is back in rotation)."""
        return await self._call(self._drain(spec, env, stop))

    async def undrain(self, spec: HostSpec, env: dict[str, str]) -> str:
        """Put ``spec`` back in rotation: the adapter, then the undrain hooks. Raises StepFailed."""
        return await self._call(self._undrain(spec, env))

    async def _drain(self, spec: HostSpec, env: dict[str, str], stop: asyncio.Event | None) -> str:
        place = await self._open()
        said = ""
        if self.adapter and self.maintenance is not None:
            said = await self._maint_already(place, spec)
        if self.adapter and not said:
            said = await self._haproxy_drain(place, spec, stop or asyncio.Event())
        d = self.config.deploy
        if d.drain:
            await place.hooks(d.drain, self._env(spec, env), d.hook_timeout)
            said = ", ".join(filter(None, (said, f"{len(d.drain)} hook(s)")))
        return said

    async def _maint_already(self, place: _Place, spec: HostSpec) -> str:
        """During maintenance a server already in maint is not drained (it has no
        traffic); what is said, or "" when it must be drained as usual."""
        assert self.lb is not None
        server = self.server(spec)
        stat = await self._stat(place, server)
        if not in_maint(stat.status):
            return ""
        return f"{self.lb.backend}/{server} {stat.status} already (maintenance on)"

    async def _undrain(self, spec: HostSpec, env: dict[str, str]) -> str:
        if self.maintenance is not None:
            # maintenance mode is on: nothing goes back in rotation until it is off
            return "left out of rotation: maintenance is on"
        place = await self._open()
        said = ""
        if self.lb is not None and self.lb.kind == "haproxy":
            server = self.server(spec)
            await self._set(place, server, "ready")
            stat = await self._stat(place, server)
            said = f"{self.lb.backend}/{server} {stat.status}"
        d = self.config.deploy
        if d.undrain:
            await place.hooks(d.undrain, self._env(spec, env), d.hook_timeout)
            said = ", ".join(filter(None, (said, f"{len(d.undrain)} hook(s)")))
        return said

    async def _set(self, place: _Place, server: str, state: str) -> None:
        assert self.lb is not None
        command = set_state_command(self.lb.backend, server, state)
        refused = parse_set_state(await place.admin(self.lb.socket, command))
        if refused:
            raise StepFailed(f"HAProxy refused `{command}`: {refused[:200]}")

    async def _stat(self, place: _Place, server: str) -> ServerStat:
        assert self.lb is not None
        stat = parse_stat(await place.admin(self.lb.socket, SHOW_STAT), self.lb.backend, server)
        if stat is None:
            raise StepFailed(f"HAProxy has no server {self.lb.backend}/{server}")
        return stat

    async def _haproxy_drain(self, place: _Place, spec: HostSpec, stop: asyncio.Event) -> str:
        """``state drain``, wait for 0 sessions (or ``drain_timeout``), ``state maint``."""
        lb = self.lb
        assert lb is not None
        server = self.server(spec)
        started = time.monotonic()
        await self._set(place, server, "drain")
        stat = await self._stat(place, server)
        seen = [stat.status]
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while stat.scur > 0:
                if time.monotonic() - started >= lb.drain_timeout:
                    if not lb.drain_timeout_ok:
                        await self._set(place, server, "ready")
                        raise StepFailed(
                            f"drain timed out after {lb.drain_timeout:g}s: {stat.scur} "
                            f"session(s) left on {lb.backend}/{server} (put back in rotation; "
                            "`drain_timeout_ok = true` goes on)"
                        )
                    break
                await asyncio.wait({stopped}, timeout=POLL)
                if stopped.done():
                    await self._set(place, server, "ready")
                    raise Interrupted(
                        f"stopped while draining {lb.backend}/{server}: back in rotation"
                    )
                stat = await self._stat(place, server)
        finally:
            stopped.cancel()
        left = f", {stat.scur} session(s) cut" if stat.scur else ""
        waited = time.monotonic() - started
        await self._set(place, server, "maint")
        seen.append((await self._stat(place, server)).status)
        return f"{lb.backend}/{server} {' -> '.join(seen)} after {waited:.2f}s{left}"

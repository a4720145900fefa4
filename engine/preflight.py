"""``deploy --dry-run`` preflight (connects, changes nothing) and ``download``."""

from __future__ import annotations

import asyncio
import json
import posixpath
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine import git as gitmod
from engine.config import Config, HostSpec
from engine.remote.lock import parse_kv, probe_script
from engine.ssh import AuthFailed, Connector, HostKeyError, Prompter, SSHError


@dataclass
class HostCheck:
    host: str
    reachable: bool = False
    host_key: str = ""  # known | accepted | unknown | CHANGED
    auth: bool = False
    path: str = ""
    free_kb: int | None = None
    writable: bool | None = None
    lock: str = ""  # free | held by ...
    current: str = ""
    last_revision: str = ""  # the host's last revisions.log line: what it says happened
    error: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.reachable
            and self.auth
            and self.writable is not False
            and self.lock == "free"
            and not self.error
        )


@dataclass
class PreflightReport:
    target_sha: str = ""
    target_error: str = ""
    hosts: list[HostCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.target_error and all(h.ok for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {
            "target_sha": self.target_sha,
            "target_error": self.target_error,
            "ok": self.ok,
            "hosts": [asdict(h) for h in self.hosts],
        }

    def lines(self) -> list[str]:
        out = [
            f"target: {self.target_sha[:12] or '?'}"
            + (f"  ({self.target_error})" if self.target_error else "")
        ]
        width = max([len(h.host) for h in self.hosts] + [4])
        out.append(
            f"  {'HOST':<{width}}  {'REACH':<5} {'KEY':<8} {'AUTH':<4} {'FREE':>9} {'WRITE':<5} {'LOCK':<10} CURRENT"
        )
        out += [_host_line(h, width) for h in self.hosts]
        bad = sum(not h.ok for h in self.hosts)
        out.append(
            f"{len(self.hosts) - bad}/{len(self.hosts)} hosts ready"
            + ("" if not bad else f", {bad} not ready")
        )
        return out


def _host_line(h: HostCheck, width: int) -> str:
    """One host's row of :meth:`PreflightReport.lines`."""
    if h.error and not h.auth:
        return f"✗ {h.host:<{width}}  {h.error}"
    free = f"{h.free_kb / 1024 / 1024:.1f}G" if h.free_kb is not None else "?"
    mark = "✓" if h.ok else "✗"
    write = {True: "yes", False: "NO", None: "?"}[h.writable]
    return (
        f"{mark} {h.host:<{width}}  {'yes' if h.reachable else 'no':<5} {h.host_key:<8} {'ok' if h.auth else 'NO':<4} "
        f"{free:>9} {write:<5} {h.lock[:10]:<10} {h.current or 'none'}"
        + (f"  ({h.lock})" if h.lock not in ("free", "") else "")
        + (f"  last: {_outcome(h.last_revision)}" if h.last_revision else "")
        + (f"  {h.error}" if h.error else "")
    )


def _outcome(revision: str) -> str:
    """``<kind> <release> <outcome>`` of a revisions.log line."""
    fields = dict(f.split("=", 1) for f in revision.split() if "=" in f)
    kind = revision.split()[1] if len(revision.split()) > 1 else "?"
    return f"{kind} {fields.get('release', '?')} {fields.get('outcome', '?')}"


async def preflight(
    config: Config, hosts: list[HostSpec], *, ref: str, prompter: Prompter | None = None
) -> PreflightReport:
    """Check every host without changing anything on it."""
    report = PreflightReport()
    try:
        repo = gitmod.normalise_repo(config.project.repo, config.base_dir)
        _, report.target_sha, _ = await gitmod.fetch(repo, ref)
    except gitmod.GitError as exc:
        report.target_error = str(exc)
    connector = Connector(config.ssh, config.base_dir, prompter=prompter)

    async def check(spec: HostSpec) -> HostCheck:
        hc = HostCheck(host=spec.name)
        try:
            host = await connector.connect(spec)
        except HostKeyError as exc:
            hc.reachable = True
            hc.host_key = "CHANGED" if exc.changed else "unknown"
            hc.error = str(exc)
            return hc
        except SSHError as exc:
            hc.error = str(exc)
            hc.reachable = isinstance(exc, AuthFailed)  # it answered, refused the login
            return hc
        hc.reachable = hc.auth = True
        hc.host_key = "known"
        try:
            res = await host.run(probe_script(config.deploy.path, None, None), timeout=30)
            info = parse_kv(res.stdout)
            hc.path = info.get("path", "")
            hc.current = info.get("current", "")
            hc.free_kb = int(info["free_kb"]) if info.get("free_kb", "").isdigit() else None
            hc.writable = info.get("writable") == "yes"
            hc.last_revision = info.get("last_revision", "")
            if info.get("missing"):
                hc.error = (
                    f"this host lacks: {info['missing']} (needed to unpack and switch releases)"
                )
            if info.get("lock") == "held":
                try:
                    who = json.loads(info.get("owner") or "{}")
                except ValueError:
                    who = {}
                if not isinstance(who, dict):
                    who = {}
                hc.lock = f"held by {who.get('operator', '?')} since {who.get('since', '?')}"
                age = info.get("lock_age", "").lstrip("-")
                if age.isdigit():
                    ttl = who.get("ttl")
                    ttl = ttl if isinstance(ttl, (int, float)) else config.deploy.lock_ttl
                    stale = int(info["lock_age"]) > ttl
                    hc.lock += f", heartbeat {info['lock_age']}s ago" + (
                        " (stale)" if stale else ""
                    )
            else:
                hc.lock = "free"
        except SSHError as exc:
            hc.error = str(exc)
        return hc

    try:
        report.hosts = list(await asyncio.gather(*(check(h) for h in hosts)))
    finally:
        await connector.close()
    return report


def _under_home(path: str) -> str:
    """``~``, ``~/x`` or ``x`` as SFTP takes it (relative paths are under the login home)."""
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def remote_path(deploy_path: str, remote: str) -> str:
    """The file ``shipdeck download REMOTE`` reads on each host, as SFTP takes it: an
    absolute ``REMOTE`` as given, ``~/x`` under the login home, anything else under the
    deploy path (``shared/log/app.log`` is ``<deploy.path>/shared/log/app.log``).
    Relative results are under the login home, like a relative ``deploy.path``."""
    if not remote or "\0" in remote:
        raise ValueError(f"download: {remote!r} is not a file path")
    if posixpath.basename(remote) in ("", ".", "..", "~"):
        raise ValueError(f"download: {remote!r} names a directory; give a file's path")
    if remote.startswith("/"):
        return remote
    if remote.startswith("~/"):
        return _under_home(remote)
    base = _under_home(deploy_path)
    return remote if base == "." else posixpath.join(base, remote)


def shown_path(path: str) -> str:
    """A :func:`remote_path` result as an operator reads it (``~/`` for the home)."""
    return path if path.startswith("/") else "~" if path == "." else f"~/{path}"


async def download(
    config: Config,
    hosts: list[HostSpec],
    remote: str,
    dest: Path,
    *,
    prompter: Prompter | None = None,
) -> dict[str, tuple[bool, str]]:
    """Fetch ``remote`` from every host into dest/<host>/ (see :func:`remote_path`)."""
    remote = remote_path(config.deploy.path, remote)
    connector = Connector(config.ssh, config.base_dir, prompter=prompter)
    sem = asyncio.Semaphore(config.deploy.parallel)

    async def one(spec: HostSpec) -> tuple[str, tuple[bool, str]]:
        async with sem:
            try:
                host = await connector.connect(spec)
                target_dir = dest / spec.name
                target_dir.mkdir(parents=True, exist_ok=True)
                local = target_dir / Path(remote).name
                await host.get(remote, local)
                return spec.name, (True, f"{local} ({local.stat().st_size} bytes)")
            except SSHError as exc:
                return spec.name, (False, str(exc))

    try:
        return dict(await asyncio.gather(*(one(h) for h in hosts)))
    finally:
        await connector.close()

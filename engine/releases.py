"""Releases across the selected hosts: what a rollback can go back to.

:func:`parse_probe` reads the output of :func:`engine.remote.revisions.releases_script` (one
host); :func:`releases_across` merges the hosts into one list, newest first, each
release with its commit, who deployed it and when, and on how many hosts it still
is; :func:`default_target` is the release ``shipdeck rollback`` takes without
``--to``: one that every selected host has. Pure functions, tested on strings.
:func:`probe` runs the script over SSH on every selected host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: bounds on what a host can make us read (lines of its output, bytes of one line)
MAX_LINES = 2000
MAX_LINE = 1000


@dataclass(frozen=True, slots=True)
class Revision:
    """One line of a host's ``revisions.log``."""

    at: str  # ISO 8601 UTC, sorts as time
    kind: str  # deploy | rollback
    release: str
    sha: str = ""
    operator: str = ""
    outcome: str = ""
    deploy: str = ""


@dataclass(frozen=True, slots=True)
class HostReleases:
    """What one host has: its current release, the release dirs, its revisions log."""

    host: str
    current: str = ""
    releases: tuple[str, ...] = ()
    revisions: tuple[Revision, ...] = ()


@dataclass(slots=True)
class ReleaseInfo:
    """One release as the rollback picker shows it."""

    release_id: str
    sha: str = ""
    subject: str = ""
    deployed_at: str = ""  # when it was last deployed ok (ISO 8601 UTC), if known
    operator: str = ""  # who deployed it
    hosts_with: int = 0  # selected hosts that still have it
    hosts_total: int = 0
    current_on: int = 0  # selected hosts where it is current

    @property
    def everywhere(self) -> bool:
        return self.hosts_total > 0 and self.hosts_with == self.hosts_total

    @property
    def is_current(self) -> bool:
        return self.current_on > 0


@dataclass
class ProbeResult:
    """Every selected host's releases, and the hosts that could not be read."""

    hosts: list[HostReleases] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.hosts) + len(self.errors)


@dataclass
class Choices:
    """What the rollback picker offers: releases newest first, the default target
    (on every selected host), and the hosts that could not be read."""

    releases: list[ReleaseInfo] = field(default_factory=list)
    default: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    hosts_total: int = 0


def choices(result: ProbeResult, subjects: dict[str, str] | None = None) -> Choices:
    """The picker's list from one probe."""
    return Choices(
        releases_across(result.hosts, total=result.total, subjects=subjects),
        default_target(result.hosts, total=result.total),
        dict(result.errors),
        result.total,
    )


def parse_revision(line: str) -> Revision | None:
    """``<iso> <kind> release=… sha=… operator=… outcome=… deploy=…`` or None."""
    parts = line[:MAX_LINE].split()
    if len(parts) < 3 or "=" in parts[0] or "=" in parts[1]:
        return None
    fields = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
    release = fields.get("release", "")
    if not release:
        return None
    return Revision(
        at=parts[0],
        kind=parts[1],
        release=release,
        sha=fields.get("sha", ""),
        operator=fields.get("operator", ""),
        outcome=fields.get("outcome", ""),
        deploy=fields.get("deploy", ""),
    )


def parse_probe(host: str, output: str) -> HostReleases:
    """One host's :func:`~engine.remote.revisions.releases_script` output (bounded)."""
    current = ""
    releases: list[str] = []
    revisions: list[Revision] = []
    for raw in output.splitlines()[:MAX_LINES]:
        line = raw[:MAX_LINE]
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "current":
            current = value.strip()
        elif key == "release" and value.strip():
            releases.append(value.strip())
        elif key == "revision":
            rev = parse_revision(value)
            if rev is not None:
                revisions.append(rev)
    return HostReleases(host, current, tuple(releases), tuple(revisions))


def releases_across(
    hosts: Iterable[HostReleases],
    *,
    total: int | None = None,
    subjects: dict[str, str] | None = None,
) -> list[ReleaseInfo]:
    """Every release found on any host, newest first (release ids start with their UTC
    build time), with how many of the ``total`` selected hosts have it (hosts that
    could not be read count as not having it)."""
    hosts = list(hosts)
    total = len(hosts) if total is None else total
    subjects = subjects or {}
    infos: dict[str, ReleaseInfo] = {}
    for h in hosts:
        for rid in set(h.releases):
            info = infos.setdefault(rid, ReleaseInfo(rid, hosts_total=total))
            info.hosts_with += 1
        if h.current:
            info = infos.setdefault(h.current, ReleaseInfo(h.current, hosts_total=total))
            info.current_on += 1
    for h in hosts:
        for rev in h.revisions:
            if rev.release in infos:
                _learn(infos[rev.release], rev)
    for info in infos.values():
        info.subject = subjects.get(info.sha, "")
    return sorted(infos.values(), key=lambda i: i.release_id, reverse=True)


def _learn(info: ReleaseInfo, rev: Revision) -> None:
    """What one revisions.log line tells of a release: its commit, and who deployed
    it last and when."""
    if rev.sha and not info.sha:
        info.sha = rev.sha
    if rev.kind == "deploy" and rev.outcome == "ok" and rev.at >= info.deployed_at:
        info.deployed_at, info.operator = rev.at, rev.operator
        info.sha = rev.sha or info.sha


def _deployed_order(hosts: list[HostReleases]) -> dict[str, str]:
    """release -> when it was last deployed ok on any host."""
    when: dict[str, str] = {}
    for h in hosts:
        for rev in h.revisions:
            if rev.kind == "deploy" and rev.outcome == "ok" and rev.at > when.get(rev.release, ""):
                when[rev.release] = rev.at
    return when


def default_target(hosts: Iterable[HostReleases], *, total: int | None = None) -> str | None:
    """The release a rollback without ``--to`` goes back to, or None.

    It must be on every selected host (a release only some hosts still have would
    fail on the others): the newest such release deployed before the newest current
    release, by the revisions logs' deploy times; without usable logs, by release id.
    A host already on the target (rolled back alone after a failed health check)
    simply stays there.
    """
    hosts = list(hosts)
    total = len(hosts) if total is None else total
    if not hosts or len(hosts) < total:
        return None
    common = set(hosts[0].releases).intersection(*(h.releases for h in hosts[1:]))
    currents = {h.current for h in hosts if h.current}
    if not currents:
        return None
    when = _deployed_order(hosts)

    def order(rid: str) -> tuple[str, str]:
        return (when.get(rid, ""), rid)

    newest = max(currents, key=order)
    candidates = [r for r in common if order(r) < order(newest)]
    if not candidates:
        return None
    return max(candidates, key=order)


async def probe(
    config: Any, hosts: str | None = None, prompter: Any = None, *, specs: Any = None
) -> ProbeResult:
    """Connect to every selected host (the ``hosts`` pattern, or ``specs`` already
    selected) and read its releases; a host that cannot be read is in ``errors``
    with the reason. Handshakes are capped by the connector (``ssh.max_startups``)."""
    from engine.remote.revisions import releases_script
    from engine.ssh import Connector, SSHError

    selected = list(specs) if specs is not None else config.select_hosts(hosts)
    connector = Connector(config.ssh, config.base_dir, prompter=prompter)
    result = ProbeResult()
    limit = asyncio.Semaphore(max(1, int(getattr(config.deploy, "parallel", 20) or 20)))

    async def one(spec: Any) -> None:
        async with limit:
            try:
                host = await connector.connect(spec)
                res = await host.run(releases_script(config.deploy.path), timeout=60)
            except (TimeoutError, SSHError, OSError) as exc:
                result.errors[spec.name] = str(exc) or type(exc).__name__
                return
            if not res.ok:
                why = (res.stderr or res.stdout).strip()[-200:]
                result.errors[spec.name] = f"exit {res.exit_status}: {why}"
                return
            result.hosts.append(parse_probe(spec.name, res.stdout))

    try:
        await asyncio.gather(*(one(spec) for spec in selected))
    finally:
        await connector.close()
    order = {spec.name: i for i, spec in enumerate(selected)}
    result.hosts.sort(key=lambda h: order.get(h.host, 0))
    return result

"""The fleet's version map: which release runs where (``shipdeck status``).

:func:`fleet_status` connects to every selected host, runs the read-only
:func:`~engine.remote.status.status_script` (no lock is taken, nothing is created)
and returns a :class:`FleetStatus`: per host its current release, commit, who
deployed it and when, how many releases it keeps and its lock; hosts not on the
majority release are flagged as drifted (:func:`mark_drift`), hosts that could not
be read carry the reason.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.remote.status import HostStatus, parse_status

__all__ = ["FleetStatus", "HostStatus", "fleet_status", "mark_drift", "subjects"]

if TYPE_CHECKING:
    from engine.releases import Choices, ProbeResult


@dataclass
class FleetStatus:
    """Every selected host's status, in config order, and the majority release."""

    hosts: list[HostStatus] = field(default_factory=list)
    majority: str = ""

    @property
    def unreachable(self) -> list[HostStatus]:
        return [h for h in self.hosts if h.error]

    @property
    def drifted(self) -> list[HostStatus]:
        return [h for h in self.hosts if h.drift]

    def releases(self) -> ProbeResult:
        """What the rollback picker reads: each read host's current release, release
        directories and revisions (unreachable hosts as errors: a release is on every
        host only if every host could be read)."""
        from engine.releases import HostReleases, ProbeResult

        return ProbeResult(
            [
                HostReleases(h.host, h.current, h.releases, h.revisions)
                for h in self.hosts
                if not h.error
            ],
            {h.host: h.error for h in self.unreachable},
        )

    def rollback_choices(self, subjects: dict[str, str] | None = None) -> Choices:
        """The rollback picker's releases from this version map (present on every
        host: :attr:`engine.releases.ReleaseInfo.everywhere`)."""
        from engine.releases import choices

        return choices(self.releases(), subjects)

    def to_json(self) -> dict[str, Any]:
        return {
            "majority": self.majority,
            "drifted": [h.host for h in self.drifted],
            "unreachable": [h.host for h in self.unreachable],
            "hosts": [h.to_json() for h in self.hosts],
        }


def mark_drift(hosts: list[HostStatus]) -> str:
    """Flag every read host whose current release is not the majority's; the majority
    release ("" when no host has one). A tie goes to the newest release id (ids
    start with their build time). Unreachable hosts are not counted."""
    counts = Counter(h.current for h in hosts if not h.error)
    if not counts:
        return ""
    majority = max(counts, key=lambda rid: (counts[rid], rid))
    for h in hosts:
        h.drift = not h.error and h.current != majority
    return majority


def subjects(repo: str, base_dir: Path, shas: list[str]) -> dict[str, str]:
    """sha -> commit subject, from the local git mirror when it has them (never
    fetches; a sha the mirror lacks is left out)."""
    try:
        from engine.git import commit_info, mirror_path, normalise_repo

        mirror = mirror_path(normalise_repo(repo, base_dir))
    except Exception:  # a repo we cannot name locally: no subjects
        return {}
    if not mirror.exists():
        return {}
    out: dict[str, str] = {}
    for sha in shas:
        try:
            out[sha] = " ".join(commit_info(mirror, sha).get("subject", "").split())[:200]
        except Exception:  # not in the mirror (yet)
            continue
    return out


async def fleet_status(config: Any, specs: list[Any], prompter: Any = None) -> FleetStatus:
    """Read every host in ``specs`` (at most ``deploy.parallel`` at once; handshakes
    are capped by the connector). Never raises for a host: one that cannot be
    connected or read has ``error`` set."""
    from engine.remote.status import status_script
    from engine.ssh import Connector, SSHError

    connector = Connector(config.ssh, config.base_dir, prompter=prompter)
    limit = asyncio.Semaphore(max(1, int(config.deploy.parallel)))
    script = status_script(config.deploy.path)

    async def one(spec: Any) -> HostStatus:
        async with limit:
            try:
                host = await connector.connect(spec)
                res = await host.run(script, timeout=60)
            except (TimeoutError, SSHError, OSError) as exc:
                return HostStatus(spec.name, lock="unknown", error=str(exc) or type(exc).__name__)
            if not res.ok:
                why = " ".join((res.stderr or res.stdout).split())[-200:]
                return HostStatus(spec.name, lock="unknown", error=f"exit {res.exit_status}: {why}")
            return parse_status(spec.name, res.stdout, config.deploy.lock_ttl)

    try:
        hosts = list(await asyncio.gather(*(one(spec) for spec in specs)))
    finally:
        await connector.close()
    status = FleetStatus(hosts, mark_drift(hosts))
    shas = sorted({h.sha for h in hosts if h.sha})[:100]
    if shas:
        found = await asyncio.to_thread(subjects, config.project.repo, config.base_dir, shas)
        for h in hosts:
            h.subject = found.get(h.sha, "")
    return status

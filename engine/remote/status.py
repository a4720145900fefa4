"""What ``shipdeck status`` reads on a host, and the parser of it.

:func:`status_script` is the read-only probe (:func:`engine.remote.lock.probe_script`
with no owner: nothing is created, no lock is taken) followed by the host's release
directories and the tail of its ``revisions.log``; :func:`parse_status` turns what
it printed into a :class:`HostStatus`. Pure functions of strings, tested without SSH.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.releases import Revision, parse_probe
from engine.remote.lock import held_lock, parse_kv, probe_script


def status_script(path: str) -> str:
    """The probe without an owner, then ``release=<id>`` per release directory
    (unfinished ``.tmp`` ones left out) and ``revision=<line>`` per line of the last
    500 of ``revisions.log``. Changes nothing on the host."""
    return "\n".join(
        [
            probe_script(path, None, None),
            'ls -1 "$P/releases" 2>/dev/null | grep -v "\\.tmp$" | sed "s/^/release=/"',
            'tail -n 500 "$P/revisions.log" 2>/dev/null | sed "s/^/revision=/"',
        ]
    )


@dataclass(slots=True)
class HostStatus:
    """One host as ``shipdeck status`` shows it. ``error`` is set (and nothing else
    known) for a host that could not be read."""

    host: str
    current: str = ""
    sha: str = ""
    subject: str = ""
    deployed_by: str = ""
    deployed_at: str = ""  # ISO 8601 UTC, from revisions.log
    kind: str = ""  # deploy | rollback: how current became current
    releases_kept: int = 0
    lock: str = "free"  # free | held | stale | unknown
    lock_holder: str = ""  # who holds it, as the operator reads it
    drift: bool = False  # not on the majority release
    error: str = ""
    #: the release directories it has, and its revisions.log's last lines (what the
    #: rollback picker reads; not in :meth:`to_json`)
    releases: tuple[str, ...] = field(default=(), repr=False)
    revisions: tuple[Revision, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["releases"], data["revisions"]
        return data


def _made_current(current: str, revisions: tuple[Revision, ...]) -> Revision | None:
    """The newest successful revisions.log line that switched to ``current``."""
    for rev in reversed(revisions):
        if rev.release == current and rev.outcome == "ok" and rev.kind in ("deploy", "rollback"):
            return rev
    return None


def parse_status(host: str, output: str, default_ttl: float = 60.0) -> HostStatus:
    """One host's :func:`status_script` output (bounded by the release parser's
    limits); a lock older than its TTL is ``stale``."""
    found = parse_probe(host, output)
    info = parse_kv(output)
    st = HostStatus(
        host,
        current=found.current,
        releases_kept=len(set(found.releases)),
        releases=found.releases,
        revisions=found.revisions,
    )
    rev = _made_current(found.current, found.revisions) if found.current else None
    if rev is not None:
        st.sha, st.deployed_by, st.deployed_at, st.kind = rev.sha, rev.operator, rev.at, rev.kind
    lock = info.get("lock", "")
    if lock == "held":
        held = held_lock(info, default_ttl)
        st.lock = "stale" if held.stale else "held"
        st.lock_holder = held.describe()[:200]
    elif lock != "free":
        st.lock = "unknown"
    return st

"""The status probe's parser and the drift rule, on plain strings."""

from __future__ import annotations

import json

from engine.fleetstatus import mark_drift
from engine.remote.status import HostStatus, parse_status, status_script

OUT = """path=/home/u/app
current=20261201T080000Z-bbb
free_kb=1000
writable=yes
lock=free
release=20261201T070000Z-aaa
release=20261201T080000Z-bbb
revision=2026-12-01T07:00:01Z deploy release=20261201T070000Z-aaa sha=aaa111 operator=bob outcome=ok deploy=d1
revision=2026-12-01T08:00:01Z deploy release=20261201T080000Z-bbb sha=bbb222 operator=carol outcome=ok deploy=d2
revision=2026-12-01T08:30:01Z exec release=20261201T080000Z-bbb sha=bbb222 operator=dave outcome=ok deploy=x1
"""


def test_parse_status_reads_release_commit_operator_and_kept() -> None:
    st = parse_status("web1", OUT)
    assert (st.current, st.sha, st.deployed_by, st.deployed_at) == (
        "20261201T080000Z-bbb",
        "bbb222",
        "carol",  # an exec line does not count as deploying
        "2026-12-01T08:00:01Z",
    )
    assert st.releases_kept == 2 and st.lock == "free" and st.kind == "deploy"


def test_parse_status_lock_held_and_stale() -> None:
    owner = json.dumps({"operator": "alice", "pid": 7, "host": "b2", "since": "t", "ttl": 60})
    held = parse_status("w", OUT.replace("lock=free", f"lock=held\nowner={owner}\nlock_age=3"))
    assert held.lock == "held" and held.lock_holder.startswith("alice (pid 7 on b2")
    stale = parse_status("w", OUT.replace("lock=free", f"lock=held\nowner={owner}\nlock_age=900"))
    assert stale.lock == "stale"


def test_parse_status_of_a_host_never_deployed() -> None:
    st = parse_status("w", "path=/x\ncurrent=\nlock=free\n")
    assert (st.current, st.sha, st.releases_kept, st.lock) == ("", "", 0, "free")


def test_status_script_takes_no_lock() -> None:
    script = status_script("app")
    assert "mkdir -p" not in script and "if e=$(mkdir" not in script  # nothing made, no lock
    assert "revisions.log" in script and "lock=free" in script


def test_drift_is_every_host_off_the_majority() -> None:
    hosts = [HostStatus("a", "r2"), HostStatus("b", "r2"), HostStatus("c", "r1")]
    hosts.append(HostStatus("d", error="connection refused"))
    assert mark_drift(hosts) == "r2"
    assert [h.host for h in hosts if h.drift] == ["c"]
    tie = [HostStatus("a", "r1"), HostStatus("b", "r2")]
    assert mark_drift(tie) == "r2"  # a tie goes to the newest release


def test_rollback_choices_come_from_the_version_map() -> None:
    """The picker's "on every host" is the version map's: a release one host lost to
    cleanup, or a host that could not be read, keeps a release from being everywhere."""
    from engine.fleetstatus import FleetStatus

    lost = OUT.replace("release=20261201T070000Z-aaa\n", "")
    hosts = [parse_status("web1", OUT), parse_status("web2", OUT), parse_status("web3", lost)]
    status = FleetStatus(hosts, mark_drift(hosts))
    found = {r.release_id: r for r in status.rollback_choices().releases}
    assert found["20261201T070000Z-aaa"].hosts_with == 2
    assert not found["20261201T070000Z-aaa"].everywhere
    assert found["20261201T080000Z-bbb"].everywhere
    assert "revisions" not in hosts[0].to_json() and "releases" not in hosts[0].to_json()
    everywhere = FleetStatus(hosts[:2], mark_drift(hosts[:2]))
    assert everywhere.rollback_choices().default == "20261201T070000Z-aaa"
    down = FleetStatus([*hosts[:2], HostStatus("web4", lock="unknown", error="timed out")])
    choices = down.rollback_choices()
    assert choices.default is None and choices.errors == {"web4": "timed out"}

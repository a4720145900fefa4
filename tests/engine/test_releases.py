"""engine/releases.py: releases across hosts, the rollback default, on plain strings."""

from __future__ import annotations

import pytest

from engine.releases import (
    HostReleases,
    default_target,
    parse_probe,
    parse_revision,
    releases_across,
)

A, B, C = "20261120T090000Z-a41c2f9", "20261123T101500Z-1b7e0d4", "20261124T153500Z-3f2a9c1"


def rev(at: str, release: str, sha: str, who: str = "alice", outcome: str = "ok", kind="deploy"):
    return (
        f"revision={at} {kind} release={release} sha={sha} operator={who} "
        f"outcome={outcome} deploy=d-{release[-4:]}"
    )


def host(name: str, current: str, releases: list[str], revisions: list[str]) -> HostReleases:
    out = "\n".join(
        ["path=/srv/web", f"current={current}"] + [f"release={r}" for r in releases] + revisions
    )
    return parse_probe(name, out)


HISTORY = [
    rev("2026-11-20T09:00:05Z", A, "a41c2f9aaaa", "bob"),
    rev("2026-11-23T10:15:07Z", B, "1b7e0d4bbbb", "carol"),
    rev("2026-11-24T15:35:09Z", C, "3f2a9c1cccc", "alice"),
]


def test_parse_probe_reads_current_releases_and_revisions() -> None:
    h = host("web1", C, [A, B, C], HISTORY)
    assert h.current == C and h.releases == (A, B, C)
    assert [r.release for r in h.revisions] == [A, B, C]
    assert h.revisions[1].operator == "carol" and h.revisions[1].sha == "1b7e0d4bbbb"


def test_parse_revision_rejects_garbage_and_bounds_lines() -> None:
    assert parse_revision("not a revision line") is None
    assert parse_revision("") is None
    assert parse_revision("2026-11-20T09:00:05Z deploy sha=x") is None  # no release
    huge = parse_probe("web1", "release=" + "x" * 100_000)
    assert len(huge.releases[0]) < 1000


def test_releases_across_newest_first_with_who_when_and_counts() -> None:
    hosts = [
        host("web1", C, [A, B, C], HISTORY),
        host("web2", C, [B, C], HISTORY),  # cleanup removed A here
        host("web3", C, [B, C], HISTORY),
    ]
    infos = releases_across(hosts, subjects={"1b7e0d4bbbb": "Fix the login page"})
    assert [i.release_id for i in infos] == [C, B, A]
    c, b, a = infos
    assert c.is_current and c.current_on == 3 and c.everywhere
    assert b.everywhere and not b.is_current
    assert (b.operator, b.deployed_at, b.sha, b.subject) == (
        "carol",
        "2026-11-23T10:15:07Z",
        "1b7e0d4bbbb",
        "Fix the login page",
    )
    assert not a.everywhere and (a.hosts_with, a.hosts_total) == (1, 3)


def test_unreadable_hosts_count_as_missing() -> None:
    infos = releases_across([host("web1", C, [B, C], HISTORY)], total=2)
    assert all(not i.everywhere for i in infos)
    assert default_target([host("web1", C, [B, C], HISTORY)], total=2) is None


def test_default_target_is_on_every_host() -> None:
    hosts = [
        host("web1", C, [A, B, C], HISTORY),
        host("web2", C, [A, C], HISTORY),  # B is gone here: A is the newest common one
    ]
    assert default_target(hosts) == A
    hosts[1] = host("web2", C, [A, B, C], HISTORY)
    assert default_target(hosts) == B


def test_default_target_after_a_partial_deploy_undoes_only_the_newest() -> None:
    """web2 failed health on C and was rolled back to B: rolling back goes to B
    everywhere (web2 stays), never further back to A."""
    web2_log = HISTORY + [rev("2026-11-24T15:35:20Z", B, "1b7e0d4bbbb", kind="rollback")]
    hosts = [host("web1", C, [A, B, C], HISTORY), host("web2", B, [A, B, C], web2_log)]
    assert default_target(hosts) == B


@pytest.mark.parametrize(
    "hosts",
    [
        [],
        [HostReleases("web1", current="", releases=(A,))],  # nothing current
        [HostReleases("web1", current=A, releases=(A,))],  # nothing older
    ],
)
def test_default_target_none(hosts) -> None:
    assert default_target(hosts) is None


def test_default_target_without_revisions_uses_release_ids() -> None:
    hosts = [HostReleases("web1", C, (A, B, C)), HostReleases("web2", C, (A, B, C))]
    assert default_target(hosts) == B


def test_same_second_redeploy_orders_by_deploy_log_not_by_name() -> None:
    """C was deployed, then B redeployed (newer in the log): B is current, C is older."""
    log = HISTORY + [rev("2026-11-25T08:00:00Z", B, "1b7e0d4bbbb")]
    hosts = [host("web1", B, [A, B, C], log), host("web2", B, [A, B, C], log)]
    assert default_target(hosts) == C

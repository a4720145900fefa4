"""A host's releases and revisions.log (engine/remote/revisions.py), on plain strings."""

from __future__ import annotations

import subprocess
from pathlib import Path

from engine.remote.revisions import (
    parse_releases,
    previous_release,
    releases_script,
    revision_line,
    sha_of_release,
)

R1, R2, R3 = "20260101T000001Z-aaaaaaa", "20260101T000002Z-bbbbbbb", "20260101T000003Z-ccccccc"


def line(release: str, outcome: str = "ok", kind: str = "deploy", sha: str = "") -> str:
    sha = sha or release[-7:] * 2
    return (
        f"2026-01-01T00:00:00Z {kind} release={release} sha={sha} operator=alice "
        f"outcome={outcome} deploy=d-1"
    )


def test_revision_line_reads_back() -> None:
    text = revision_line(R1, "abc123", "alice", "ok", "d-1", "rollback")
    when, kind, *fields = text.split(" ")
    assert when.endswith("Z") and kind == "rollback"
    assert fields == ["release=" + R1, "sha=abc123", "operator=alice", "outcome=ok", "deploy=d-1"]
    assert sha_of_release(R1, [text]) == "abc123"


def test_previous_release_follows_the_order_of_successful_deploys() -> None:
    # R2 sorts right before R3 but its deploy failed: it never was live
    log = [line(R1), line(R2, outcome="failed"), line(R3)]
    assert previous_release(R3, [R1, R2, R3], log) == R1


def test_previous_release_skips_releases_no_longer_on_the_host() -> None:
    log = [line(R1), line(R2), line(R3)]
    assert previous_release(R3, [R1, R3], log) == R1
    assert previous_release(R3, [R3], log) == ""


def test_rollbacks_do_not_count_as_deploys() -> None:
    log = [line(R1), line(R2), line(R1, kind="rollback"), line(R3)]
    assert previous_release(R3, [R1, R2, R3], log) == R2


def test_without_a_usable_log_the_newest_older_name_wins() -> None:
    assert previous_release(R3, [R1, R2, R3], ["garbage", ""]) == R2
    assert previous_release(R1, [R1, R2, R3], []) == ""
    assert previous_release("", [R1, R2], []) == ""


def test_sha_of_release_takes_the_newest_line_naming_it() -> None:
    log = [line(R1, sha="old"), line(R2), line(R1, sha="new", outcome="failed")]
    assert sha_of_release(R1, log) == "new"
    assert sha_of_release("nope", log) == ""


def test_parse_releases_reads_release_and_revision_lines() -> None:
    out = "\n".join(
        ["path=/srv/app", f"current={R2}", f"release={R1}", f"release={R2}", "revision=" + line(R1)]
    )
    assert parse_releases(out) == ([R1, R2], [line(R1)])


def test_releases_script_on_a_real_shell(tmp_path: Path) -> None:
    app = tmp_path / "app"
    for r in (R1, R2, R3 + ".tmp"):
        (app / "releases" / r).mkdir(parents=True)
    (app / "current").symlink_to(app / "releases" / R2)
    (app / "revisions.log").write_text(line(R1) + "\n" + line(R2) + "\n")
    out = subprocess.run(
        ["/bin/sh", "-c", releases_script(str(app))], capture_output=True, text=True, timeout=30
    ).stdout
    assert f"current={R2}" in out.splitlines()
    releases, revisions = parse_releases(out)
    assert releases == [R1, R2]  # the unfinished unpack is left out
    assert previous_release(R2, releases, revisions) == R1


def test_environment_and_freeze_override_ride_at_the_end_as_one_word_each() -> None:
    from engine.releases import parse_revision

    text = revision_line(
        R1, "abc123", "alice", "ok", "d-1", env="production", freeze_override="hotfix release=x\nnow"
    )
    assert text.endswith(" deploy=d-1 env=production freeze_override=hotfix%20release%3Dx%20now")
    read = parse_revision(text)
    assert (read.release, read.operator, read.deploy) == (R1, "alice", "d-1")
    assert " env=" not in revision_line(R1, "abc123", "alice", "ok", "d-1")

"""An abort reaches every wait on real sshd hosts: a long hook is signalled (its
remote processes are gone), a failing health check stops retrying, and each host ends
untouched, or switched and healthy, or switched and rolled back."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from engine.config import load_config
from engine.deploy import Deployment
from engine.localfleet import commit_version
from tests.engine.test_deploy_sshd import write_config
from tests.helpers import Recorder, current, current_version

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]

#: the hooks and health checks below would take this long without the abort; the
#: deploys must end far sooner (a generous bound, not a timing)
LONG = 90


def _sleeps_of(user: str) -> list[str]:
    out = subprocess.run(["ps", "-u", user, "-o", "args="], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if f"sleep {LONG}" in line]


async def _deploy_and_abort_when(config, when) -> tuple[Deployment, object, Recorder]:
    d = Deployment(config, operator="tester")
    rec = Recorder()
    d.subscribe(rec)

    def watch(event) -> None:
        if when(event):
            d.abort(by="bob", reason="stop it")

    d.subscribe(watch)
    result = await asyncio.wait_for(d.run(), LONG / 3)
    return d, result, rec


async def test_abort_signals_a_long_before_hook_and_leaves_the_host_untouched(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(2)
    config = load_config(write_config(tmp_path / "a.toml", fleet, sample_repo))
    first = Deployment(config, operator="tester")
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    config = load_config(
        write_config(tmp_path / "b.toml", fleet, sample_repo, before_activate=f'["sleep {LONG}"]')
    )
    d, result, _ = await _deploy_and_abort_when(
        config,
        lambda e: e.type == "log" and e.key.endswith("/before") and f"sleep {LONG}" in e.text,
    )
    assert result.exit_code == 3 and result.summary["reason"] == "stop it"
    for h in fleet.hosts:
        assert current(h.home / "app") == first.release_id  # untouched
        assert current_version(h.home / "app") == "1.0.0"
        assert not (h.home / "app" / ".shipdeck.lock").exists()
        assert d.plan.hosts()[0].status == "cancelled"
    # the hooks' processes were signalled, not left running on the hosts
    for h in fleet.hosts:
        assert _sleeps_of(h.user) == [], h.user


async def test_abort_stops_a_failing_health_check_and_rolls_the_host_back(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(1)
    h = fleet.hosts[0]
    config = load_config(write_config(tmp_path / "a.toml", fleet, sample_repo))
    first = Deployment(config, operator="tester")
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    (h.home / "FAIL_HEALTH").write_text("2.0.0")
    config = load_config(
        write_config(tmp_path / "b.toml", fleet, sample_repo, health_timeout=str(LONG))
    )
    attempts = []

    def third_attempt(e) -> bool:
        if e.type == "log" and e.key.endswith("/health") and "unhealthy" in e.text:
            attempts.append(e)
        return len(attempts) == 3

    d, result, _ = await _deploy_and_abort_when(config, third_attempt)
    assert result.exit_code == 3
    hnode = d.plan.hosts()[0]
    assert hnode.status == "failed"
    assert f"rolled back to {first.release_id} (healthy)" in hnode.detail
    assert current(h.home / "app") == first.release_id
    assert (h.home / "RUNNING").read_text().strip() == "1.0.0"
    assert not (h.home / "app" / ".shipdeck.lock").exists()


async def test_abort_during_a_long_restart_hook_rolls_back_a_switched_host(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(1)
    h = fleet.hosts[0]
    config = load_config(write_config(tmp_path / "a.toml", fleet, sample_repo))
    first = Deployment(config, operator="tester")
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    # the new release's restart hangs; the old one's (on rollback) is quick
    (sample_repo / "bin" / "restart").write_text(
        f'#!/bin/sh\ncat VERSION > "$HOME/RUNNING"\n'
        f'[ "$(cat VERSION)" = 2.0.0 ] && sleep {LONG}\necho restarted\n'
    )
    commit_version(sample_repo, "2.0.0")
    d, result, _ = await _deploy_and_abort_when(
        config,
        lambda e: e.type == "status" and e.key.endswith("/restart") and e.status == "running",
    )
    assert result.exit_code == 3
    hnode = d.plan.hosts()[0]
    assert d.plan[f"{hnode.key}/restart"].status == "cancelled"
    assert f"rolled back to {first.release_id} (healthy)" in hnode.detail
    assert current(h.home / "app") == first.release_id
    assert (h.home / "RUNNING").read_text().strip() == "1.0.0"
    assert _sleeps_of(h.user) == []


async def test_an_upload_to_a_frozen_host_fails_as_stalled(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    """The host's sshd is SIGSTOPped once the upload has begun: no byte moves, and the
    host fails with "upload stalled" (not after the 600 s command timeout); the others
    deploy."""
    import os

    fleet = sshd_fleet(2, one_process_per_host=True)
    frozen = fleet.hosts[0]
    (sample_repo / "dist-blob").write_bytes(os.urandom(48 << 20))
    (sample_repo / "build.sh").write_text(
        (sample_repo / "build.sh").read_text() + "cp dist-blob dist/blob\n"
    )
    commit_version(sample_repo, "2.0.0")
    config = load_config(
        write_config(
            tmp_path / "a.toml", fleet, sample_repo, ssh_upload_stall="2", ssh_keepalive="60"
        )
    )
    d = Deployment(config, operator="tester")

    def freeze(event) -> None:
        if (
            event.type == "progress"
            and frozen.spec in event.key
            and 0 < event.done < event.total
            and not fleet.procs[frozen.proc_index].frozen
        ):
            fleet.freeze_host(frozen)

    d.subscribe(freeze)
    try:
        result = await asyncio.wait_for(d.run(), LONG / 3)
    finally:
        fleet.thaw_all()
    assert result.exit_code == 1
    assert "upload stalled: no progress for 2s" in result.summary["failures"][frozen.spec]
    assert current(fleet.hosts[1].home / "app") == d.release_id
    assert not (frozen.home / "app" / "current").exists()

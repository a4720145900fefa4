"""Hosts dying under a deploy: sshd killed mid-upload, a frozen host, a full disk.
Each fails its own branch with a clear reason within the timeouts; the rest deploy."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.deploy import Deployment
from engine.localfleet import commit_version, make_sample_repo
from tests.fault.conftest import sshd_config_text
from tests.helpers import current

pytestmark = [pytest.mark.fault, pytest.mark.sshd, pytest.mark.timeout(120)]


def mount_small_fs(path: Path, owner: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        return False
    subprocess.run(["chown", f"{owner}:", str(path)], check=False)
    return True


async def test_killed_frozen_and_full_hosts(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(10, one_process_per_host=True)
    repo = make_sample_repo(tmp_path / "repo")
    (repo / "blob.bin").write_bytes(os.urandom(32 << 20))
    commit_version(repo, "2.0.0")
    config_path = tmp_path / "shipdeck.toml"
    config_path.write_text(
        sshd_config_text(fleet, repo, max_fail='"3"', health_timeout="3").replace(
            "connect_timeout = 5", "connect_timeout = 2\nkeepalive = 1"
        )
    )
    config = load_config(config_path)
    killed, frozen, full = fleet.hosts[1], fleet.hosts[2], fleet.hosts[3]

    disk = full.home / "app"
    mounted = mount_small_fs(disk, full.user)
    if not mounted:
        pytest.skip(
            "cannot mount a small tmpfs here (needs root and mount rights); full-disk case not simulated"
        )
    try:
        fleet.freeze_host(frozen)
        d = Deployment(config)
        done = {"killed": False}

        def on(event) -> None:
            if (
                event.type == "progress"
                and event.key.endswith(f"/{killed.spec}/upload")
                and not done["killed"]
            ):
                done["killed"] = True
                fleet.stop_host(killed)

        d.subscribe(on)
        t0 = time.monotonic()
        result = await d.run()
        elapsed = time.monotonic() - t0
    finally:
        fleet.thaw_all()
        subprocess.run(["umount", "-l", str(disk)], check=False)

    assert done["killed"], "the upload to the killed host never started"
    failures = result.summary["failures"]
    assert set(failures) == {killed.spec, frozen.spec, full.spec}, failures
    assert "upload failed" in failures[killed.spec] or "connection lost" in failures[killed.spec]
    assert "timed out connecting" in failures[frozen.spec]
    assert "not enough disk space" in failures[full.spec] or "no space left" in failures[full.spec]
    assert result.exit_code == 1  # 3 failures, max_fail = 3: within the budget
    assert result.summary["ok"] == 7
    for h in fleet.hosts:
        if h not in (killed, frozen, full):
            assert current(h.home / "app") is not None
    print(
        f"\nfailures after {elapsed:.1f}s: " + "; ".join(f"{k}: {v}" for k, v in failures.items())
    )

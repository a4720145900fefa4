"""The rollback picker's probe against real OpenSSH sshd hosts on loopback."""

from __future__ import annotations

import shutil

import pytest

from engine.config import load_config
from engine.localfleet import commit_version
from engine.releases import choices, probe
from tests.engine.test_deploy_sshd import run, write_config

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]


async def test_probe_lists_what_every_host_has(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(2)
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet, sample_repo))
    ids = []
    for version in ("2.0.0", "3.0.0", None):
        result, _, d = await run(config, operator="tester", history=None)
        assert result.exit_code == 0, result.summary
        ids.append(d.release_id)
        if version:
            commit_version(sample_repo, version)
    shutil.rmtree(fleet.hosts[1].home / "app" / "releases" / ids[0])  # cleanup on one host

    found = choices(await probe(config))
    assert not found.errors
    assert [r.release_id for r in found.releases] == ids[::-1]
    newest, middle, oldest = found.releases
    assert newest.is_current and newest.everywhere
    assert middle.everywhere and middle.operator == "tester" and len(middle.sha) == 40
    assert (oldest.hosts_with, oldest.hosts_total) == (1, 2)
    assert found.default == ids[1]

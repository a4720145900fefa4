"""`shipdeck status` on real OpenSSH hosts: the version map, drift, a held lock, an
unreachable host."""

from __future__ import annotations

import json
import time

import pytest

from engine.config import load_config
from engine.deploy import Deployment
from engine.localfleet import commit_version
from tests.engine.test_deploy_sshd import write_config
from tests.helpers import current
from tests.tui.cli.helpers import shipdeck

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]


async def test_status_shows_drift_lock_and_unreachable(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(3)
    h1, h2, h3 = fleet.hosts
    full = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo)
    first = Deployment(load_config(full))
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    two = write_config(tmp_path / "two.toml", fleet, sample_repo, hosts=[h1.spec, h2.spec])
    second = Deployment(load_config(two))
    assert (await second.run()).exit_code == 0
    assert current(h3.home / "app") == first.release_id
    lock = h2.home / "app" / ".shipdeck.lock"
    lock.mkdir()
    owner = {"operator": "alice", "pid": 1, "host": "bastion-2", "since": "then", "ttl": 600}
    (lock / "owner").write_text(json.dumps(owner) + "\n")
    (lock / "hb").write_text(f"{int(time.time())}\n")

    code, out, err = await shipdeck("status", "-c", str(full))
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == f"3 host(s), majority release {second.release_id}"
    row = {h.spec: next(li for li in lines if f" {h.spec} " in li) for h in fleet.hosts}
    assert row[h1.spec].startswith("✓") and second.release_id in row[h1.spec]
    assert "tester" in row[h1.spec] and " free" in row[h1.spec]
    assert "held by alice (pid 1 on bastion-2" in row[h2.spec]
    assert row[h3.spec].startswith("!") and first.release_id in row[h3.spec]
    assert f"drift: {h3.spec} runs {first.release_id}, not the majority's" in out
    assert lock.exists() and not (h1.home / "app" / ".shipdeck.lock").exists()  # read-only

    # JSON, and a host nobody listens on: reported, exit 1
    hosts = [h.spec for h in fleet.hosts] + ["127.0.0.1:1"]
    bad = write_config(tmp_path / "bad.toml", fleet, sample_repo, hosts=hosts)
    code, out, err = await shipdeck("status", "-c", str(bad), "--json")
    assert code == 1, out + err
    doc = json.loads(out)
    assert doc["majority"] == second.release_id
    assert doc["drifted"] == [h3.spec] and doc["unreachable"] == ["127.0.0.1:1"]
    by = {h["host"]: h for h in doc["hosts"]}
    assert by[h1.spec]["releases_kept"] == 2 and by[h3.spec]["releases_kept"] == 1
    assert by[h1.spec]["sha"] and by[h1.spec]["subject"]  # from the local mirror
    assert "refused" in by["127.0.0.1:1"]["error"]

    code, out, _ = await shipdeck("status", "-c", str(bad), "--hosts", "127.0.0.1:1")
    assert code == 1 and "✗ 127.0.0.1:1" in out and "unreachable: 1 of 1 host(s)" in out

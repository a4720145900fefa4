"""[secrets] in a deploy on the local fleet (real SSH, real shell): the env file lands
in each host's shared/.env (0600) before before_activate, is rewritten only when it
changed, and its values are masked in every event, even a hook printing them."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from engine.appsecrets import MASK
from engine.config import load_config
from engine.deploy import Deployment
from engine.localfleet import commit_version
from tests.helpers import Recorder

pytestmark = pytest.mark.timeout(60)

CANARY = "canary-SECRET-5b1f0c9e77d2"


def write(fleet, sample_repo, tmp_path, secrets: list[str], **deploy) -> Path:
    path = fleet.write_config(tmp_path / "shipdeck.toml", sample_repo, **deploy)
    path.write_text(path.read_text() + "\n[secrets]\n" + "\n".join(secrets) + "\n")
    return path


async def test_env_file_reaches_hosts_and_never_the_events(fleet, sample_repo, tmp_path) -> None:
    maker = tmp_path / "make_env.py"
    maker.write_text(f"print('DATABASE_URL=postgres://app:{CANARY}@db/app')\n")
    path = write(
        fleet,
        sample_repo,
        tmp_path,
        [f"command = {json.dumps(f'{sys.executable} {maker}')}"],
        # the hook sees the file (and prints it: the printout is masked)
        before_activate=["cat ../../shared/.env", "test -f ../../shared/.env"],
    )
    d = Deployment(load_config(path), operator="alice")
    rec = Recorder()
    d.subscribe(rec)
    result = await d.run()
    assert result.exit_code == 0, result.summary
    for h in fleet.hosts:
        env = h.home / "app" / "shared" / ".env"
        assert env.read_text() == f"DATABASE_URL=postgres://app:{CANARY}@db/app\n"
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
        assert rec.statuses(f"release/wave-1/{h.name}/secrets") == ["running", "ok"]
    dumped = "\n".join(e.dumps() for e in rec.events)
    assert CANARY not in dumped
    assert f"DATABASE_URL={MASK}" in dumped  # the hook printed the file: masked
    assert "shared/.env written (0600)" in dumped
    assert d.plan["secrets"].status == "ok"

    # the same secrets again: nothing rewritten on the hosts
    commit_version(sample_repo, "2.0.0")
    d2 = Deployment(load_config(path), operator="alice")
    rec2 = Recorder()
    d2.subscribe(rec2)
    assert (await d2.run()).exit_code == 0
    details = [
        e.detail for e in rec2.of("status") if e.key.endswith("/secrets") and e.status == "ok"
    ]
    assert details == ["shared/.env unchanged (0600)"] * len(fleet.hosts)


async def test_env_mode_hides_the_variable_from_the_build(
    fleet, sample_repo, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("APP_SECRET_KEY", CANARY)
    path = write(
        fleet,
        sample_repo,
        tmp_path,
        ['env = ["APP_SECRET_KEY"]', 'path = "shared/app.env"'],
        build_commands=["sh build.sh", "env > dist/build-env.txt"],
    )
    d = Deployment(load_config(path), operator="alice")
    rec = Recorder()
    d.subscribe(rec)
    assert (await d.run()).exit_code == 0
    for h in fleet.hosts:
        assert (h.home / "app" / "shared" / "app.env").read_text() == f"APP_SECRET_KEY={CANARY}\n"
        built_with = (h.home / "app" / "current" / "build-env.txt").read_text()
        assert "APP_SECRET_KEY" not in built_with and CANARY not in built_with
    assert CANARY not in "\n".join(e.dumps() for e in rec.events)


async def test_a_failing_secrets_command_stops_before_anything_changes(
    fleet, sample_repo, tmp_path
) -> None:
    path = write(fleet, sample_repo, tmp_path, ['command = "echo no such entry >&2; exit 1"'])
    d = Deployment(load_config(path), operator="alice")
    result = await d.run()
    assert result.exit_code == 3
    assert "secrets: secrets.command failed (exit 1): no such entry" in result.summary["reason"]
    assert not any((h.home / "app" / "current").exists() for h in fleet.hosts)

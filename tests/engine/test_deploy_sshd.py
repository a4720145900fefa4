"""The release scenarios against real OpenSSH sshd hosts on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.deploy import Deployment, Rollback
from engine.localfleet import commit_version
from engine.preflight import preflight
from tests.helpers import Recorder, current, current_version, releases, revisions

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]


def write_config(path: Path, fleet, repo: Path, hosts: list[str] | None = None, **over) -> Path:
    deploy = {
        "path": '"app"',
        "keep_releases": "3",
        "shared": '["log"]',
        "after_activate": '["./bin/restart"]',
        "health": '"./bin/health"',
        "health_timeout": "2",
        "health_interval": "0.2",
    }
    ssh = {
        "identity": f'"{fleet.client_key}"',
        "known_hosts": f'"{fleet.known_hosts}"',
        "config": '""',
        "connect_timeout": "5",
    }
    for k, v in over.items():
        if k.startswith("ssh_"):
            ssh[k[4:]] = v
        else:
            deploy[k] = v
    hosts = hosts if hosts is not None else [h.spec for h in fleet.hosts]
    text = "\n".join(
        [
            "[project]",
            'name = "web"',
            f'repo = "{repo}"',
            "[build]",
            'commands = ["sh build.sh"]',
            'artifact = "dist"',
            "[deploy]",
            *(f"{k} = {v}" for k, v in deploy.items()),
            "[ssh]",
            *(f"{k} = {v}" for k, v in ssh.items()),
            "[hosts]",
            "web = [" + ", ".join(f'"{h}"' for h in hosts) + "]",
        ]
    )
    path.write_text(text + "\n")
    return path


async def run(config, **kw):
    d = Deployment(config, **kw)
    rec = Recorder()
    d.subscribe(rec)
    return await d.run(), rec, d


@pytest.fixture
def fleet3(sshd_fleet):
    return sshd_fleet(3)


async def test_deploy_redeploy_skip_upload_rollback(fleet3, sample_repo, tmp_path) -> None:
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet3, sample_repo))
    result, rec, first = await run(config)
    assert result.exit_code == 0, result.summary
    for h in fleet3.hosts:
        app = h.home / "app"
        assert current(app) == first.release_id
        assert current_version(app) == "1.0.0"
        assert f"release={first.release_id}" in revisions(app)[-1]
        assert (h.home / "RUNNING").read_text().strip() == "1.0.0"
        assert not (app / ".shipdeck.lock").exists()
    # one connection per host and one shell session: the upload follows its command
    # there (GNU head; elsewhere it has a session of its own) (sshd's own log)
    assert fleet3.accepted_logins() == 3
    sessions = re.findall(r"Starting session: command for (\S+)", fleet3.log_text())
    assert sorted(sessions) == sorted(h.user for h in fleet3.hosts), sessions
    # the summary's debug counter: what each host's connection cost on the wire
    wire = result.summary["wire"]
    assert wire["hosts"] == 3 and set(wire["per_host"]) == {h.spec for h in fleet3.hosts}
    assert first.source.package is not None
    artifact = first.source.package.size  # each host's upload is on its wire
    for counts in wire["per_host"].values():
        assert counts["round_trips"] >= wire["handshake_round_trips_median"] > 0
        assert counts["bytes_out"] > artifact and counts["bytes_in"] > 0
    assert wire["round_trips_max"] >= wire["round_trips_median"]
    # three commands per host: the lock, the upload carrying unpack and link (no
    # hook among them), then activate to unlock
    assert [hr.host.commands_run for hr in first.hosts.values()] == [3, 3, 3]

    # same build again: no upload
    result, rec, _ = await run(config)
    assert result.exit_code == 0
    assert not rec.of("progress")
    assert {e.detail[:15] for e in rec.of("status") if e.key.endswith("/upload")} == {
        "already on host"
    }

    commit_version(sample_repo, "2.0.0")
    result, _, second = await run(config)
    assert result.exit_code == 0
    assert all(current_version(h.home / "app") == "2.0.0" for h in fleet3.hosts)

    result = await Rollback(config).run()
    assert result.exit_code == 0
    for h in fleet3.hosts:
        assert current_version(h.home / "app") == "1.0.0"
        assert (h.home / "RUNNING").read_text().strip() == "1.0.0"
        assert "rollback" in revisions(h.home / "app")[-1]


async def test_health_failure_unreachable_host_and_foreign_lock(
    fleet3, sample_repo, tmp_path
) -> None:
    h1, h2, h3 = fleet3.hosts
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet3, sample_repo))
    _, _, first = await run(config)
    commit_version(sample_repo, "2.0.0")
    (h2.home / "FAIL_HEALTH").write_text("2.0.0")
    os.chmod(h2.home / "FAIL_HEALTH", 0o644)
    result, _, second = await run(config)
    assert result.exit_code == 1
    assert current(h1.home / "app") == second.release_id
    assert current(h2.home / "app") == first.release_id  # rolled back
    assert "rolled back to" in result.summary["failures"][h2.spec]
    (h2.home / "FAIL_HEALTH").unlink()

    # another operator's lock on h3, and a host nobody listens on
    lock = h3.home / "app" / ".shipdeck.lock"
    lock.mkdir()
    (lock / "owner").write_text(
        json.dumps({"operator": "alice", "pid": 1, "host": "bastion-2", "since": "then"})
    )
    hosts = [h.spec for h in fleet3.hosts] + ["127.0.0.1:1"]
    config = load_config(write_config(tmp_path / "two.toml", fleet3, sample_repo, hosts=hosts))
    commit_version(sample_repo, "3.0.0")
    result, _, third = await run(config)
    assert result.exit_code == 3  # a lock held by someone else stops the deploy
    assert "locked by alice" in result.summary["failures"][h3.spec]
    assert "connection refused" in result.summary["failures"]["127.0.0.1:1"]
    assert current(h3.home / "app") == second.release_id  # untouched
    assert lock.exists()


async def test_before_hook_failure_leaves_current(fleet3, sample_repo, tmp_path) -> None:
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet3, sample_repo))
    _, _, first = await run(config)
    commit_version(sample_repo, "2.0.0")
    config = load_config(
        write_config(
            tmp_path / "b.toml",
            fleet3,
            sample_repo,
            before_activate='["test -e /nonexistent/migrations"]',
        )
    )
    result, _, _ = await run(config)
    assert result.exit_code == 1
    for h in fleet3.hosts:
        assert current(h.home / "app") == first.release_id
        assert releases(h.home / "app") == [first.release_id]


async def test_a_hook_past_its_timeout_is_killed_on_the_host(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    """The session told the hook scripts that the host's ``timeout`` is GNU's: the
    hook is killed there (``-k``), the step says so, and ``current`` stays."""
    fleet = sshd_fleet(1)
    (h,) = fleet.hosts
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet, sample_repo))
    _, _, first = await run(config)
    commit_version(sample_repo, "2.0.0")
    mark = h.home / "hook-ran"
    config = load_config(
        write_config(
            tmp_path / "b.toml",
            fleet,
            sample_repo,
            before_activate=f'["touch {mark}; exec sleep 300"]',
            hook_timeout="1",
        )
    )
    result, rec, _ = await run(config)
    assert result.exit_code == 1
    assert mark.exists()
    before = [e for e in rec.of("status") if e.key.endswith("/before") and e.status == "failed"]
    assert len(before) == 1 and "(exit 124)" in before[0].detail, before
    logs = [e.text for e in rec.of("log") if e.key.endswith("/before")]
    assert "timed out after 1s" in logs, logs
    assert current(h.home / "app") == first.release_id
    out = subprocess.run(["pgrep", "-u", h.user, "-f", "sleep 300"], capture_output=True)
    assert out.returncode == 1, out.stdout  # nothing of the hook is left running


async def test_password_authentication(sshd_fleet, sample_repo, tmp_path, monkeypatch) -> None:
    fleet = sshd_fleet(2, password="canary-pw-5521")
    monkeypatch.setenv("SD_PW", "canary-pw-5521")
    config = load_config(
        write_config(
            tmp_path / "pw.toml", fleet, sample_repo, ssh_identity='""', ssh_password_env='"SD_PW"'
        )
    )
    # no key is offered: only the password gets in
    os.rename(fleet.client_key, str(fleet.client_key) + ".hidden")
    try:
        result, rec, d = await run(config)
    finally:
        os.rename(str(fleet.client_key) + ".hidden", fleet.client_key)
    assert result.exit_code == 0, result.summary
    assert "Accepted password for" in fleet.log_text()
    assert "canary-pw-5521" not in "".join(e.dumps() for e in rec.events)


async def test_thirty_hosts_with_default_maxstartups(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(32)  # two sshd processes, MaxStartups left at 10:30:100
    assert "MaxStartups" not in "".join(p.config.read_text() for p in fleet.procs)
    config = load_config(write_config(tmp_path / "s.toml", fleet, sample_repo, parallel="32"))
    result, _, d = await run(config)
    assert result.exit_code == 0, result.summary["failures"]
    assert result.summary["ok"] == 32
    assert fleet.accepted_logins() == 32


async def test_jump_host_one_bastion_connection(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(4, bastion=True)
    b = fleet.bastion
    config = load_config(
        write_config(tmp_path / "j.toml", fleet, sample_repo, ssh_jump=f'"{b.spec}"')
    )
    result, _, _ = await run(config)
    assert result.exit_code == 0, result.summary
    assert fleet.accepted_logins(b.proc_index) == 1
    text = fleet.log_text(b.proc_index)
    assert len(re.findall(r"Accepted publickey for", text)) == 1


async def test_ssh_config_aliases_and_proxyjump(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(2, bastion=True)
    aliases = {"web-a": fleet.hosts[0], "web-b": fleet.hosts[1], "gate": fleet.bastion}
    cfg = fleet.write_ssh_config(tmp_path / "ssh_config", aliases, proxy_jump="gate")
    config = load_config(
        write_config(
            tmp_path / "c.toml",
            fleet,
            sample_repo,
            hosts=["web-a", "web-b"],
            ssh_identity='""',
            ssh_config=f'"{cfg}"',
        )
    )
    result, _, d = await run(config)
    assert result.exit_code == 0, result.summary
    assert current(fleet.hosts[0].home / "app") == d.release_id
    assert fleet.accepted_logins(fleet.bastion.proc_index) == 1


async def test_frozen_host_fails_within_timeout(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(3, one_process_per_host=True)
    config = load_config(
        write_config(tmp_path / "f.toml", fleet, sample_repo, ssh_connect_timeout="2")
    )
    fleet.freeze_host(1)
    try:
        started = time.monotonic()
        result, _, _ = await run(config)
        elapsed = time.monotonic() - started
    finally:
        fleet.thaw_all()
    assert result.exit_code == 1
    assert "timed out connecting" in result.summary["failures"][fleet.hosts[1].spec]
    assert result.summary["ok"] == 2
    assert (
        elapsed < 15
    )  # connect_timeout 2: the timeout fires (7x its setting, never a speed claim)


async def test_changed_host_key_refused_nothing_uploaded(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(2)
    h = fleet.hosts[0]
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    lines = [
        line
        for line in fleet.known_hosts.read_text().splitlines()
        if not line.startswith(f"[{h.addr}]:{h.port} ")
    ]
    lines.append(f"[{h.addr}]:{h.port} {other}")
    fleet.known_hosts.write_text("\n".join(lines) + "\n")
    for policy in ("strict", "accept-new"):
        config = load_config(
            write_config(
                tmp_path / f"{policy}.toml", fleet, sample_repo, ssh_host_key_policy=f'"{policy}"'
            )
        )
        result, _, _ = await run(config)
        assert "HOST KEY CHANGED" in result.summary["failures"][h.spec]
        assert not (h.home / "app").exists()


async def test_preflight_changes_nothing(fleet3, sample_repo, tmp_path) -> None:
    config = load_config(write_config(tmp_path / "p.toml", fleet3, sample_repo))
    await run(config)

    def snapshot():
        return sorted(
            (str(p), p.stat().st_mtime_ns)
            for h in fleet3.hosts
            for p in h.home.rglob("*")
            if not p.is_symlink()
        ) + sorted(
            (str(p), os.readlink(p))
            for h in fleet3.hosts
            for p in h.home.rglob("*")
            if p.is_symlink()
        )

    before = snapshot()
    report = await preflight(config, config.all_hosts(), ref="main")
    assert before == snapshot()
    assert report.ok
    for hc in report.hosts:
        assert (
            hc.reachable
            and hc.auth
            and hc.host_key == "known"
            and hc.writable
            and hc.lock == "free"
        )
        assert hc.current and hc.free_kb and hc.free_kb > 0


async def test_non_utf8_hook_output_does_not_kill_the_connection(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(1)
    first = Deployment(load_config(write_config(tmp_path / "s.toml", fleet, sample_repo)))
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    # a restart hook that prints Latin-1 (e.g. a service log line "café")
    hooks = '["./bin/restart", "printf \'caf\\\\351\\\\n\'"]'
    config = load_config(
        write_config(tmp_path / "s.toml", fleet, sample_repo, after_activate=hooks)
    )
    assert config.deploy.after_activate[1] == "printf 'caf\\351\\n'"
    second = Deployment(config)
    result = await second.run()
    app = fleet.hosts[0].home / "app"
    assert not (app / ".shipdeck.lock").exists(), "lock leaked"
    assert result.exit_code == 0, result.summary["failures"]
    assert current(app) == second.release_id


async def test_a_rollback_whose_connection_dies_after_the_switch_claims_nothing(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(2, one_process_per_host=True)
    path = write_config(tmp_path / "s.toml", fleet, sample_repo)
    first = Deployment(load_config(path))
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    assert (await Deployment(load_config(path)).run()).exit_code == 0
    victim, other = fleet.hosts
    r = Rollback(load_config(path))

    def on(event) -> None:  # the host goes down once it is switched, as it restarts
        if (
            event.type == "status"
            and event.key.endswith(f"/{victim.spec}/restart")
            and event.status == "running"
        ):
            fleet.stop_host(victim)

    r.subscribe(on)
    result = await r.run()
    failure = result.summary["failures"][victim.spec]
    assert failure.startswith("unknown: lost after activate"), failure
    assert current(victim.home / "app") == first.release_id  # the switch did run
    assert " rollback " not in revisions(victim.home / "app")[-1]  # nothing claimed
    assert current(other.home / "app") == first.release_id
    assert " rollback " in revisions(other.home / "app")[-1]

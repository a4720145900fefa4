"""The main release scenarios on the in-process local fleet (real SSH, real shell)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import asyncssh
import pytest

from engine.config import load_config
from engine.deploy import Deployment, Rollback
from engine.history import History
from engine.localfleet import LocalFleet, commit_version
from tests.helpers import Recorder, current, current_version, releases, revisions

pytestmark = pytest.mark.timeout(60)


def app_dir(fleet: LocalFleet, name: str) -> Path:
    return fleet.host(name).home / "app"


async def deploy(config, **kw) -> tuple[object, Recorder, Deployment]:
    d = Deployment(config, **kw)
    rec = Recorder()
    d.subscribe(rec)
    result = await d.run()
    return result, rec, d


async def test_first_deploy_switches_every_host(fleet, fleet_config) -> None:
    config = fleet_config()
    result, rec, d = await deploy(config)
    assert result.exit_code == 0, result.summary
    for h in fleet.hosts:
        app = h.home / "app"
        assert current(app) == d.release_id
        assert current_version(app) == "1.0.0"
        assert (
            (app / "current" / "BUILD_INFO").read_text().startswith("built 1.0.0 at sha " + d.sha)
        )
        assert (app / "current" / "log").is_symlink()  # shared entry linked
        assert (h.home / "RUNNING").read_text().strip() == "1.0.0"  # after_activate ran
        line = revisions(app)[-1]
        assert (
            f"release={d.release_id}" in line and "operator=tester" in line and "outcome=ok" in line
        )
        assert not (app / ".shipdeck.lock").exists()
    # one connection per host; one shell session for every step, the upload's included
    # (its bytes follow its command there: the hosts' head is GNU's)
    assert all(h.connections == 1 for h in fleet.hosts)
    assert all(h.commands == 1 for h in fleet.hosts), [h.commands for h in fleet.hosts]
    for h in fleet.hosts:
        for step in ("upload", "unpack", "activate", "health", "cleanup"):
            assert rec.statuses(f"release/wave-1/{h.name}/{step}") == ["running", "ok"], step
    # the plan came first and the deploy finished
    assert rec.events[0].type == "plan"
    assert rec.events[-1].type == "finished" and rec.events[-1].status == "ok"
    # history
    row = History().get(d.deploy_id)
    assert row["status"] == "ok" and row["release_id"] == d.release_id
    assert sorted(x["host"] for x in row["hosts"]) == ["host1", "host2", "host3"]
    assert History().transcript(d.deploy_id).read_text().count("\n") == len(rec.events)


async def test_second_deploy_new_commit_then_rollback(fleet, fleet_config, sample_repo) -> None:
    config = fleet_config()
    _, _, first = await deploy(config)
    commit_version(sample_repo, "2.0.0")
    result, rec, second = await deploy(config)
    assert result.exit_code == 0
    assert second.sha != first.sha
    for h in fleet.hosts:
        assert current_version(h.home / "app") == "2.0.0"
        assert len(releases(h.home / "app")) == 2
    rb = Rollback(config)
    result = await rb.run()
    assert result.exit_code == 0, result.summary
    for h in fleet.hosts:
        assert current(h.home / "app") == first.release_id
        assert (h.home / "RUNNING").read_text().strip() == "1.0.0"
        line = revisions(h.home / "app")[-1]
        assert "rollback" in line and f"release={first.release_id} sha={first.sha} " in line
    # --to goes forward again
    result = await Rollback(config, to=second.release_id, hosts="host1").run()
    assert result.exit_code == 0
    assert current(app_dir(fleet, "host1")) == second.release_id
    assert current(app_dir(fleet, "host2")) == first.release_id
    assert (
        f"release={second.release_id} sha={second.sha} " in revisions(app_dir(fleet, "host1"))[-1]
    )
    assert [r["kind"] for r in History().list()] == ["rollback", "rollback", "deploy", "deploy"]


async def test_unchanged_build_is_not_rebuilt_or_uploaded(fleet, fleet_config) -> None:
    config = fleet_config()
    await deploy(config)
    result, rec, _ = await deploy(config)
    assert result.exit_code == 0
    by_key = {e.key: e for e in rec.of("status") if e.status in ("ok", "skipped")}
    assert by_key["build"].status == "skipped" and "reused" in by_key["build"].detail
    for h in fleet.hosts:
        upload = by_key[f"release/wave-1/{h.name}/upload"]
        assert upload.status == "skipped" and "already on host" in upload.detail
    assert not rec.of("progress")  # zero bytes sent


async def test_corrupt_artifact_on_host_is_uploaded_again(fleet, fleet_config) -> None:
    config = fleet_config()
    _, _, d = await deploy(config)
    art = next((app_dir(fleet, "host2") / "artifacts").iterdir())
    art.write_bytes(b"x" * art.stat().st_size)
    result, rec, _ = await deploy(config)
    assert result.exit_code == 0
    assert rec.statuses("release/wave-1/host2/upload")[-1] == "ok"
    assert rec.statuses("release/wave-1/host1/upload")[-1] == "skipped"


async def test_health_failure_rolls_back_that_host(fleet, fleet_config, sample_repo) -> None:
    config = fleet_config(health_timeout=1)
    _, _, first = await deploy(config)
    commit_version(sample_repo, "2.0.0")
    fleet.fail_health("host2", "2.0.0")
    result, rec, second = await deploy(config)
    assert result.exit_code == 1  # finished, some hosts failed within the budget
    assert current(app_dir(fleet, "host1")) == second.release_id
    assert current(app_dir(fleet, "host2")) == first.release_id  # rolled back
    assert (fleet.host("host2").home / "RUNNING").read_text().strip() == "1.0.0"  # restarted again
    failure = result.summary["failures"]["host2"]
    assert "unhealthy" in failure and f"rolled back to {first.release_id} (healthy)" in failure
    assert "outcome=rolled-back" in revisions(app_dir(fleet, "host2"))[-1]
    assert History().get(second.deploy_id)["status"] == "failed"


async def test_first_deploy_unhealthy_has_nothing_to_roll_back_to(fleet, fleet_config) -> None:
    fleet.fail_health("host1")
    result, _, _ = await deploy(fleet_config(health_timeout=0.5))
    assert result.exit_code == 1
    assert "no previous release" in result.summary["failures"]["host1"]


@pytest.mark.parametrize(
    "breakage",
    ["build", "unpack", "before_activate"],
)
async def test_failures_before_activate_leave_current_unchanged(
    fleet, fleet_config, sample_repo, breakage
) -> None:
    config = fleet_config()
    _, _, first = await deploy(config)
    commit_version(sample_repo, "2.0.0")
    overrides = {}
    if breakage == "build":
        (sample_repo / "build.sh").write_text("echo compiling; echo 'error: boom' >&2; exit 7\n")
        commit_version(sample_repo, "2.0.1")
    elif breakage == "unpack":
        # a host whose tar is broken (a ~/bin earlier on PATH, as a login profile would set)
        for h in fleet.hosts:
            (h.home / "bin").mkdir(exist_ok=True)
            (h.home / "bin" / "tar").write_text(
                "#!/bin/sh\necho 'tar: disk quota exceeded' >&2\nexit 2\n"
            )
            os.chmod(h.home / "bin" / "tar", 0o755)
        overrides = {"before_activate": []}
    else:
        overrides = {"before_activate": ["echo checking; exit 3"]}
    config = fleet_config(**overrides)
    result, rec, second = await deploy(config)
    assert result.exit_code in (1, 3)
    for h in fleet.hosts:
        app = h.home / "app"
        assert current(app) == first.release_id, breakage
        assert current_version(app) == "1.0.0"
        assert not (app / ".shipdeck.lock").exists()
        assert releases(app) == [first.release_id]  # the unactivated release was removed
    if breakage == "build":
        assert result.exit_code == 3
        assert "exit 7" in result.summary["reason"]
        assert any(getattr(e, "text", "") == "error: boom" for e in rec.of("log"))
    elif breakage == "unpack":
        assert "disk quota exceeded" in result.summary["failures"]["host1"]
    else:
        assert "`echo checking; exit 3` exited 3" in result.summary["failures"]["host1"]


async def test_unreachable_host_fails_alone(fleet, fleet_config, tmp_path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead_port = sock.getsockname()[1]
    sock.close()
    cfg_text = (
        (tmp_path / "shipdeck.toml").read_text() if (tmp_path / "shipdeck.toml").exists() else None
    )
    config = fleet_config(connect_timeout=None)
    text = config.path.read_text().replace(
        'web = ["host1"', f'web = ["127.0.0.1:{dead_port}", "host1"'
    )
    config.path.write_text(text)
    from engine.config import load_config

    result, rec, _ = await deploy(load_config(config.path))
    assert result.exit_code == 1
    assert "connection refused" in result.summary["failures"][f"127.0.0.1:{dead_port}"]
    assert result.summary["ok"] == 3
    assert cfg_text is None or cfg_text


async def test_lock_held_by_another_operator(fleet, fleet_config) -> None:
    config = fleet_config()
    app = app_dir(fleet, "host2")
    (app / ".shipdeck.lock").mkdir(parents=True)
    owner = {"operator": "alice", "pid": 4242, "host": "jump-9", "since": "2026-11-24T10:00:00Z"}
    (app / ".shipdeck.lock" / "owner").write_text(json.dumps(owner))
    result, _, _ = await deploy(config)
    assert result.exit_code == 3
    assert "locked by alice (pid 4242 on jump-9" in result.summary["failures"]["host2"]
    assert (app / ".shipdeck.lock" / "owner").read_text() == json.dumps(owner)  # not ours to remove
    assert current(app) is None
    # --force-unlock takes it over and says whose it was
    rec = Recorder()
    d = Deployment(config, force_unlock=True)
    d.subscribe(rec)
    result = await d.run()
    assert result.exit_code == 0
    assert any(
        "taking over the lock held by alice" in getattr(e, "text", "") for e in rec.of("log")
    )


async def test_a_dead_pid_is_not_stale_but_an_old_heartbeat_is(fleet, fleet_config) -> None:
    app = app_dir(fleet, "host1")
    (app / ".shipdeck.lock").mkdir(parents=True)
    dead_pid = 2**22 + 12345
    owner = {
        "operator": "ghost",
        "pid": dead_pid,
        "host": socket.gethostname(),
        "since": "x",
        "deploy_id": "20261124T000000Z-dead01",
    }
    (app / ".shipdeck.lock" / "owner").write_text(json.dumps(owner))
    # liveness is the heartbeat, never the pid: a fresh heartbeat holds the lock
    (app / ".shipdeck.lock" / "hb").write_text(f"{int(time.time())}\n")
    result, _, _ = await deploy(fleet_config())
    assert result.exit_code == 3
    assert "locked by ghost" in result.summary["failures"]["host1"]
    assert current(app) is None
    # a heartbeat older than the TTL (host clock) is stale: taken over, and said so
    (app / ".shipdeck.lock" / "hb").write_text(f"{int(time.time()) - 600}\n")
    result, rec, _ = await deploy(fleet_config())
    assert result.exit_code == 0, result.summary
    assert any(
        "taking over the lock held by ghost" in getattr(e, "text", "")
        and "no heartbeat for" in getattr(e, "text", "")
        for e in rec.of("log")
    )
    assert not (app / ".shipdeck.lock").exists()


async def test_password_auth_on_local_fleet(tmp_path, sample_repo, monkeypatch) -> None:
    async with LocalFleet(tmp_path / "pw", 2, password="s3cret-canary-pw") as fleet:
        fleet.client_key_path.unlink()  # no key: the password is the only way in
        monkeypatch.setenv("DEPLOY_PW", "s3cret-canary-pw")
        path = fleet.write_config(
            tmp_path / "pw.toml", sample_repo, ssh_extra={"password_env": "DEPLOY_PW"}
        )
        from engine.config import load_config

        result, rec, d = await deploy(load_config(path))
        assert result.exit_code == 0, result.summary
        blob = "\n".join(e.dumps() for e in rec.events)
        assert "s3cret-canary-pw" not in blob
        assert "s3cret-canary-pw" not in History().transcript(d.deploy_id).read_text()


async def test_keep_releases_cleanup(fleet, fleet_config, sample_repo) -> None:
    config = fleet_config(keep_releases=2)
    ids = []
    for v in ("1", "2", "3", "4"):
        commit_version(sample_repo, v)
        _, _, d = await deploy(config)
        ids.append(d.release_id)
        await asyncio.sleep(0.01)
    app = app_dir(fleet, "host1")
    assert sorted(releases(app)) == sorted(ids[-2:])
    assert len(list((app / "artifacts").glob("*.tar"))) == 2
    # and the patch the last one was rebuilt from, kept for the site's peers until the next deploy
    assert len(list((app / "artifacts").glob("*.zst"))) <= 1


async def test_fan_out_respects_parallel(fleet, fleet_config) -> None:
    result, rec, _ = await deploy(fleet_config(parallel=1))
    assert result.exit_code == 0
    running = 0
    peak = 0
    for e in rec.of("status"):
        if e.key.count("/") == 2 and e.key.startswith("release/wave"):
            if e.status == "running":
                running += 1
            elif e.status in ("ok", "failed"):
                running -= 1
            peak = max(peak, running)
    assert peak == 1


async def test_rollback_without_to_goes_where_every_host_can(
    fleet, fleet_config, sample_repo
) -> None:
    """The previous release is gone from one host: a rollback without --to goes back
    to the newest earlier release EVERY host has, and the fleet ends on one release;
    with none on every host it stops (exit 3) and switches nothing."""
    import shutil

    config = fleet_config()
    ids = []
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        if version != "1.0.0":
            commit_version(sample_repo, version)
        d = Deployment(config)
        assert (await d.run()).exit_code == 0
        ids.append(d.release_id)
    shutil.rmtree(app_dir(fleet, "host2") / "releases" / ids[1])
    result = await Rollback(config).run()
    assert result.exit_code == 0, result.summary
    assert {current(app_dir(fleet, h.name)) for h in fleet.hosts} == {ids[0]}

    # every host is on the oldest release now: nothing earlier to go back to
    result = await Rollback(config).run()
    assert result.exit_code == 3
    assert "no earlier release is on every selected host" in result.summary["reason"]
    assert {current(app_dir(fleet, h.name)) for h in fleet.hosts} == {ids[0]}


# -- one host: atomicity, release ids, health, abort, locks, secrets -----------------


@pytest.fixture
async def fleet1(tmp_path: Path):
    async with LocalFleet(tmp_path / "fleet1", 1) as f:
        yield f


@pytest.fixture
def cfg1(fleet1: LocalFleet, sample_repo: Path, tmp_path: Path):
    def make(**overrides):
        overrides.setdefault("health_timeout", 0.6)
        overrides.setdefault("health_interval", 0.1)
        path = fleet1.write_config(tmp_path / "shipdeck1.toml", sample_repo, **overrides)
        return load_config(path)

    return make


def app1(fleet: LocalFleet) -> Path:
    return fleet.hosts[0].home / "app"


async def test_cancel_after_activate_never_deletes_the_live_release(
    fleet1, cfg1, sample_repo
) -> None:
    first = Deployment(cfg1())
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    d = Deployment(cfg1(after_activate=["./bin/restart", "sleep 2"]))
    task = asyncio.ensure_future(d.run())

    def on(event) -> None:
        if event.type == "status" and event.key.endswith("/restart") and event.status == "running":
            asyncio.get_running_loop().call_later(0.3, task.cancel)

    d.subscribe(on)
    with pytest.raises(asyncio.CancelledError):
        await task
    app = app1(fleet1)
    # whatever current points at must exist and be complete
    assert (app / "current" / "VERSION").exists(), (current(app), releases(app))


async def test_same_release_id_twice_never_deletes_current(fleet1, cfg1, monkeypatch) -> None:
    import engine.source as source_mod

    # two deploys of the same sha within one second (a CI retry, a double click)
    monkeypatch.setattr(source_mod, "utc_stamp", lambda at=None: "20260101T000000Z")
    assert (await Deployment(cfg1()).run()).exit_code == 0
    result = await Deployment(cfg1(before_activate=["false"])).run()
    assert result.exit_code == 1
    app = app1(fleet1)
    assert (app / "current" / "VERSION").exists(), (current(app), releases(app))


async def test_encrypted_identity_fails_one_host_not_the_deploy(
    fleet, fleet_config, tmp_path
) -> None:
    key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    key.write_private_key(str(tmp_path / "enc_key"), format_name="pkcs8-pem", passphrase="pw")
    cfg = fleet.ssh_config.read_text().replace(
        "Host host2\n", f"Host host2\n    IdentityFile {tmp_path / 'enc_key'}\n"
    )
    fleet.ssh_config.write_text(cfg)
    result = await Deployment(fleet_config()).run()  # must return, not raise
    assert "host2" in result.summary["failures"]
    assert result.summary["ok"] == 2
    for h in fleet.hosts:
        assert not (h.home / "app" / ".shipdeck.lock").exists(), h.name


async def test_rollback_goes_to_the_previous_release_not_a_newer_failed_one(
    fleet1, cfg1, sample_repo, monkeypatch
) -> None:
    import engine.source as source_mod

    seconds = iter(range(1, 1000))
    monkeypatch.setattr(
        source_mod, "utc_stamp", lambda at=None: f"20260101T0000{next(seconds):02d}Z"
    )  # a new second per call
    config = cfg1()
    r1 = Deployment(config)
    assert (await r1.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    r2 = Deployment(config)
    assert (await r2.run()).exit_code == 0
    commit_version(sample_repo, "3.0.0")
    fleet1.fail_health("host1", "3.0.0")
    r3 = Deployment(config)
    assert (await r3.run()).exit_code == 1  # unhealthy, auto-rolled back to r2
    app = app1(fleet1)
    assert current(app) == r2.release_id
    # the running app writes into its own directory (a pid file, __pycache__, ...)
    (app / "current" / "app.pid").write_text("4242\n")
    await Rollback(config).run()
    assert current(app) == r1.release_id, f"rolled 'back' to {current(app)} (r3={r3.release_id})"


async def test_abort_after_switch_reports_the_host_as_deployed(fleet1, cfg1) -> None:
    d = Deployment(cfg1())

    def on(event) -> None:
        if event.type == "status" and event.key.endswith("/health") and event.status == "ok":
            d.abort(by="bob")

    d.subscribe(on)
    await d.run()
    app = app1(fleet1)
    assert current(app) == d.release_id  # it IS switched
    assert d.plan["release/wave-1/host1"].status == "ok"
    assert "outcome=cancelled" not in revisions(app)[-1]


async def test_first_health_check_honours_health_timeout(fleet1, cfg1) -> None:
    config = cfg1(after_activate=["true"], health="sleep 30", health_timeout=0.3, hook_timeout=3)
    d = Deployment(config)
    result = await d.run()
    assert result.exit_code == 1
    node = d.plan["release/wave-1/host1/health"]
    took = node.ended - node.started
    assert took < 10, f"health_timeout=0.3 but the health step took {took:.1f}s (sleep 30)"


async def test_health_output_without_newline_is_checked_once(fleet1, cfg1) -> None:
    d = Deployment(cfg1(health="printf '{\"ok\":true}'"))
    assert (await d.run()).exit_code == 0
    assert d.plan["release/wave-1/host1/health"].detail == "healthy after 1 attempt"


async def test_abort_during_build_stops_promptly(fleet1, cfg1) -> None:
    d = Deployment(cfg1(build_commands=["sleep 30", "sh build.sh"]))
    aborted_at: list[float] = []

    def abort() -> None:
        aborted_at.append(time.monotonic())
        d.abort()

    def on(event) -> None:
        if event.type == "status" and event.key == "build" and event.status == "running":
            asyncio.get_running_loop().call_later(0.2, abort)

    d.subscribe(on)
    result = await d.run()
    assert result.exit_code == 3
    took = time.monotonic() - aborted_at[0]
    assert took < 10, f"stopped {took:.1f}s after the abort (the build sleeps 30 s)"


async def test_lock_with_unreadable_owner_is_not_taken_over(fleet1, cfg1) -> None:
    lock = app1(fleet1) / ".shipdeck.lock"
    lock.mkdir(parents=True)  # what a concurrent deployer's lock looks like right after mkdir
    result = await Deployment(cfg1()).run()
    assert result.exit_code == 3, "the deploy ran while another deploy held the lock"
    assert current(app1(fleet1)) is None


async def test_build_commands_do_not_see_the_ssh_password(fleet1, cfg1, monkeypatch) -> None:
    monkeypatch.setenv("SD_REVIEW_PW", "canary-review-pw-31337")
    config = cfg1(
        build_commands=['test -z "$SD_REVIEW_PW"', "sh build.sh"],
        ssh_extra={"password_env": "SD_REVIEW_PW"},
    )
    result = await Deployment(config).run()
    assert result.exit_code == 0, result.summary

"""One deploy per fleet, on real OpenSSH hosts: the fleet lock, fenced steps,
liveness by heartbeat, takeover by compare-and-swap, unwritable paths, reports that
say what happened, leftovers, and rollback in waves."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config import load_config
from engine.deploy import Deployment, Rollback
from engine.events import WAITING
from engine.localfleet import commit_version, make_sample_repo
from engine.preflight import preflight
from tests.engine.test_deploy_sshd import write_config
from tests.helpers import Recorder, current, current_version, releases, revisions

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


async def run(config, **kw):
    d = Deployment(config, **kw)
    rec = Recorder()
    d.subscribe(rec)
    return await d.run(), rec, d


def chown_tree(path: Path, user: str) -> None:
    shutil.chown(path, user)
    for p in path.rglob("*"):
        shutil.chown(p, user)


def plant_lock(host, *, operator: str, deploy_id: str, heartbeat_age: int) -> Path:
    """Another deploy's lock on ``host``, its heartbeat ``heartbeat_age`` seconds old."""
    lock = host.home / "app" / ".shipdeck.lock"
    lock.mkdir(parents=True)
    owner = {
        "operator": operator,
        "pid": 4242,
        "host": "jump-9",
        "since": "2026-11-30T10:00:00Z",
        "deploy_id": deploy_id,
        "ttl": 60,
    }
    (lock / "owner").write_text(json.dumps(owner) + "\n")
    (lock / "hb").write_text(f"{int(time.time()) - heartbeat_age}\n")
    chown_tree(lock, host.user)
    return lock


def locks_left(fleet) -> list[str]:
    return [h.spec for h in fleet.hosts if (h.home / "app" / ".shipdeck.lock").exists()]


def host_logs(rec: Recorder, text: str) -> list[str]:
    return [e.text for e in rec.of("log") if text in e.text]  # type: ignore[attr-defined]


# -- 1. all-or-nothing fleet lock ---------------------------------------------------


async def test_a_host_held_in_the_last_wave_stops_the_deploy_before_any_change(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(4)
    path = write_config(tmp_path / "s.toml", fleet, sample_repo, batches='["1", "100%"]')
    result, _, first = await run(load_config(path))
    assert result.exit_code == 0, result.summary
    commit_version(sample_repo, "2.0.0")
    held = fleet.hosts[3]
    lock = plant_lock(held, operator="alice", deploy_id="20261130T100000Z-a11ce0", heartbeat_age=0)
    owner_before = (lock / "owner").read_text()

    result, _, second = await run(load_config(path))
    assert result.exit_code == 3, result.summary
    assert result.status == "stopped"
    assert "locked by alice" in result.summary["reason"]
    assert held.spec in result.summary["reason"]
    for h in fleet.hosts:  # nothing changed anywhere: not even the canary
        app = h.home / "app"
        assert current(app) == first.release_id, h.spec
        assert second.release_id not in releases(app), h.spec
        assert len(revisions(app)) == 1, h.spec
    assert locks_left(fleet) == [held.spec]  # every lock taken was given back
    assert (lock / "owner").read_text() == owner_before

    # deploy.lock_wait: wait for the holder instead; it finishes while we wait
    waiting = asyncio.Event()
    d = Deployment(
        load_config(write_config(tmp_path / "w.toml", fleet, sample_repo, lock_wait="60"))
    )

    def on(event) -> None:
        if event.type == "status" and event.key.endswith("/lock") and event.status == WAITING:
            waiting.set()

    d.subscribe(on)
    task = asyncio.ensure_future(d.run())
    await asyncio.wait_for(waiting.wait(), 60)
    assert all(current(h.home / "app") == first.release_id for h in fleet.hosts)
    shutil.rmtree(lock)  # the holder is done
    result = await asyncio.wait_for(task, 120)
    assert result.exit_code == 0, result.summary
    assert {current_version(h.home / "app") for h in fleet.hosts} == {"2.0.0"}
    assert locks_left(fleet) == []


async def test_two_deploys_started_together_never_mix_the_fleet(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(4)
    other = make_sample_repo(tmp_path / "other")
    commit_version(other, "9.0.0")
    cfg_a = load_config(write_config(tmp_path / "a.toml", fleet, sample_repo))
    cfg_b = load_config(write_config(tmp_path / "b.toml", fleet, other))
    outcomes = []
    for attempt in range(3):
        (ra, _, da), (rb, _, db) = await asyncio.gather(run(cfg_a), run(cfg_b))
        fleet_now = {current(h.home / "app") for h in fleet.hosts}
        assert len(fleet_now) == 1, f"attempt {attempt}: a mixed fleet {fleet_now}"
        winners = [d for r, d in ((ra, da), (rb, db)) if r.exit_code == 0]
        assert len(winners) <= 1
        for r, d in ((ra, da), (rb, db)):
            if r.exit_code == 0:
                assert fleet_now == {d.release_id}
            else:  # a loser never reports OK and never leaves its release live
                assert r.exit_code == 3 and r.status == "stopped", r.summary
                assert d.release_id not in fleet_now
                assert r.summary["ok"] == 0
        assert locks_left(fleet) == []
        outcomes.append((ra.exit_code, rb.exit_code))
    print("\nexit codes (a, b) per attempt:", outcomes)


async def test_a_stale_lock_is_taken_over_by_one_contender_only(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(3)
    other = make_sample_repo(tmp_path / "other")
    commit_version(other, "9.0.0")
    cfg_a = load_config(write_config(tmp_path / "a.toml", fleet, sample_repo))
    cfg_b = load_config(write_config(tmp_path / "b.toml", fleet, other))
    for h in fleet.hosts:
        (h.home / "app").mkdir()
        shutil.chown(h.home / "app", h.user)
        plant_lock(h, operator="ghost", deploy_id="20261130T090000Z-60057a", heartbeat_age=3600)
    (ra, rec_a, da), (rb, rec_b, db) = await asyncio.gather(run(cfg_a), run(cfg_b))
    for h in fleet.hosts:
        took = host_logs(rec_a, f"{h.spec}: took over the lock of ghost") + host_logs(
            rec_b, f"{h.spec}: took over the lock of ghost"
        )
        assert len(took) <= 1, took  # compare-and-swap: never two winners
    assert len(host_logs(rec_a, "took over") + host_logs(rec_b, "took over")) >= 1
    assert [r.exit_code for r in (ra, rb)].count(0) <= 1
    fleet_now = {current(h.home / "app") for h in fleet.hosts}
    assert len(fleet_now) == 1, fleet_now
    assert locks_left(fleet) == []


def _shipdeck(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "tui.cli", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_a_live_lock_held_from_another_pid_namespace_is_never_stale(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    fleet = sshd_fleet(2)
    # a short TTL: the holder's heartbeat must keep its lock alive for many TTLs
    path = write_config(
        tmp_path / "s.toml",
        fleet,
        sample_repo,
        lock_ttl="3",
        before_activate='["while [ ! -e $HOME/gate ]; do sleep 0.1; done"]',
        hook_timeout="120",
    )
    holding = asyncio.Event()
    d = Deployment(load_config(path))

    def on(event) -> None:
        if event.type == "status" and event.key.endswith("/before") and event.status == "running":
            holding.set()

    d.subscribe(on)
    task = asyncio.ensure_future(d.run())
    try:
        await asyncio.wait_for(holding.wait(), 60)
        # two TTLs later (the host's clock in the lock): only the heartbeat keeps it alive
        hb = fleet.hosts[0].home / "app" / ".shipdeck.lock" / "hb"
        first = int(hb.read_text())
        async with asyncio.timeout(60):
            while int(hb.read_text() or 0) < first + 2 * 3:
                await asyncio.sleep(0.1)
        # the same machine's hostname, another pid space: our pid is not visible there
        proc = _shipdeck(
            "deploy",
            "-c",
            str(path),
            "--headless",
            prefix=("unshare", "--pid", "--fork", "--mount-proc"),
        )
        out, err = await asyncio.to_thread(proc.communicate, timeout=120)
        if proc.returncode not in (0, 1, 3) and "unshare" in err:
            pytest.skip(f"unshare is not permitted here: {err.strip()[:200]}")
        assert proc.returncode == 3, out + err
        assert "locked by tester" in out + err
        assert "OK" not in out.splitlines()[-1] if out.strip() else True
        assert all(current(h.home / "app") is None for h in fleet.hosts)
    finally:
        for h in fleet.hosts:
            (h.home / "gate").touch()
        result = await asyncio.wait_for(task, 120)
    assert result.exit_code == 0, result.summary
    assert {current(h.home / "app") for h in fleet.hosts} == {d.release_id}
    assert locks_left(fleet) == []


# -- 2. fenced steps --------------------------------------------------------------------


async def test_a_deploy_whose_lock_was_taken_over_never_switches_current(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(2)
    result, _, first = await run(load_config(write_config(tmp_path / "a.toml", fleet, sample_repo)))
    assert result.exit_code == 0
    commit_version(sample_repo, "2.0.0")
    path = write_config(
        tmp_path / "s.toml",
        fleet,
        sample_repo,
        before_activate='["while [ ! -e $HOME/gate ]; do sleep 0.1; done"]',
    )
    victim = fleet.hosts[0]
    holding = asyncio.Event()
    d = Deployment(load_config(path))
    rec = Recorder()
    d.subscribe(rec)

    def on(event) -> None:
        if event.type == "status" and event.key.endswith(f"{victim.spec}/before"):
            if event.status == "running":
                holding.set()

    d.subscribe(on)
    task = asyncio.ensure_future(d.run())
    await asyncio.wait_for(holding.wait(), 60)
    # mallory takes the lock over (as a --force-unlock from elsewhere would)
    lock = victim.home / "app" / ".shipdeck.lock"
    mallory = {"operator": "mallory", "deploy_id": "20261130T110000Z-ma11o0", "ttl": 60}
    new = lock / "owner.new"
    new.write_text(json.dumps(mallory) + "\n")
    shutil.chown(new, victim.user)
    new.rename(lock / "owner")
    for h in fleet.hosts:
        (h.home / "gate").touch()
    result = await asyncio.wait_for(task, 120)

    failure = result.summary["failures"][victim.spec]
    assert "lock taken over by mallory (deploy 20261130T110000Z-ma11o0)" in failure, failure
    app = victim.home / "app"
    assert current(app) == first.release_id  # never switched
    assert all(d.deploy_id not in line for line in revisions(app))  # nor written to
    assert json.loads((lock / "owner").read_text())["operator"] == "mallory"  # nor unlocked
    other = fleet.hosts[1]
    assert current(other.home / "app") == d.release_id
    assert result.exit_code == 1


# -- 8. reports say what happened ------------------------------------------------------


async def test_a_connection_lost_after_activate_is_reported_unknown_not_rolled_back(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(2, one_process_per_host=True)
    result, _, first = await run(
        load_config(write_config(tmp_path / "a.toml", fleet, sample_repo, lock_ttl="2"))
    )
    assert result.exit_code == 0
    commit_version(sample_repo, "2.0.0")
    lost = fleet.hosts[0]
    marker = lost.home / "SWITCHED"
    # the restart hook of the lost host signals, then waits for the connection to die
    path = write_config(
        tmp_path / "s.toml",
        fleet,
        sample_repo,
        lock_ttl="2",
        after_activate='["./bin/restart && if [ -e $HOME/.drop ]; then touch $HOME/SWITCHED; sleep 60; fi"]',
    )
    (lost.home / ".drop").touch()
    d = Deployment(load_config(path))

    async def drop_when_switched() -> None:
        while not marker.exists():
            await asyncio.sleep(0.05)
        fleet.stop_host(lost)

    dropper = asyncio.ensure_future(drop_when_switched())
    try:
        result = await asyncio.wait_for(d.run(), 120)
    finally:
        dropper.cancel()
    (lost.home / ".drop").unlink()
    failure = result.summary["failures"][lost.spec]
    assert failure.startswith("unknown: lost after activate"), failure
    assert "rolled back" not in failure
    app = lost.home / "app"
    assert current(app) == d.release_id  # the truth on the host: the switch ran
    assert result.exit_code == 1

    # the host comes back: --dry-run and the next deploy read the truth from the host
    fleet.start_host(lost)
    config = load_config(path)
    report = await preflight(config, config.select_hosts(None), ref="main")
    check = next(h for h in report.hosts if h.host == lost.spec)
    assert check.current == d.release_id
    assert "held by tester" in check.lock  # its heartbeat stopped: stale after the TTL
    # the next deploy waits for that lock to go stale, then takes it over
    config = load_config(
        write_config(tmp_path / "next.toml", fleet, sample_repo, lock_ttl="2", lock_wait="30")
    )
    result, rec, third = await run(config)
    assert result.exit_code == 0, result.summary
    assert host_logs(rec, f"{lost.spec}: took over the lock of tester")
    assert current(app) == third.release_id
    rows = {r["host"]: r for r in third._host_rows(third.release_id)}
    assert rows[lost.spec]["previous"] == d.release_id


# -- 9. a path that cannot be written is not a lock ---------------------------------------


async def test_an_unwritable_deploy_path_fails_that_host_with_the_os_reason(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(3)
    denied, readonly = fleet.hosts[0], fleet.hosts[1]
    app = denied.home / "app"
    app.mkdir()
    os.chmod(app, 0o555)  # owned by root: the login user cannot create anything in it
    ro = readonly.home / "app"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], capture_output=True
    )
    try:
        path = write_config(tmp_path / "s.toml", fleet, sample_repo, max_fail='"2"')
        result, _, d = await run(load_config(path))
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False)
    failures = result.summary["failures"]
    assert failures[denied.spec] == f"cannot create {app}/.shipdeck.lock: Permission denied"
    if mounted.returncode == 0:
        assert failures[readonly.spec] == (
            f"cannot create {ro}/.shipdeck.lock: Read-only file system"
        )
    assert result.exit_code == 1  # within the failure budget: the others deploy
    assert current(fleet.hosts[2].home / "app") == d.release_id
    # one more failure than the budget allows: stopped before anything changed
    result, _, d2 = await run(load_config(write_config(tmp_path / "t.toml", fleet, sample_repo)))
    if mounted.returncode == 0:
        assert result.exit_code == 1  # max_fail defaults to 100%
    tight = write_config(tmp_path / "u.toml", fleet, sample_repo, max_fail='"0"')
    commit_version(sample_repo, "3.0.0")
    result, _, d3 = await run(load_config(tight))
    assert result.exit_code == 3
    assert "failure budget exceeded before anything changed" in result.summary["reason"]
    assert current(fleet.hosts[2].home / "app") != d3.release_id
    assert locks_left(fleet) == []


# -- 10. leftovers --------------------------------------------------------------------------


async def test_cleanup_removes_what_failed_deploys_left_behind(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(1)
    h = fleet.hosts[0]
    app = h.home / "app"
    path = write_config(tmp_path / "s.toml", fleet, sample_repo, keep_releases="5")
    _, _, first = await run(load_config(path))
    commit_version(sample_repo, "2.0.0")
    _, _, second = await run(load_config(path))
    # leftovers of killed or failed deploys
    never = "20200101T000000Z-dead000"  # older than current, never current
    (app / "releases" / never).mkdir()
    (app / "artifacts" / ("f" * 64 + ".tar.gz.part")).write_bytes(b"half an upload")
    os.symlink(f"releases/{second.release_id}", app / ".current.tmp.20200101T000000Z-x")
    chown_tree(app, h.user)
    commit_version(sample_repo, "3.0.0")
    result, _, third = await run(load_config(path))
    assert result.exit_code == 0, result.summary
    assert releases(app) == sorted([first.release_id, second.release_id, third.release_id])
    assert not list((app / "artifacts").glob("*.part"))
    assert not list(app.glob(".current.tmp.*"))


async def test_enospc_during_unpack_says_no_space_left_on_device(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(2)
    full = fleet.hosts[0]
    app = full.home / "app"
    app.mkdir()
    # plenty of bytes for the pre-check, too few inodes for the unpacked tree
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=24", "tmpfs", str(app)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        shutil.chown(app, full.user)
        build = sample_repo / "build.sh"
        build.write_text(
            build.read_text()
            + "mkdir -p dist/many; i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo $i > dist/many/f$i; done\n"
        )
        commit_version(sample_repo, "1.0.1")
        path = write_config(tmp_path / "s.toml", fleet, sample_repo)
        result, _, d = await run(load_config(path))
    finally:
        subprocess.run(["umount", "-l", str(app)], check=False)
    failure = result.summary["failures"][full.spec]
    assert "no space left on device" in failure, failure
    assert current(fleet.hosts[1].home / "app") == d.release_id


# -- 14.3 rollback follows the waves --------------------------------------------------------


async def test_rollback_follows_the_waves_and_the_failure_budget(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(3)
    path = write_config(tmp_path / "s.toml", fleet, sample_repo, batches='["1", "100%"]')
    _, _, first = await run(load_config(path))
    commit_version(sample_repo, "2.0.0")
    _, _, second = await run(load_config(path))
    config = load_config(path)
    rb = Rollback(config)
    assert [w.label for w in rb.plan.waves()] == [
        "wave 1 (canary: 1 host): rollback to previous release",
        "wave 2 (2 hosts) (100%): rollback to previous release",
    ]
    assert len(Rollback(config, all_at_once=True).plan.waves()) == 1
    # a rollback holds every host's lock first too: one held host, nothing switched
    lock = plant_lock(
        fleet.hosts[2], operator="alice", deploy_id="20261130T100000Z-a11ce0", heartbeat_age=0
    )
    result = await Rollback(config).run()
    assert result.exit_code == 3
    assert "locked by alice" in result.summary["reason"]
    assert all(current(h.home / "app") == second.release_id for h in fleet.hosts)
    assert locks_left(fleet) == [fleet.hosts[2].spec]
    shutil.rmtree(lock)
    # the canary's rollback fails: the next wave does not start
    canary = fleet.hosts[0]
    shutil.rmtree(canary.home / "app" / "releases" / first.release_id)
    # (without --to no host is even tried: the release is not on every host)
    result = await Rollback(config).run()
    assert result.exit_code == 3, result.summary
    assert "no earlier release is on every selected host" in result.summary["reason"]
    result = await Rollback(config, to=first.release_id).run()
    assert result.exit_code == 3, result.summary
    assert "is not on this host" in result.summary["failures"][canary.spec]
    for h in fleet.hosts:
        assert current(h.home / "app") == second.release_id, h.spec
    assert locks_left(fleet) == []
    # the same rollback past the broken canary: waves in order, every host switched
    cfg = load_config(
        write_config(
            tmp_path / "t.toml", fleet, sample_repo, hosts=[h.spec for h in fleet.hosts[1:]]
        )
    )
    result = await Rollback(cfg, to=first.release_id).run()
    assert result.exit_code == 0, result.summary
    assert all(current(h.home / "app") == first.release_id for h in fleet.hosts[1:])


# -- 4. the room lock is never skipped silently -------------------------------------------


async def test_a_relay_that_refuses_or_is_down_stops_deploy_and_rollback(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    from tests.relay.conftest import TOKENS, start_relay
    from tests.tui.cli.helpers import shipdeck

    relay = await start_relay(tmp_path)
    try:
        fleet = sshd_fleet(2)

        def with_relay(name: str, url: str, extra: str = "") -> str:
            path = write_config(tmp_path / name, fleet, sample_repo)
            path.write_text(
                path.read_text()
                + f'[relay]\nurl = "{url}"\nroom = "web"\ntoken_env = "SHIPDECK_TOKEN"\n'
                + extra
            )
            return str(path)

        up = with_relay("up.toml", relay.url)
        # nothing listens there: the deploy gives up after relay.connect_timeout
        down = with_relay("down.toml", "ws://127.0.0.1:1", "connect_timeout = 1\n")
        wrong = {"SHIPDECK_TOKEN": "not-a-token"}
        for cmd in ("deploy", "rollback"):
            for path, env in ((up, wrong), (down, {"SHIPDECK_TOKEN": TOKENS["alice"]})):
                rc, out, err = await shipdeck(cmd, "-c", path, "--headless", env=env)
                assert rc == 3, (cmd, out, err)
                lines = err.strip().splitlines()
                assert len(lines) == 1, err  # the reason, in one line
                assert "--without-relay" in lines[0]
                assert "not-a-token" not in out + err
                assert all(not (h.home / "app").exists() for h in fleet.hosts), (cmd, path)
                if path == up:
                    assert "refused the token" in lines[0], lines[0]
                else:
                    assert "ws://127.0.0.1:1" in lines[0] and "Connection" in lines[0], lines[0]

        # --without-relay goes ahead, and says so in history, revisions.log and the summary
        rc, out, err = await shipdeck(
            "deploy", "-c", up, "--headless", "--without-relay", env=wrong
        )
        assert rc == 0, out + err
        assert "relay: skipped (--without-relay)" in out
        for h in fleet.hosts:
            assert revisions(h.home / "app")[-1].endswith(" relay=skipped")
        from engine.history import History

        row = History().list(1)[0]
        assert History().get(row["id"])["summary"]["relay"] == "skipped (--without-relay)"
        rc, out, err = await shipdeck("show", row["id"])
        assert "relay     skipped (--without-relay)" in out

        # with the right token the deploy takes the room's lease and publishes there
        commit_version(sample_repo, "2.0.0")
        rc, out, err = await shipdeck(
            "deploy", "-c", up, "--headless", env={"SHIPDECK_TOKEN": TOKENS["alice"]}
        )
        assert rc == 0, out + err
        rc, out, err = await shipdeck(
            "rollback",
            "-c",
            up,
            "--headless",
            "--without-relay",
            env={"SHIPDECK_TOKEN": "nope"},
        )
        assert rc == 0, out + err
        assert all(current_version(h.home / "app") == "1.0.0" for h in fleet.hosts)
        assert " rollback " in revisions(fleet.hosts[0].home / "app")[-1]
        assert revisions(fleet.hosts[0].home / "app")[-1].endswith(" relay=skipped")
    finally:
        await relay.relay.shutdown()


async def test_the_disk_pre_check_counts_the_unpacked_size(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(2)
    small = fleet.hosts[0]
    app = small.home / "app"
    app.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(app)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        shutil.chown(app, small.user)
        # 16 MiB of zeros: a package of a few KiB that unpacks to four times the disk
        build = sample_repo / "build.sh"
        build.write_text(build.read_text() + "head -c 16777216 /dev/zero > dist/zeros\n")
        commit_version(sample_repo, "1.0.2")
        result, _, d = await run(load_config(write_config(tmp_path / "s.toml", fleet, sample_repo)))
    finally:
        subprocess.run(["umount", "-l", str(app)], check=False)
    # what is sent is a few KiB; the host keeps the tar (16 MiB) and the release (16 MiB)
    assert d.package is not None
    wires = [w for c in ("zstd", "gzip") if (w := d.package.wire(c)).is_file()]
    assert wires and all(w.stat().st_size < 1 << 20 for w in wires)
    failure = result.summary["failures"][small.spec]
    assert "not enough disk space" in failure and "needs about 32" in failure, failure
    assert current(fleet.hosts[1].home / "app") == d.release_id

"""Review findings: each test shows one bug an operator would hit.

Every test is ``xfail(strict=True)`` until the engine is fixed; when a fix lands the
test starts passing, strict xfail turns that into a failure, and the marker should be
removed. Kept fast (local fleet of 1-3 hosts, one single-host sshd).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from engine.config import SshConfig, load_config
from engine.deploy import Deployment, Rollback
from engine.localfleet import LocalFleet, commit_version
from engine.ssh import Connector, Target
from tests.helpers import current, releases, revisions

pytestmark = pytest.mark.timeout(60)


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


# -- atomicity -----------------------------------------------------------------


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


# -- connections dying under the engine ------------------------------------------


async def test_non_utf8_hook_output_does_not_kill_the_connection(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    from tests.test_deploy_sshd import write_config

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


# -- rollback ----------------------------------------------------------------------


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


# -- abort, timeouts, hangs ------------------------------------------------------------


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


class _SlowTypist:
    """An operator who takes a few seconds to type the password in the TUI modal."""

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool:
        return False

    async def ask_password(self, host: str, user: str) -> str | None:
        await asyncio.sleep(2.0)
        return "pw-review-1"


async def test_password_prompt_is_not_cut_by_connect_timeout(tmp_path, sample_repo) -> None:
    async with LocalFleet(tmp_path / "pw", 1, password="pw-review-1") as fleet:
        fleet.client_key_path.unlink()
        path = fleet.write_config(
            tmp_path / "pw.toml", sample_repo, ssh_extra={"connect_timeout": 0.5}
        )
        result = await Deployment(load_config(path), prompter=_SlowTypist()).run()
        assert result.exit_code == 0, result.summary["failures"]


async def test_ctrl_c_at_the_interactive_gate_prompt_exits(tmp_path, sample_repo) -> None:
    import pty

    async with LocalFleet(tmp_path / "g", 2) as fleet:
        path = fleet.write_config(
            tmp_path / "g.toml", sample_repo, batches=["1", "100%"], approve=True
        )
        master, slave = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tui.cli",
            "deploy",
            "-c",
            str(path),
            "--headless",
            stdin=slave,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "CI": ""},
        )
        os.close(slave)
        try:
            seen = b""
            while b"waiting for approval" not in seen:
                line = await asyncio.wait_for(proc.stdout.readline(), 20)
                assert line, seen.decode()
                seen += line
            await asyncio.sleep(0.3)  # the prompt thread is in input()
            proc.send_signal(signal.SIGINT)
            try:
                code = await asyncio.wait_for(proc.wait(), 2.5)
            except TimeoutError:
                os.write(master, b"\n")  # unblock it so the test cleans up
                await asyncio.wait_for(proc.wait(), 10)
                pytest.fail("shipdeck hung after Ctrl-C at the gate prompt until Enter was pressed")
            assert code == 3
        finally:
            os.close(master)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# -- locks -------------------------------------------------------------------------------


async def test_lock_with_unreadable_owner_is_not_taken_over(fleet1, cfg1) -> None:
    lock = app1(fleet1) / ".shipdeck.lock"
    lock.mkdir(parents=True)  # what a concurrent deployer's lock looks like right after mkdir
    result = await Deployment(cfg1()).run()
    assert result.exit_code == 3, "the deploy ran while another deploy held the lock"
    assert current(app1(fleet1)) is None


# -- waves -------------------------------------------------------------------------------


async def test_failed_canary_wave_stops_the_rollout(fleet, fleet_config) -> None:
    fleet.fail_health("host1")
    result = await Deployment(
        fleet_config(batches=["1", "100%"], health_timeout=0.5, health_interval=0.1)
    ).run()
    assert result.exit_code == 3
    for name in ("host2", "host3"):
        assert current(fleet.host(name).home / "app") is None, f"{name} was deployed"


# -- ssh ---------------------------------------------------------------------------------


async def test_jump_host_does_not_inherit_the_targets_port(tmp_path) -> None:
    connector = Connector(SshConfig(port=2222, jump="bastion.example", config=None), tmp_path)
    seen: list[Target] = []

    async def fake_open(target: Target, tunnel: object) -> object:
        seen.append(target)
        raise asyncio.CancelledError

    connector._open_checked = fake_open  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await connector._jump("bastion.example")
    assert seen[0].host == "bastion.example"
    assert seen[0].port == 22


# -- secrets -----------------------------------------------------------------------------


async def test_build_commands_do_not_see_the_ssh_password(fleet1, cfg1, monkeypatch) -> None:
    monkeypatch.setenv("SD_REVIEW_PW", "canary-review-pw-31337")
    config = cfg1(
        build_commands=['test -z "$SD_REVIEW_PW"', "sh build.sh"],
        ssh_extra={"password_env": "SD_REVIEW_PW"},
    )
    result = await Deployment(config).run()
    assert result.exit_code == 0, result.summary


# -- CLI ---------------------------------------------------------------------------------


def test_download_with_unknown_hosts_pattern_is_a_usage_error(tmp_path) -> None:
    from tui.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[project]\nname = "x"\nrepo = "/nonexistent"\n[deploy]\npath = "app"\n'
        '[hosts]\nweb = ["a.example"]\n'
    )
    assert main(["download", "-c", str(cfg), "--hosts", "nomatch", "log.txt"]) == 2

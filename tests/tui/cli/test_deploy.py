"""`shipdeck deploy` and `shipdeck rollback` as a CI pipeline or an operator runs them
(a real subprocess): headless, JSON lines, dry run, exit codes, Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys

import pytest

from engine.localfleet import commit_version
from tests.helpers import current, current_version
from tests.tui.cli.helpers import shipdeck

pytestmark = pytest.mark.timeout(90)


async def test_headless_deploy_history_show_and_rollback(fleet, fleet_config, sample_repo) -> None:
    config = fleet_config()
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    assert "OK: 3/3 hosts ok" in out
    assert "host2  activate" in out
    first = current(fleet.host("host1").home / "app")
    commit_version(sample_repo, "2.0.0")
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0
    assert current_version(fleet.host("host3").home / "app") == "2.0.0"

    code, out, _ = await shipdeck("history")
    lines = out.splitlines()
    assert lines[0].startswith("ID") and len(lines) == 3
    deploy_id = lines[1].split()[0]
    code, out, _ = await shipdeck("show", deploy_id)
    assert code == 0 and "✓ host1" in out and "status    ok (exit 0)" in out

    code, out, err = await shipdeck("rollback", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    assert all(current(h.home / "app") == first for h in fleet.hosts)


async def test_json_lines_are_events(fleet, fleet_config) -> None:
    from engine.events import event_from_json

    config = fleet_config()
    code, out, _ = await shipdeck("deploy", "-c", str(config.path), "--json")
    assert code == 0
    events = [event_from_json(line) for line in out.splitlines()]
    assert events[0].type == "plan" and events[-1].type == "finished"
    assert events[-1].summary["exit_code"] == 0


async def test_exit_code_1_when_a_host_fails_within_budget(
    fleet, fleet_config, sample_repo
) -> None:
    config = fleet_config(health_timeout=0.5)
    fleet.fail_health("host3")
    code, out, _ = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 1
    assert "✗ host3: unhealthy" in out


async def test_dry_run_prints_plan_and_changes_nothing(fleet, fleet_config) -> None:
    config = fleet_config()
    before = sorted(str(p) for h in fleet.hosts for p in h.home.rglob("*"))
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--dry-run")
    assert code == 0, out + err
    assert "├── fetch" in out and "└── release" in out and "host2  (connect, lock, upload" in out
    assert "3/3 hosts ready" in out
    after = sorted(str(p) for h in fleet.hosts for p in h.home.rglob("*"))
    assert before == after


def test_bad_config_exit_2_without_traceback(tmp_path) -> None:
    bad = tmp_path / "shipdeck.toml"
    bad.write_text(
        '[project]\nname = "x"\nrepo = "."\n[deploy]\npath = "/srv"\nbatchs = ["1"]\n[hosts]\nweb = ["a"]\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "tui.cli", "deploy", "-c", str(bad), "--headless"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        == f"shipdeck: {bad}:6: [deploy] batchs: unknown key (did you mean 'batches'?)"
    )
    assert "Traceback" not in r.stderr


async def test_ctrl_c_stops_safely_and_releases_locks(fleet, fleet_config, sample_repo) -> None:
    """Ctrl-C twice while hosts run a slow before_activate hook: exit 3, locks released,
    current untouched everywhere, remaining nodes cancelled."""
    import signal

    config = fleet_config()
    code, _, _ = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0
    first = {h.name: current(h.home / "app") for h in fleet.hosts}
    commit_version(sample_repo, "2.0.0")
    config = fleet_config(before_activate=["sleep 1.5"])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        "deploy",
        "-c",
        str(config.path),
        "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines = []
    while True:
        line = (await proc.stdout.readline()).decode()
        assert line, "deploy ended before the hook started"
        lines.append(line)
        if '"key":"release/wave-1/host1/before","status":"running"' in line:
            break
    proc.send_signal(signal.SIGINT)
    await asyncio.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):  # an abort that reaches the hook may be done
        proc.send_signal(signal.SIGINT)
    out, err = await proc.communicate()
    assert proc.returncode == 3, err.decode()
    assert "stopping at a safe point" in err.decode()
    assert '"status":"cancelled"' in out.decode()
    for h in fleet.hosts:
        assert current(h.home / "app") == first[h.name]
        assert not (h.home / "app" / ".shipdeck.lock").exists()


async def test_ctrl_c_at_the_interactive_gate_prompt_exits(tmp_path, sample_repo) -> None:
    import pty
    import signal

    from engine.localfleet import LocalFleet

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


async def test_four_eyes_without_a_relay_stops_at_the_gate_and_refuses_yes(
    fleet, fleet_config
) -> None:
    config = fleet_config(batches=["1", "100%"], approve=True, approvers=2)
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless", "--yes")
    assert code == 2
    assert "--yes cannot approve the gates: deploy.approvers = 2 (four eyes)" in err
    assert not (fleet.host("host1").home / "app" / "current").exists()
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 3, out + err
    assert "deploy.approvers = 2 (four eyes) needs 2 approvals from operators other than" in out + err
    assert "without a relay no other operator can approve" in out + err
    # the canary went out; the rest waited for approvals that could not come
    assert (fleet.host("host1").home / "app" / "current").exists()
    assert not (fleet.host("host3").home / "app" / "current").exists()

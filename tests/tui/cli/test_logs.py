"""`shipdeck logs` on real OpenSSH hosts: the last lines of every host's file,
host-tagged; --grep; a missing file; --follow across a host restart, ended by Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from tests.engine.test_deploy_sshd import write_config
from tests.tui.cli.helpers import shipdeck

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def _log(h, text: str, mode: str = "a") -> None:
    d = h.home / "app" / "shared" / "log"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "app.log", mode) as f:
        f.write(text)


async def test_last_lines_grep_and_a_missing_file(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(3)
    h1, h2, h3 = fleet.hosts
    config = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo)
    for h in (h1, h2):
        _log(h, "".join(f"{h.name} GET /{i}\n" for i in range(5)) + f"{h.name} ERROR boom\n", "w")
    code, out, err = await shipdeck("logs", "-c", str(config), "shared/log/app.log", "-n", "2")
    assert code == 1, out + err  # h3 has no such file
    for h in (h1, h2):
        assert f"{h.spec} | {h.name} GET /4" in out and f"{h.spec} | {h.name} ERROR boom" in out
        assert f"{h.name} GET /3" not in out
    assert f"logs: {h3.spec}: cannot read {h3.home}/app/shared/log/app.log" in err
    code, out, _ = await shipdeck(
        "logs", "-c", str(config), "shared/log/app.log", "--hosts", f"{h1.spec},{h2.spec}",
        "--lines", "100", "--grep", "ERR(OR)?",
    )  # fmt: skip
    assert code == 0 and sorted(out.splitlines()) == sorted(
        f"{h.spec} | {h.name} ERROR boom" for h in (h1, h2)
    )
    code, _, err = await shipdeck("logs", "-c", str(config), "x.log", "--grep", "(")
    assert code == 2 and "--grep '('" in err


async def _until(stream, wanted: str, seen: list[str]) -> None:
    while not any(wanted in s for s in seen):
        line = await asyncio.wait_for(stream.readline(), 30)
        assert line, f"output ended before {wanted!r}: {seen}"
        seen.append(line.decode())


async def test_follow_across_a_host_restart(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(2, one_process_per_host=True)
    h1, h2 = fleet.hosts
    config = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo)
    for h in fleet.hosts:
        _log(h, f"{h.name} started\n", "w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui.cli", "logs", "-c", str(config), "--follow", "shared/log/app.log",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    seen: list[str] = []
    try:
        await _until(proc.stdout, f"{h1.spec} | {h1.name} started", seen)
        await _until(proc.stdout, f"{h2.spec} | {h2.name} started", seen)
        _log(h1, f"{h1.name} request 1\n")
        await _until(proc.stdout, f"{h1.spec} | {h1.name} request 1", seen)

        fleet.stop_host(h2)  # the host goes away, and comes back
        await _until(proc.stdout, f"{h2.spec} ~ disconnected", seen)
        fleet.start_host(h2)
        await _until(proc.stdout, f"{h2.spec} ~ reconnected", seen)
        _log(h2, f"{h2.name} back\n")
        await _until(proc.stdout, f"{h2.spec} | {h2.name} back", seen)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert sum(f"{h2.name} started" in s for s in seen) == 1  # not repeated on reconnect


async def test_follow_into_head_ends_quietly(sshd_fleet, sample_repo, tmp_path) -> None:
    """`shipdeck logs -f PATH | head -1`: the next line finds no reader; exit 141."""
    fleet = sshd_fleet(1)
    (h1,) = fleet.hosts
    config = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo)
    _log(h1, "first\n", "w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tui.cli", "logs", "-c", str(config), "-f", "shared/log/app.log",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).endswith(b"| first\n")
    proc._transport.get_pipe_transport(1).close()
    # the log goes on being written, as an app's does, until shipdeck has ended
    ended = asyncio.ensure_future(proc.communicate())
    for n in range(120):
        _log(h1, f"line {n}\n")
        done, _ = await asyncio.wait({ended}, timeout=0.5)
        if done:
            break
    else:
        proc.kill()
        _, err = await ended
        raise AssertionError(f"shipdeck logs went on after its reader left: {err!r}")
    _, err = ended.result()
    assert proc.returncode == 141 and err == b""

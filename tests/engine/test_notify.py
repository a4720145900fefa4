"""[[notify]]: local commands hear of gates, ends, lock waits and freeze overrides,
the event's JSON on stdin; their failures are reported and never fail a deploy."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, load_config, parse_config
from engine.deploy import Deployment
from engine.events import GateWaiting
from tests.helpers import Recorder

pytestmark = pytest.mark.timeout(60)

#: a notify command: each call writes its stdin to a new file of the folder it is given
CATCHER = """\
import pathlib, sys, uuid
out = pathlib.Path(sys.argv[1])
data = sys.stdin.buffer.read()
(out / (uuid.uuid4().hex + ".json")).write_bytes(data)
"""


def catcher(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "catch.py"
    script.write_text(CATCHER)
    out = tmp_path / "caught"
    out.mkdir()
    return f"{sys.executable} {script} {out}", out


def caught(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.iterdir())]


def with_notify(fleet, sample_repo, tmp_path, entries: list[str], **deploy) -> Path:
    path = fleet.write_config(tmp_path / "shipdeck.toml", sample_repo, **deploy)
    path.write_text(path.read_text() + "\n" + "\n".join(entries) + "\n")
    return path


def approving(d: Deployment, rec: Recorder):
    def on(event) -> None:
        rec(event)
        if isinstance(event, GateWaiting):
            d.approve(by="carol", key=event.key)

    return on


async def test_notify_hears_the_gate_and_the_end(fleet, sample_repo, tmp_path) -> None:
    command, out = catcher(tmp_path)
    path = with_notify(
        fleet,
        sample_repo,
        tmp_path,
        ["[[notify]]", 'on = ["gate", "finished"]', f"command = {json.dumps(command)}"],
        batches=["1", "100%"],
        approve=True,
    )
    config = load_config(path)
    d = Deployment(config, operator="alice")
    rec = Recorder()
    d.subscribe(approving(d, rec))
    result = await d.run()
    assert result.exit_code == 0, result.summary
    got = {m["on"]: m for m in caught(out)}
    assert set(got) == {"gate", "finished"}
    gate = got["gate"]
    assert gate["event"]["type"] == "gate" and gate["event"]["key"] == "release/gate-1"
    assert gate["project"] == "demo" and gate["operator"] == "alice"
    assert gate["deploy_id"] == d.deploy_id
    finished = got["finished"]["event"]
    assert finished["type"] == "finished" and finished["status"] == "ok"
    assert finished["summary"]["ok"] == 3


async def test_a_failed_deploy_is_failed_not_finished(fleet, sample_repo, tmp_path) -> None:
    command, out = catcher(tmp_path)
    path = with_notify(
        fleet,
        sample_repo,
        tmp_path,
        ["[[notify]]", 'on = ["finished", "failed"]', f"command = {json.dumps(command)}"],
        health_timeout=0.5,
    )
    for h in fleet.hosts:
        fleet.fail_health(h.name)
    result = await Deployment(load_config(path), operator="alice").run()
    assert result.exit_code != 0
    [message] = caught(out)
    assert message["on"] == "failed" and message["event"]["status"] != "ok"


async def test_failing_and_hanging_commands_are_reported_not_fatal(
    fleet, sample_repo, tmp_path
) -> None:
    command, out = catcher(tmp_path)
    path = with_notify(
        fleet,
        sample_repo,
        tmp_path,
        [
            "[[notify]]",
            'on = ["finished"]',
            'command = "echo webhook down >&2; exit 3"',
            "[[notify]]",
            'on = ["finished"]',
            'command = "sleep 600"',
            "timeout = 0.5",
            "[[notify]]",
            'on = ["finished"]',
            f"command = {json.dumps(command)}",
        ],
    )
    d = Deployment(load_config(path), operator="alice")
    rec = Recorder()
    d.subscribe(rec)
    result = await d.run()
    assert result.exit_code == 0 and result.status == "ok"
    lines = [e.text for e in rec.of("log")]
    assert any("notify (finished)" in t and "failed (exit 3): webhook down" in t for t in lines)
    assert any("`sleep 600` timed out after 0.5s" in t for t in lines), lines
    assert [m["on"] for m in caught(out)] == ["finished"]  # the others did not stop it


def test_notify_config_errors_name_file_line_and_key(tmp_path) -> None:
    base = '[project]\nname = "p"\nrepo = "."\n[deploy]\npath = "app"\n[hosts]\nweb = ["a"]\n'
    with pytest.raises(ConfigError) as err:
        parse_config(base + '[[notify]]\non = ["gates"]\ncommand = "true"\n', "x.toml")
    text = str(err.value)
    assert "x.toml:9" in text and "on" in text and "'gates' is not an event" in text
    with pytest.raises(ConfigError) as err:
        parse_config(base + '[[notify]]\non = ["gate"]\n', "x.toml")
    assert "command" in str(err.value)
    config = parse_config(
        base + '[[notify]]\non = ["gate", "lock"]\ncommand = "true"\ntimeout = 2\n', "x.toml"
    )
    assert config.notify[0].on == ("gate", "lock") and config.notify[0].timeout == 2


async def test_lock_heard_once_when_another_deploy_holds_the_hosts(
    fleet, sample_repo, tmp_path
) -> None:
    command, out = catcher(tmp_path)
    path = with_notify(
        fleet,
        sample_repo,
        tmp_path,
        ["[[notify]]", 'on = ["lock"]', f"command = {json.dumps(command)}"],
        batches=["1", "100%"],
        approve=True,
        lock_wait=1.5,
    )
    config = load_config(path)
    first = Deployment(config, operator="alice")
    at_gate = asyncio.Event()
    first.subscribe(lambda e: at_gate.set() if isinstance(e, GateWaiting) else None)
    running = asyncio.ensure_future(first.run())
    await at_gate.wait()  # alice's deploy holds every host's lock at its gate
    second = Deployment(config, operator="bob")
    result = await second.run()
    assert result.exit_code == 3  # gave up after lock_wait
    first.approve(by="carol")
    assert (await running).exit_code == 0
    [message] = caught(out)  # once, however often it looked again
    assert message["on"] == "lock" and message["operator"] == "bob"
    assert message["event"]["status"] == "waiting" and message["event"]["key"].endswith("/lock")
    assert "alice" in message["event"]["detail"]

"""`shipdeck relay`, `say` and `tail`: serve a relay, post to a room, print the room.

A real relay subprocess started by the command itself, real clients; usage errors are
exit 2 with a message that says what to pass, a relay that cannot be reached is 3."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.relay.conftest import ROOT, TOKENS, InProcessRelay, start_relay, write_tokens
from tests.tui.cli.helpers import shipdeck
from tui.cli import main

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def served(tmp_path: Path):
    """`shipdeck relay --port 0` as an operator starts it; yields its ws:// URL."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tui.cli", "relay", "--port", "0",
            "--db", str(tmp_path / "relay.db"),
            "--tokens", str(write_tokens(tmp_path / "tokens.toml")),
            "--log-level", "warning",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.fullmatch(
        r"shipdeck relay listening on (ws://127\.0\.0\.1:\d+) \(db .*relay\.db, 3 operators\)\n",
        line,
    )
    assert m, f"{line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
    yield proc, m.group(1)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


async def test_say_then_tail_through_the_served_relay(served) -> None:
    proc, url = served
    code, _, err = await shipdeck(
        "say",
        "--relay",
        url,
        "--room",
        "web",
        "hello",
        "room",
        env={"SHIPDECK_TOKEN": TOKENS["alice"]},
    )
    assert code == 0, err
    code, out, err = await shipdeck(
        "tail", "--relay", url, "--room", "web", "--token", TOKENS["bob"]
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and re.match(
        r"\s+1 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d alice\s+chat\s+hello room$", lines[0]
    )
    code, out, _ = await shipdeck(
        "tail", "--relay", url, "--room", "web", "--json", "--token", TOKENS["carol"]
    )
    frame = json.loads(out)
    assert (frame["type"], frame["sender"], frame["text"], frame["offset"]) == (
        "chat",
        "alice",
        "hello room",
        1,
    )
    # SIGTERM: clients are told to reconnect, the relay exits 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_sigterm_as_soon_as_it_listens_stops_it_cleanly(served) -> None:
    """A supervisor may signal the moment the listening line appears."""
    proc, _ = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


async def test_a_relay_that_is_not_there_is_exit_3() -> None:
    code, _, err = await shipdeck(
        "say", "--relay", "ws://127.0.0.1:9", "--room", "web", "--timeout", "2", "hi",
        env={"SHIPDECK_TOKEN": TOKENS["alice"]},
    )  # fmt: skip
    assert code == 3 and err.startswith("shipdeck: say: ")


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["say", "--relay", "ws://h:1", "--room", "web", "hi"], "say: no token: pass --token or set SHIPDECK_TOKEN"),
        (["tail", "--relay", "ws://h:1", "--room", "web"], "tail: no token: pass --token or set SHIPDECK_TOKEN"),
        (["say", "--relay", "http://h:1", "--room", "web", "--token", "t", "hi"], "--relay 'http://h:1': expected ws://host:port or wss://host:port"),
        (["say", "--relay", "ws://h:1", "--room", "a room", "--token", "t", "hi"], "--room 'a room': 1-64 characters of A-Z a-z 0-9 . _ : -"),
        (["tail", "--relay", "ws://h:1", "--room", "web", "--token", "t", "--since", "-1"], "tail: --since must be >= 0"),
        (["relay", "--port", "0"], 'relay: --tokens FILE is required (TOML: [operators] alice = "token-for-alice")'),
        (["relay", "--tokens", "{tokens}", "--tls-key", "k.pem"], "relay: --tls-key needs --tls-cert"),
        (["relay", "--tokens", "{tokens}", "--retain-count", "0"], "relay: --retain-count, --retain-days and --rate must be positive"),
        (["relay", "--tokens", "{tokens}", "--redis", "localhost:6379"], "relay: --redis 'localhost:6379': expected redis://HOST:PORT/DB"),
    ],
)  # fmt: skip
def test_usage_errors_are_exit_2_and_say_what_to_pass(
    argv, said, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("SHIPDECK_TOKEN", raising=False)
    tokens = str(write_tokens(tmp_path / "tokens.toml"))
    assert main([a.replace("{tokens}", tokens) for a in argv]) == 2
    assert capsys.readouterr().err == f"shipdeck: {said}\n"


def test_a_bad_tokens_file_names_the_file(tmp_path, capsys) -> None:
    bad = tmp_path / "tokens.toml"
    bad.write_text("[operators]\nalice = 3\n")
    assert main(["relay", "--tokens", str(bad), "--db", str(tmp_path / "r.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shipdeck: relay: ") and str(bad) in err


@pytest.fixture
async def room(tmp_path: Path):
    """A relay in this process (alice, bob, carol); clients it made are closed after."""
    r = await start_relay(tmp_path)
    yield r
    for c in r.clients:
        await c.close(flush=0)
    await r.relay.shutdown()


def _cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHIPDECK_TOKEN"}
    env["PYTHONPATH"] = str(ROOT)
    if token:
        env["SHIPDECK_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_say_and_tail_exit_codes(room: InProcessRelay, tmp_path: Path) -> None:
    url = room.url
    ok, wrong, missing, badurl, badtokens = await asyncio.gather(
        asyncio.to_thread(
            _cli,
            "say",
            "--relay",
            url,
            "--room",
            "web",
            "hello",
            "from",
            "cli",
            token=TOKENS["alice"],
        ),
        asyncio.to_thread(
            _cli, "say", "--relay", url, "--room", "web", "--token", "nope-nope-nope", "x"
        ),
        asyncio.to_thread(_cli, "tail", "--relay", url, "--room", "web"),
        asyncio.to_thread(_cli, "say", "--relay", "http://x", "--room", "web", "hi", token="t"),
        asyncio.to_thread(
            _cli, "relay", "--tokens", str(tmp_path / "none.toml"), "--db", str(tmp_path / "x.db")
        ),
    )
    assert ok.returncode == 0, ok.stderr
    assert wrong.returncode == 3 and "401" in wrong.stderr and "nope-nope-nope" not in wrong.stderr
    assert missing.returncode == 2 and "SHIPDECK_TOKEN" in missing.stderr
    assert badurl.returncode == 2
    assert badtokens.returncode == 2 and "none.toml" in badtokens.stderr
    alice, _ = await room.client("alice")
    await alice.chat("second")
    tail = await asyncio.to_thread(
        _cli, "tail", "--relay", url, "--room", "web", "--token", TOKENS["bob"]
    )
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert (
        len(lines) == 2
        and "alice" in lines[0]
        and "chat" in lines[0]
        and lines[0].endswith("hello from cli")
    )
    js = await asyncio.to_thread(
        _cli, "tail", "--relay", url, "--room", "web", "--json", "--since", "1", token=TOKENS["bob"]
    )
    assert [json.loads(x)["text"] for x in js.stdout.splitlines()] == ["second"]
    refused = await asyncio.to_thread(
        _cli,
        "tail",
        "--relay",
        "ws://127.0.0.1:1",
        "--room",
        "web",
        "--timeout",
        "1",
        token="token-for-bob",
    )
    assert refused.returncode == 3


def test_add_parsers_registers_commands() -> None:
    from tui.cli.relay import add_parsers, cmd_relay, cmd_say, cmd_tail

    parser = argparse.ArgumentParser(prog="shipdeck")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "relay",
            "--host",
            "0.0.0.0",
            "--port",
            "9",
            "--db",
            "d",
            "--tokens",
            "t",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ]
    )
    assert args.func is cmd_relay and (args.host, args.port, args.tls_key) == ("0.0.0.0", 9, "k")
    args = parser.parse_args(
        ["say", "--relay", "ws://h:1", "--room", "r", "--token", "t", "hi", "there"]
    )
    assert args.func is cmd_say and args.text == ["hi", "there"]
    args = parser.parse_args(
        ["tail", "--relay", "ws://h:1", "--room", "r", "--since", "5", "--follow", "--json"]
    )
    assert args.func is cmd_tail and (args.since, args.follow, args.json) == (5, True, True)


# -- what tail prints: plain frames in, exact text out ------------------------------


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        ({"type": "chat", "text": "two\nlines"}, "two lines"),
        ({"type": "lock", "op": "acquired", "holder": {"operator": "bob", "reason": "deploy web@main"}}, "acquired by bob: deploy web@main"),
        ({"type": "lock", "op": "taken", "holder": {"operator": "carol"}, "previous": {"operator": "bob"}}, "taken by carol (from bob)"),
        ({"type": "lock", "op": "released", "previous": {"operator": "bob"}}, "released by bob"),
        ({"type": "lock", "op": "stale", "holder": {"operator": "bob", "ttl": 30}}, "lease of bob is stale (no heartbeat for 30s)"),
        ({"type": "control", "action": "approve", "key": "release/gate-1", "to": "granted"}, "approve release/gate-1 -> granted"),
        ({"type": "control", "action": "abort", "to": "granted"}, "abort -> granted"),
        ({"type": "presence", "op": "join", "operator": "bob", "who": [{"operator": "alice"}, {"operator": "bob"}]}, "join bob (here: alice, bob)"),
        ({"type": "presence", "op": "leave", "operator": "bob", "who": []}, "leave bob (here: nobody)"),
        ({"type": "error", "code": "too_big", "message": "frame over 1 MiB"}, "too_big: frame over 1 MiB"),
        ({"type": "something-new", "room": "web", "offset": 4, "x": 1}, '{"x": 1}'),
        ({"type": ["not", "a", "name"]}, "{}"),
    ],
)  # fmt: skip
def test_each_frame_type_reads_as_one_line(frame, text) -> None:
    from tui.cli.relay import describe

    assert describe(frame) == text


def test_an_event_frame_shows_its_first_three_events() -> None:
    from engine.events import LogLine, NodeStatus
    from tui.cli.relay import describe, format_line
    from tui.render import event_text

    events = [NodeStatus("d1", key=f"release/wave-1/host{i}/upload", status="ok") for i in range(4)]
    events.append(LogLine("d1", key="release/wave-1/host1/restart", text="restarted"))
    frame = {
        "type": "event",
        "events": [e.to_json() for e in events],
        "offset": 12,
        "sender": "alice",
    }
    text = describe(frame)
    assert text == "; ".join(event_text(e) for e in events[:3]) + " (+2 more)"
    assert "release/wave-1/host0/upload" in text and "host3" not in text
    line = format_line({**frame, "time": None})
    assert line == f"    12 {'-' * 19} alice        event    {text}"

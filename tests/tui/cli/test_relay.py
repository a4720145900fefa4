"""`shipdeck relay`, `say` and `tail`: serve a relay, post to a room, print the room.

A real relay subprocess started by the command itself, real clients; usage errors are
exit 2 with a message that says what to pass, a relay that cannot be reached is 3."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.relay.conftest import TOKENS, write_tokens
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

"""Bearer tokens checked before the upgrade (HTTP 401), TLS, and the CLI's exit codes."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from relay.client import AuthError, RelayClient
from relay.server import Relay, tls_context
from relay.store import SQLiteStore
from relay.tokens import TokensError, TokenTable, load_tokens
from tests.relay.conftest import ROOT, TOKENS, InProcessRelay, write_tokens

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token-123", "Basic dG9rZW4tZm9yLWFsaWNl", "Bearer "]
)
async def test_missing_or_wrong_token_is_refused_with_401(
    relay: InProcessRelay, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    with pytest.raises(InvalidStatus) as info:
        async with connect(relay.url, additional_headers=headers):
            pass
    assert info.value.response.status_code == 401
    assert info.value.response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not relay.relay.peers


async def test_client_reports_auth_error_without_retrying(relay: InProcessRelay) -> None:
    client = RelayClient(relay.url, "web", "not-a-valid-token")
    with pytest.raises(AuthError):
        await client.start(timeout=5)
    assert client.state == "closed"
    await client.close()


async def test_tokens_never_reach_the_db_or_messages(relay: InProcessRelay, tmp_path: Path) -> None:
    alice, col = await relay.client("alice")
    await alice.acquire_lock("deploy", ttl=30)
    await alice.chat("hello")
    await relay.relay._flush_state()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("relay.db*"))
    for token in TOKENS.values():
        assert token.encode() not in raw
        assert all(token not in json.dumps(f) for f in col.frames)


def test_tokens_file_validation(tmp_path: Path) -> None:
    assert load_tokens(write_tokens(tmp_path / "t.toml")).operator_for("token-for-bob") == "bob"
    bad = tmp_path / "bad.toml"
    for text, words in [
        ("[operators]\nalice = 5\n", "alice"),
        ('[operators]\nalice = "short"\n', "at least"),
        ("operators = 1\n", "[operators]"),
        ("[operators\n", "TOML"),
        ('[operators]\nrelay = "token-for-relay"\n', "reserved"),
    ]:
        bad.write_text(text)
        with pytest.raises(TokensError, match=words.replace("[", r"\[")):
            load_tokens(bad)
    with pytest.raises(TokensError, match="same token"):
        TokenTable({"a1": "token-xxxxxxxx", "b1": "token-xxxxxxxx"})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_wss_when_a_certificate_is_given(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    relay = Relay(SQLiteStore(tmp_path / "r.db"), TokenTable(TOKENS))
    await relay.start("127.0.0.1", 0, tls_context(str(cert), str(key)))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        client = RelayClient(f"wss://127.0.0.1:{relay.port}", "web", TOKENS["alice"], ssl=ctx)
        await client.start(timeout=5)
        ack = await client.chat("over TLS")
        assert ack["offset"] == 1
        await client.close()
        plain = RelayClient(f"ws://127.0.0.1:{relay.port}", "web", TOKENS["alice"], reconnect=False)
        with pytest.raises(Exception):  # noqa: B017 - a plain client cannot talk to a TLS relay
            await plain.start(timeout=3)
        await plain.close()
    finally:
        await relay.shutdown()


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


async def test_cli_say_and_tail_exit_codes(relay: InProcessRelay, tmp_path: Path) -> None:
    import asyncio

    url = relay.url
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
    alice, _ = await relay.client("alice")
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
    import argparse

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


def test_relay_never_imports_textual() -> None:
    code = "import sys, relay.server, relay.client, relay.store, relay.protocol, relay.tokens; print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui')))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

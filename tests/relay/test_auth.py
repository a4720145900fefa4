"""Bearer tokens checked before the upgrade (HTTP 401), and TLS."""

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
from relay.server import Relay
from relay.store import SQLiteStore
from relay.tls import tls_context
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

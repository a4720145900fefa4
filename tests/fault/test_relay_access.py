"""Access to the relay: no token, a wrong token, or a token in the wrong place is
refused with HTTP 401 before the websocket upgrade; the sender of everything is the
operator the token belongs to, whatever a frame claims; a TLS relay with a
self-signed certificate serves wss:// to clients that trust that certificate only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import secrets
import sqlite3
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from relay.client import AuthError, ConnectFailed, RelayClient
from tests.relay.conftest import ROOT, TOKENS, InProcessRelay, RelayProcess, start_relay

pytestmark = [pytest.mark.fault, pytest.mark.timeout(60)]


async def raw_upgrade(port: int, headers: list[str], path: str = "/") -> tuple[int, str, bytes]:
    """Send a websocket upgrade request by hand: (status, response head, what followed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        + "".join(f"{h}\r\n" for h in headers)
        + "\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status = int(head.split()[1])
            if status == 101:
                return status, head, b""
            # a refused request: try to talk websocket anyway (a masked text frame)
            writer.write(b"\x81\x85" + b"\x00" * 4 + b"hello")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            rest = b""
            with contextlib.suppress(ConnectionError):
                rest = await reader.read()  # until the relay closes the connection
            return status, head, rest
    finally:
        writer.close()


REFUSED = {
    "no header": [],
    "wrong token": ["Authorization: Bearer wrong-token-123"],
    "token of another case": ["Authorization: Bearer TOKEN-FOR-ALICE"],
    "token with a suffix": ["Authorization: Bearer token-for-alice-x"],
    "token prefix": ["Authorization: Bearer token-for-ali"],
    "token and junk": ["Authorization: Bearer token-for-alice junk"],
    "basic scheme": ["Authorization: Basic " + base64.b64encode(b"alice:token-for-alice").decode()],
    "no scheme": ["Authorization: token-for-alice"],
    "empty bearer": ["Authorization: Bearer "],
    "token as subprotocol": ["Sec-WebSocket-Protocol: token-for-alice"],
    "token as cookie": ["Cookie: token=token-for-alice"],
}


async def test_no_or_wrong_token_is_refused_with_401_before_the_upgrade(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path)
    watcher = await _watcher(relay)
    try:
        port = relay.relay.port
        results = await asyncio.gather(
            *(raw_upgrade(port, headers) for headers in REFUSED.values()),
            raw_upgrade(port, [], "/?token=token-for-alice"),
            raw_upgrade(port, [], "/?access_token=token-for-alice&room=web"),
            raw_upgrade(port, [], "/web/token-for-alice"),
        )
        names = [*REFUSED, "token in the query", "access_token in the query", "token in the path"]
        for name, (status, head, rest) in zip(names, results, strict=True):
            assert status == 401, f"{name}: {head}"
            assert 'WWW-Authenticate: Bearer realm="shipdeck-relay"' in head, name
            assert "Sec-WebSocket-Accept" not in head and "Upgrade:" not in head, name
            assert b"token-for" not in head.encode() + rest, name  # nothing echoed
            assert b"\x81" not in rest[:1], f"{name}: the relay answered a websocket frame"
        # only the watcher is connected; the room never saw the refused ones
        assert [p.operator for p in relay.relay.peers] == ["carol"]
        assert {f["operator"] for f in watcher.of("presence")} == {"carol"}
        # positive control: the right token, with the scheme in any case, is upgraded
        for scheme in ("Bearer", "bearer"):
            status, head, _ = await raw_upgrade(port, [f"Authorization: {scheme} token-for-alice"])
            assert status == 101, head
        print(f"\naccess: {len(names)} ways without a valid token header -> 401, no upgrade")
    finally:
        await _stop(relay)


async def test_repeated_authorization_header_gets_401(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path)
    try:
        status, head, _ = await raw_upgrade(
            relay.relay.port,
            ["Authorization: Bearer token-for-alice", "Authorization: Bearer wrong-token-123"],
        )
        assert status != 101  # refused either way
        assert status in (400, 401), head
    finally:
        await _stop(relay)


class Watcher(list):
    """Frames one client received; ``wait`` wakes up on each new frame."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def __call__(self, frame: dict[str, Any]) -> None:
        self.append(frame)
        self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self if f.get("type") == kind]

    async def wait(self, pred: Any, timeout: float = 5) -> None:
        async with asyncio.timeout(timeout):
            while not pred(self):
                self._changed.clear()
                await self._changed.wait()


async def _watcher(relay: InProcessRelay, room: str = "web") -> Watcher:
    frames = Watcher()
    client = RelayClient(relay.url, room, TOKENS["carol"], on_message=frames)
    relay.clients.append(client)
    await client.start(timeout=10)
    return frames


async def _stop(relay: InProcessRelay) -> None:
    for c in relay.clients:
        await c.close(flush=0)
    await relay.relay.shutdown()


class Raw:
    """A hand-driven connection: send any frame, read what comes back."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def until(self, pred: Any) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                frame = json.loads(await self.ws.recv())
                if pred(frame):
                    return frame


def _reply_to(msg_id: str) -> Any:
    return lambda f: f.get("type") in ("ack", "error") and f.get("id") == msg_id


async def test_sender_is_always_the_token_owner(tmp_path: Path) -> None:
    relay = await start_relay(tmp_path)
    watcher = await _watcher(relay)
    alice = RelayClient(relay.url, "web", TOKENS["alice"])
    relay.clients.append(alice)
    await alice.start()
    await alice.acquire_lock("deploy web@main", ttl=60)
    claim = {"sender": "alice", "operator": "alice", "from": "alice", "user": "alice"}
    try:
        headers = {"Authorization": f"Bearer {TOKENS['bob']}"}
        async with connect(relay.url, additional_headers=headers) as ws:
            bob = Raw(ws)
            await bob.send(
                {"type": "hello", "v": 1, "room": "web", "you": {"operator": "alice"}, **claim}
            )
            welcome = await bob.until(lambda f: f["type"] == "welcome")
            assert welcome["you"]["operator"] == "bob"

            # a chat claiming to be alice, reusing an id alice used: stored as bob's,
            # and it does not pass for (or suppress) alice's message with that id
            alice_ack = await alice.chat("alice speaking")
            alice_id = alice_ack["id"]
            await bob.send({"type": "chat", "v": 1, "id": alice_id, "text": "I am alice", **claim})
            ack = await bob.until(_reply_to(alice_id))
            assert ack["type"] == "ack" and ack["duplicate"] is False
            assert ack["offset"] != alice_ack["offset"]

            # control addressed by the relay, not by the frame
            await bob.send(
                {
                    "type": "control",
                    "v": 1,
                    "id": "c1",
                    "action": "abort",
                    "to": "bob",
                    "to_client": "0123456789ab",
                    **claim,
                }
            )
            assert (await bob.until(_reply_to("c1")))["type"] == "ack"

            # the lease cannot be taken, renewed or released by claiming alice's name
            for op in ("acquire", "heartbeat", "release"):
                await bob.send(
                    {
                        "type": "lock",
                        "v": 1,
                        "id": f"l-{op}",
                        "op": op,
                        **claim,
                        "holder": {"operator": "alice"},
                    }
                )
                reply = await bob.until(_reply_to(f"l-{op}"))
                assert not reply.get("granted") and not reply.get("released"), reply
            # and bob's events are refused while alice's deploy holds the lock
            event = {"type": "log", "deploy_id": "d1", "key": "k", "text": "fake"}
            await bob.send({"type": "event", "v": 1, "id": "e1", "events": [event], **claim})
            assert (await bob.until(_reply_to("e1")))["code"] == "not_lock_holder"

        await watcher.wait(lambda w: len(w.of("control")) == 1 and len(w.of("chat")) == 2)
        chats = {f["text"]: f["sender"] for f in watcher.of("chat")}
        assert chats == {"alice speaking": "alice", "I am alice": "bob"}
        control = watcher.of("control")[0]
        assert control["sender"] == "bob"
        assert (control["to"], control["to_client"]) == ("alice", alice.client)
        assert alice.holds_lock and alice.lock and alice.lock["operator"] == "alice"
        assert {f["operator"] for f in watcher.of("presence")} <= {"alice", "bob", "carol"}
        # the stored log agrees
        with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as db:
            rows = db.execute("SELECT sender, type, body FROM messages ORDER BY offset").fetchall()
        by_sender = {(s, t, json.loads(b).get("text")) for s, t, b in rows}
        assert ("bob", "chat", "I am alice") in by_sender
        assert ("bob", "control", None) in by_sender
        assert not any(
            s == "alice" and t in ("chat", "control") and x != "alice speaking"
            for s, t, x in by_sender
        )
    finally:
        await _stop(relay)


async def test_another_operator_with_the_holders_session_cannot_publish_events(
    tmp_path: Path,
) -> None:
    relay = await start_relay(tmp_path)
    try:
        session = "deploy-session-1"
        alice = RelayClient(relay.url, "web", TOKENS["alice"], session=session)
        relay.clients.append(alice)
        await alice.start()
        await alice.acquire_lock("deploy web@main", ttl=60)
        headers = {"Authorization": f"Bearer {TOKENS['bob']}"}
        async with connect(relay.url, additional_headers=headers) as ws:
            bob = Raw(ws)
            await bob.send({"type": "hello", "v": 1, "room": "web", "session": session})
            await bob.until(lambda f: f["type"] == "welcome")
            event = {"type": "log", "deploy_id": "d1", "key": "k", "text": "fake"}
            await bob.send({"type": "event", "v": 1, "id": "e1", "events": [event]})
            reply = await bob.until(_reply_to("e1"))
            assert reply.get("code") == "not_lock_holder", reply
    finally:
        await _stop(relay)


# -- TLS -------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the DNS name ``localhost`` only, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "relay-cert.pem", directory / "relay-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class TLSRelay(RelayProcess):
    def __init__(self, tmp_path: Path, cert: Path, key: Path) -> None:
        super().__init__(tmp_path)
        self.cert, self.key = cert, key
        self.log = tmp_path / "relay-stderr.log"
        self.log_level = "info"
        self.extra_args = ["--tls-cert", str(cert), "--tls-key", str(key)]
        self.scheme, self.url_host = "wss", "localhost"


def _tail(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SHIPDECK_TOKEN": TOKENS["bob"]}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "tail",
            "--relay",
            url,
            "--room",
            "web",
            "--json",
            "--timeout",
            "5",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_tls_relay_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    relay = TLSRelay(tmp_path, cert, key)
    try:
        url = await asyncio.to_thread(relay.start)
        trusted = ssl.create_default_context(cafile=str(cert))

        alice = RelayClient(url, "web", TOKENS["alice"], ssl=trusted)
        await alice.start(timeout=10)
        ack = await alice.chat("over TLS")
        assert ack["offset"] == 1 and alice.operator == "alice"
        await alice.close()

        # a client that does not trust the certificate, one that connects by an
        # address the certificate does not name, and a plain-text client: refused
        failures: dict[str, str] = {}
        for name, target, context in [
            ("system CAs only", url, ssl.create_default_context()),
            ("address not in the certificate", f"wss://127.0.0.1:{relay.port}", trusted),
            ("plain ws://", f"ws://localhost:{relay.port}", None),
        ]:
            client = RelayClient(target, "web", TOKENS["alice"], ssl=context, reconnect=False)
            with pytest.raises(ConnectFailed):
                await client.start(timeout=10)
            failures[name] = client.last_error or ""
            await client.close()
        assert "CERTIFICATE_VERIFY_FAILED" in failures["system CAs only"]
        assert "mismatch" in failures["address not in the certificate"]
        # over TLS too, a wrong token is refused before the upgrade
        wrong = RelayClient(url, "web", "wrong-token-123", ssl=trusted)
        with pytest.raises(AuthError):
            await wrong.start(timeout=10)
        await wrong.close()

        # the CLI with --ca reads the room; without it, it cannot connect (exit 3)
        ok, untrusted = await asyncio.gather(
            asyncio.to_thread(_tail, url, "--ca", str(cert)), asyncio.to_thread(_tail, url)
        )
        assert ok.returncode == 0, ok.stderr
        assert [json.loads(line)["text"] for line in ok.stdout.splitlines()] == ["over TLS"]
        assert untrusted.returncode == 3, untrusted.stderr
        print(f"\ntls: trusted client ok; refused: {failures}")
        assert await asyncio.to_thread(relay.terminate) == 0
        log = relay.log.read_text()
        assert "Traceback" not in log
        assert not any(t in log for t in TOKENS.values())
    finally:
        relay.stop()


async def test_wss_client_without_an_explicit_context_uses_the_default_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    relay = TLSRelay(tmp_path, cert, key)
    try:
        url = await asyncio.to_thread(relay.start)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the default context trusts it
        client = RelayClient(url, "web", TOKENS["alice"], reconnect=False)
        try:
            await client.start(timeout=2)  # milliseconds when it works
            assert client.connected
        finally:
            await client.close(flush=0)
    finally:
        relay.stop()

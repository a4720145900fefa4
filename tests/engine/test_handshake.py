"""What a failed handshake says, and by which class (engine/handshake.py), the
handshake caps, and the asyncssh conditions only its text tells apart
(engine/handshake.py ``keepalive_lost``, engine/identities.py ``needs_passphrase``)."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from engine.errors import AuthFailed, SSHError
from engine.handshake import Handshakes, connect_error, keepalive_lost
from engine.identities import needs_passphrase
from engine.sshconfig import Target

pytestmark = pytest.mark.timeout(30)

WEB = Target("web", "10.0.0.5", 2201, "deploy", (), None)


def test_a_refused_login_is_auth_failed_and_says_who() -> None:
    err = connect_error(asyncssh.PermissionDenied("Permission denied"), WEB, 10)
    assert type(err) is AuthFailed
    assert str(err) == "authentication failed for deploy@10.0.0.5:2201: Permission denied"


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (TimeoutError(), "timed out connecting to 10.0.0.5:2201 after 7.5s"),
        (asyncssh.ProtocolError("bad packet"), "10.0.0.5:2201 disconnected: bad packet"),
        (ConnectionRefusedError(111, "refused"), "connection refused by 10.0.0.5:2201"),
        (OSError(113, "No route to host"), "cannot reach 10.0.0.5:2201: No route to host"),
        (ValueError("bad key"), "10.0.0.5:2201: bad key"),
    ],
)
def test_other_failures_are_ssh_errors_that_say_what_happened(exc, text) -> None:
    err = connect_error(exc, WEB, 7.5)
    assert type(err) is SSHError
    assert str(err) == text


async def test_handshakes_are_capped_per_endpoint_and_over_the_fleet() -> None:
    caps = Handshakes(max_startups=2, max_handshakes=3)
    release = asyncio.Event()

    async def one(endpoint: tuple[str, ...]) -> None:
        async with caps.slot(endpoint):
            await release.wait()

    tasks = [asyncio.ensure_future(one(("a",))) for _ in range(3)]
    tasks += [asyncio.ensure_future(one(("b",))) for _ in range(3)]
    while sum(caps.in_flight.values()) < 3:
        await asyncio.sleep(0)
    assert caps.in_flight[("a",)] <= 2 and caps.in_flight.get(("b",), 0) <= 2
    release.set()
    await asyncio.gather(*tasks)
    assert caps.peak_global == 3
    assert caps.peak_in_flight[("a",)] == 2 and caps.peak_in_flight[("b",)] <= 2
    assert caps.in_flight == {("a",): 0, ("b",): 0}


def test_a_keepalive_timeout_is_told_from_another_lost_connection() -> None:
    assert keepalive_lost(asyncssh.ConnectionLost("Server not responding to keepalive"))
    assert not keepalive_lost(asyncssh.ConnectionLost("Connection lost"))
    assert not keepalive_lost(OSError("keepalive"))


def test_an_encrypted_key_without_passphrase_is_told_from_a_broken_key(tmp_path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "enc").write_bytes(key.export_private_key(passphrase="pw"))
    (tmp_path / "bad").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    with pytest.raises(asyncssh.KeyImportError) as enc:
        asyncssh.read_private_key(str(tmp_path / "enc"))
    with pytest.raises(asyncssh.KeyImportError) as bad:
        asyncssh.read_private_key(str(tmp_path / "bad"))
    assert needs_passphrase(enc.value)
    assert not needs_passphrase(bad.value)

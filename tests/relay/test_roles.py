"""Relay roles: an observer reads and chats; its lock, control and event frames are
refused by the relay with ``forbidden`` and the room is unchanged. Old tokens files
(``name = "token"``) make everyone an operator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.events import NodeStatus
from relay.client import RelayClient
from relay.errors import RelayError
from relay.server import Limits, Relay
from relay.store import SQLiteStore
from relay.tokens import TokensError, load_tokens
from tests.relay.conftest import Collector

pytestmark = pytest.mark.timeout(30)

TOKENS_FILE = """\
[operators]
alice = "token-for-alice"
bob = { token = "token-for-bob", role = "observer" }
carol = { token = "token-for-carol", role = "admin" }
"""
TOKENS = {"alice": "token-for-alice", "bob": "token-for-bob", "carol": "token-for-carol"}


class RolesRelay:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.clients: list[RelayClient] = []

    async def client(self, operator: str, room: str = "web") -> tuple[RelayClient, Collector]:
        col = Collector()
        client = RelayClient(
            f"ws://127.0.0.1:{self.relay.port}", room, TOKENS[operator], on_message=col
        )
        self.clients.append(client)
        await client.start(timeout=10)
        return client, col


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RolesRelay]:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS_FILE)
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), load_tokens(path), Limits())
    await relay.start("127.0.0.1", 0)
    r = RolesRelay(relay)
    yield r
    for c in r.clients:
        await c.close(flush=0)
    await relay.shutdown()


def test_old_tokens_file_makes_everyone_an_operator(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[operators]\nalice = "token-for-alice"\n')
    table = load_tokens(path)
    assert table.operator_for("token-for-alice") == "alice"
    assert table.role_of("alice") == "operator"


def test_tokens_file_roles_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(TOKENS_FILE)
    table = load_tokens(path)
    assert [table.role_of(n) for n in ("alice", "bob", "carol")] == [
        "operator",
        "observer",
        "admin",
    ]
    assert table.operator_for("token-for-bob") == "bob"
    path.write_text('[operators]\nbob = { token = "token-for-bob", role = "boss" }\n')
    with pytest.raises(TokensError, match=r"tokens.toml: \[operators\] bob: role must be one of"):
        load_tokens(path)
    path.write_text('[operators]\nbob = { token = "token-for-bob", rank = "x" }\n')
    with pytest.raises(TokensError, match="unknown key 'rank'"):
        load_tokens(path)
    path.write_text('[operators]\nbob = { role = "observer" }\n')
    with pytest.raises(TokensError, match="bob: the token must be a string"):
        load_tokens(path)


async def test_welcome_and_presence_show_roles(relay: RolesRelay) -> None:
    alice, acol = await relay.client("alice")
    bob, _ = await relay.client("bob")
    assert alice.role == "operator" and bob.role == "observer"
    joined = await acol.wait(
        lambda c: [f for f in c.of("presence") if f["operator"] == "bob" and f["op"] == "join"]
    )
    assert joined[0]["role"] == "observer"
    roles = {w["operator"]: w["role"] for w in joined[0]["who"]}
    assert roles == {"alice": "operator", "bob": "observer"}


async def test_spoofing_observer_gets_errors_and_the_room_is_unchanged(
    relay: RolesRelay,
) -> None:
    alice, acol = await relay.client("alice")
    bob, bcol = await relay.client("bob")
    # an observer cannot take the lock
    with pytest.raises(RelayError) as exc:
        await bob.acquire_lock("mine now", ttl=30)
    assert exc.value.code == "forbidden"
    assert "observer" in str(exc.value)
    # nor abort or approve the operator's deploy
    await alice.acquire_lock("deploy", ttl=30)
    for action in ("abort", "approve"):
        with pytest.raises(RelayError) as exc:
            await bob.control(action)
        assert exc.value.code == "forbidden"
    # nor publish events into the live tree
    with pytest.raises(RelayError) as exc:
        await bob.publish_event(NodeStatus("d", key="fetch", status="failed"))
    assert exc.value.code == "forbidden"
    # nor release the holder's lease
    with pytest.raises(RelayError) as exc:
        await bob.release_lock()
    assert exc.value.code == "forbidden"
    # but it can chat, and the room holds only alice's lock and that chat
    await bob.chat("looks good")
    await acol.wait(lambda c: "looks good" in c.chats())
    stored = [(f["type"], f["sender"]) for f in acol.stored()]
    assert stored == [("lock", "alice"), ("chat", "bob")]
    late, _ = await relay.client("carol")
    assert late.lock is not None and late.lock["operator"] == "alice"
    assert late.snapshot is not None and late.snapshot.plan() is None


async def test_admin_and_operator_control_the_deploy(relay: RolesRelay) -> None:
    alice, _ = await relay.client("alice")
    carol, _ = await relay.client("carol")
    await alice.acquire_lock("deploy", ttl=30)
    ack = await carol.control("abort")
    assert isinstance(ack["offset"], int)
    assert await alice.release_lock() is True
    lease = await carol.acquire_lock("admin deploy", ttl=30)
    assert lease["operator"] == "carol"


async def test_only_an_admin_breaks_another_operators_lease(relay: RolesRelay) -> None:
    alice, _ = await relay.client("alice")
    bob, _ = await relay.client("bob")
    carol, ccol = await relay.client("carol")
    await alice.acquire_lock("deploy", ttl=30)
    for who in (alice, bob):
        with pytest.raises(RelayError) as exc:
            await who.release_lock(force=True)
        assert exc.value.code == "forbidden"
    assert await carol.release_lock(force=True) is True
    broken = await ccol.wait(lambda c: [f for f in c.of("lock") if f["op"] == "broken"])
    assert broken[0]["sender"] == "carol" and broken[0]["previous"]["operator"] == "alice"
    assert broken[0]["holder"] is None
    late, _ = await relay.client("bob")
    assert late.lock is None
    assert await carol.release_lock(force=True) is False  # nothing left to break

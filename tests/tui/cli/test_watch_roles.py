"""``shipdeck watch`` offers only the keys the relay role allows: an observer's
footer has no Abort or Approve; an operator's has both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.server import Limits, Relay
from relay.store import SQLiteStore
from relay.tokens import load_tokens
from tui.cli.watch import limit_to_role, relay_identity

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    path = tmp_path / "tokens.toml"
    path.write_text(
        '[operators]\nalice = "token-for-alice"\n'
        'bob = { token = "token-for-bob", role = "observer" }\n'
    )
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), load_tokens(path), Limits())
    await relay.start("127.0.0.1", 0)
    yield f"ws://127.0.0.1:{relay.port}"
    await relay.shutdown()


async def _footer_keys(role: str) -> set[str]:
    from tui.app import ShipdeckApp

    app = ShipdeckApp(None, operator="x", watch="web")
    limit_to_role(app, role)
    async with app.run_test() as pilot:
        await pilot.pause()
        return {
            b.binding.action.removeprefix("app.")
            for b in app.screen.active_bindings.values()
            if b.enabled and b.binding.show
        }


async def test_observer_is_offered_neither_abort_nor_approve(url: str) -> None:
    assert await relay_identity(url, "web", "token-for-bob") == ("bob", "observer")
    assert await relay_identity(url, "web", "token-for-alice") == ("alice", "operator")
    observer = await _footer_keys("observer")
    operator = await _footer_keys("operator")
    assert "abort" not in observer and "approve" not in observer
    assert {"abort", "approve"} <= operator
    assert "help" in observer

"""[aliases] in the command palette: listed with their command lines and runnable
(exec in the TUI with its confirmation, status as its screen); the config's own
aliases through the real backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.command import CommandPalette

from engine.config import load_config
from tests.tui.conftest import make_app, screen_lines, until
from tui.app import ShipdeckApp
from tui.backend import EngineBackend
from tui.screens.modals import ConfirmScreen
from tui.screens.status import StatusScreen

pytestmark = pytest.mark.timeout(30)

SIZE = (120, 40)
ALIASES = {
    "uptimes": "exec --hosts web[12] -- uptime",
    "versions": "status --hosts web*",
}


def text(app) -> str:
    return "\n".join(screen_lines(app))


async def palette(pilot, app, query: str) -> None:
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*query)


async def test_aliases_are_listed_and_an_exec_alias_runs_on_its_hosts() -> None:
    app = make_app(hosts=4, aliases=ALIASES)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await palette(pilot, app, "alias")
        await until(pilot, lambda: "alias uptimes" in text(app) and "alias versions" in text(app))
        assert "shipdeck exec --hosts 'web[12]' -- uptime" in text(app)
        await pilot.press("ctrl+a", "ctrl+k", *"uptimes")  # the query is the alias's name
        await until(pilot, lambda: "alias uptimes" in text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await until(pilot, lambda: "Run on 2 host(s)?" in text(app))
        assert "web1, web2" in text(app)
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit == 0, what="the exec's end")
        assert {h.label for h in app.model.plan.hosts()} == {"web1", "web2"}
        assert app.backend.execs[-1].command == "uptime"


async def test_a_status_alias_opens_the_status_screen() -> None:
    app = make_app(hosts=3, aliases=ALIASES, drifted={"web2"})
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await palette(pilot, app, "versions")
        await until(pilot, lambda: "alias versions" in text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, StatusScreen))
        await until(pilot, lambda: "1 drifted: web2" in text(app))


async def test_the_configs_aliases_through_the_engine_backend(fleet, sample_repo, tmp_path) -> None:
    path = Path(fleet.write_config(tmp_path / "shipdeck.toml", repo=sample_repo))
    with path.open("a") as fh:
        fh.write('\n[aliases]\nwho = "exec -- whoami"\nhist = "history"\n')
    backend = EngineBackend(load_config(path), operator="tester", history_path=tmp_path / "h.db")
    assert backend.aliases() == {"who": ["exec", "--", "whoami"], "hist": ["history"]}
    app = ShipdeckApp(backend, operator="tester", cursor_blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await palette(pilot, app, "alias hist")
        await until(pilot, lambda: "shipdeck history" in text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await until(pilot, lambda: "Run alias hist?" in text(app))
        await pilot.press("enter")
        await until(
            pilot, lambda: any("alias hist: exit" in n.message for n in app._notifications),
            timeout=20, what="the alias's command",
        )  # fmt: skip
        assert any(line.step == "hist" for line in app.fleet_lines.shown)


def test_what_an_alias_does_in_the_tui() -> None:
    from tui.aliasrun import alias_action

    logs = alias_action("applog", ["logs", "-f", "--grep", "ERR", "shared/log/app.log"])
    assert (logs.kind, logs.path, logs.follow, logs.grep) == (
        "logs", "shared/log/app.log", True, "ERR",
    )  # fmt: skip
    ex = alias_action("console", ["exec", "--hosts", "web1", "--cwd", "shared", "--", "ls", "-l"])
    assert (ex.kind, ex.hosts, ex.cwd, ex.command) == ("exec", "web1", "shared", "ls -l")
    assert alias_action("h", ["history"]).kind == "command"
    assert alias_action("bad", ["exec", "--parallel", "x"]).error

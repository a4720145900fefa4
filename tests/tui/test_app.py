"""Pilot tests: every key path of the main screen, driven by the scripted runner
(tests/tui/fake.py: a frozen clock and exact timing); what the real engine over the
local fleet can show is in test_real_deploy.py."""

from __future__ import annotations

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable, Input, Log, OptionList, RichLog

from engine.plan import HOST_STEPS
from tests.tui.conftest import label, make_app, screen_lines, until
from tui import actions
from tui.app import MainScreen, ShipdeckApp
from tui.chat import LocalEcho
from tui.screens.help import HelpScreen
from tui.screens.history import HistoryDetailScreen, HistoryScreen
from tui.screens.modals import (
    ConfirmScreen,
    FilterScreen,
    HostKeyScreen,
    PasswordScreen,
    RollbackScreen,
)
from tui.widgets.stage_tree import StageTree

pytestmark = pytest.mark.timeout(30)

SIZE = (120, 40)


async def deploy(pilot, app) -> None:
    await pilot.press("d")
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
    await pilot.press("enter")


async def test_plan_is_drawn_at_once_hosts_collapsed() -> None:
    app = make_app(hosts=8)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        tree = app.main.query_one(StageTree)
        keys = [tree.get_node_at_line(i).data for i in range(tree.last_line + 1)]
        assert keys[:4] == ["fetch", "build", "package", "release"]
        assert "release/wave-1/web1" in keys
        assert "release/wave-1/web1/connect" not in keys  # host subtrees start collapsed
        assert label(app, "release").startswith("○ 0/8 ✓  release")
        assert "0/8 ✓" in label(app, "release")


async def test_deploy_confirm_cancelled_with_escape() -> None:
    app = make_app(hosts=3)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main)
        assert not app.deploying and app.backend.runs[0].events == []


async def test_upload_percent_and_running_glyph(clock) -> None:
    app = make_app(clock, hosts=2, gates=(1,))
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: app.model.waiting_gate is not None)
        from engine.events import Progress

        app.feed(
            Progress(app.model.deploy_id, key="release/wave-2/web2/upload", done=50, total=200)
        )
        app.model.plan["release/wave-2/web2/upload"].status = "running"
        assert "25%" in label(app, "release/wave-2/web2/upload")
        assert label(app, "release/gate-1").startswith("⏸ gate after wave 1")


async def test_hostname_is_never_markup() -> None:
    app = make_app(hosts=["web[bold]1", "[red]x"])
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        tree = app.main.query_one(StageTree)
        plain = [str(tree.get_node_at_line(i).label.plain) for i in range(tree.last_line + 1)]
        assert "○ web[bold]1" in plain
        assert "○ [red]x" in plain


async def test_log_of_step_host_and_stage() -> None:
    app = make_app(hosts=3)
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: app.last_exit is not None)
        tree = app.main.query_one(StageTree)
        log = app.main.query_one("#log", Log)
        tree.select_key("release/wave-2/web2")
        await until(pilot, lambda: app.log_pane.key == "release/wave-2/web2")
        text = "\n".join(log.lines)
        assert "connect · connected to web2:22" in text and "health   {" in text
        tree.select_key("release/wave-2/web2/upload")
        await until(pilot, lambda: app.log_pane.key == "release/wave-2/web2/upload")
        assert [line for line in log.lines] == ["· sent 14540 bytes"]
        tree.select_key("build")
        await until(pilot, lambda: app.log_pane.key == "build")
        assert "  building VERSION 1.4.2" in log.lines


async def test_log_follows_new_lines_in_batches(clock) -> None:
    app = make_app(clock, hosts=1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        tree = app.main.query_one(StageTree)
        tree.select_key("fetch")
        await until(pilot, lambda: app.log_pane.key == "fetch")
        from engine.events import LogLine

        for i in range(3000):
            app.feed(LogLine(app.model.deploy_id, key="fetch", text=f"line {i}"))
        app.flush()
        log = app.main.query_one("#log", Log)
        await until(pilot, lambda: log.lines and log.lines[-1] == "  line 2999")
        assert log.line_count <= 2000  # bounded


async def test_abort_confirmed_stops_the_deploy(clock) -> None:
    app = make_app(clock, hosts=6, delay=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(
            pilot,
            lambda: app.model.latest_running is not None and "release/" in app.model.latest_running,
        )
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None, timeout=10)
        assert app.last_exit == 3
        assert app.model.finished.status == "stopped"
        assert any(n.status == "cancelled" for n in app.model.plan)
        chat = app.main.query_one("#chat-log", RichLog)
        assert any("aborted" in "".join(seg.text for seg in line) for line in chat.lines)


async def test_abort_when_idle_is_a_notice() -> None:
    app = make_app(hosts=2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("a")
        await until(
            pilot, lambda: any("nothing is running" in n.message for n in app._notifications)
        )
        assert not isinstance(app.screen, ConfirmScreen)


async def test_rollback_choose_release_and_confirm() -> None:
    """The picker lists what the hosts have, newest first: the current release
    marked, the default (on every host) highlighted, a release cleanup removed from
    some hosts greyed with how many have it, and it cannot be chosen."""
    app = make_app(hosts=3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RollbackScreen))
        options = app.screen.query_one(OptionList)
        await until(pilot, lambda: options.option_count == 3, what="releases read")
        ids = [options.get_option_at_index(i).id for i in range(3)]
        assert ids == [
            "20261123T101500Z-1b7e0d4",
            "20261121T120000Z-77d0e3b",
            "20261120T090000Z-a41c2f9",
        ]
        current, default, partial = (options.get_option_at_index(i) for i in range(3))
        assert "◀ current" in current.prompt.plain and current.disabled
        assert "deployed 2026-11-21 12:00 UTC by bob" in default.prompt.plain
        assert "77d0e3b  Release 2" in default.prompt.plain
        assert partial.disabled and "on 1/3 hosts only" in partial.prompt.plain
        assert options.highlighted == 1
        await pilot.press("down")  # the greyed one cannot be reached
        assert options.highlighted == 1
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.model.meta["kind"] == "rollback"
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None)
        assert app.last_exit == 0
        assert app.model.meta["release_id"] == "20261121T120000Z-77d0e3b"
        assert "fetch" not in app.model.plan  # a rollback ships nothing
        assert label(app, "release").startswith("✓ 3/3 ✓  release")


async def test_filter_by_name_and_by_status() -> None:
    app = make_app(hosts=8, failing={"web5"})
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: app.last_exit is not None)
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, FilterScreen))
        await pilot.press(*"web[23]", "enter")
        await until(pilot, lambda: app.filter_text == "web[23]" and app.screen is app.main)
        tree = app.main.query_one(StageTree)
        hosts = {k for k in tree.nodes_by_key if app.model.plan[k].kind == "host"}
        assert {app.model.plan[k].label for k in hosts} == {"web2", "web3"}
        await pilot.press("slash")
        await until(pilot, lambda: isinstance(app.screen, FilterScreen))
        await pilot.press("ctrl+a", "ctrl+k", *"failed", "enter")
        await until(pilot, lambda: app.filter_text == "failed" and app.screen is app.main)
        hosts = {k for k in tree.nodes_by_key if app.model.plan[k].kind == "host"}
        assert {app.model.plan[k].label for k in hosts} == {"web5"}
        assert "filter “failed”: 1 hosts" in str(app.main.query_one("#header").render())
        await app.run_action("clear_filter")
        await until(
            pilot,
            lambda: len([k for k in tree.nodes_by_key if app.model.plan[k].kind == "host"]) == 8,
        )


async def test_follow_selects_running_host(clock) -> None:
    app = make_app(clock, hosts=2, gates=(1,))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("f")
        await until(pilot, lambda: app.following)
        await deploy(pilot, app)
        await until(pilot, lambda: app.model.waiting_gate is not None)
        await until(
            pilot, lambda: app.main.query_one(StageTree).selected_key == "release/wave-1/web1"
        )


async def test_history_list_and_detail_with_transcript() -> None:
    app = make_app(hosts=3, failing={"web2"})
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: app.last_exit is not None)
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HistoryScreen))
        table = app.screen.query_one(DataTable)
        assert table.row_count == 1
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, HistoryDetailScreen))
        hosts = app.screen.query_one("#detail-hosts", DataTable)
        rows = [[str(c) for c in hosts.get_row_at(i)] for i in range(hosts.row_count)]
        assert ["web2", "✗ failed"] == rows[1][:2]
        log = app.screen.query_one("#transcript", Log)
        await until(pilot, lambda: log.line_count > 10)
        assert any("finished: failed" in line for line in log.lines)
        await pilot.press("escape", "escape")
        await until(pilot, lambda: app.screen is app.main)


@pytest.mark.parametrize("answer,ok", [("y", True), ("n", False)])
async def test_host_key_modal(answer: str, ok: bool) -> None:
    app = make_app(hosts=1, ask_host_key="web1")
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: isinstance(app.screen, HostKeyScreen))
        body = " ".join(str(w.render()) for w in app.screen.query(".dialog-body"))
        assert "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8" in body
        await pilot.press(answer)
        await until(pilot, lambda: app.last_exit is not None)
        assert app.last_exit == (0 if ok else 1)
        if not ok:
            assert "host key rejected" in app.model.plan["release/wave-1/web1"].detail


async def test_password_modal_is_masked_and_answers() -> None:
    app = make_app(hosts=1, ask_password="web1")
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen))
        field = app.screen.query_one(Input)
        assert field.password is True
        await pilot.press(*"s3cret")
        await until(pilot, lambda: field.value == "s3cret")
        assert "s3cret" not in str(field.render())
        await pilot.press("enter")
        await until(pilot, lambda: app.last_exit is not None)
        assert app.last_exit == 0


async def test_password_modal_escape_fails_that_host() -> None:
    app = make_app(hosts=1, ask_password="web1")
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen))
        await pilot.press("escape")
        await until(pilot, lambda: app.last_exit is not None)
        assert app.last_exit == 1


async def test_quit_while_running_aborts_then_exits(clock) -> None:
    app = make_app(clock, hosts=4, gates=(1,))
    async with app.run_test(size=SIZE) as pilot:
        await deploy(pilot, app)
        await until(pilot, lambda: app.model.waiting_gate is not None)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("enter")
        await until(pilot, lambda: app.return_code is not None or not app.is_running, timeout=10)
    assert app.return_value == 3
    assert app.backend.runs[0].events[-1].status == "stopped"


async def test_quit_when_idle_returns_zero() -> None:
    app = make_app(hosts=1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("q")
        await until(pilot, lambda: app.return_code is not None or not app.is_running)
    assert app.return_value == 0


def footer_actions(app) -> list[str]:
    from textual.widgets._footer import FooterKey

    return [k.action.removeprefix("app.") for k in app.main.query(FooterKey)]


async def test_help_and_palette_list_every_action() -> None:
    """One list feeds the footer, the palette and the help screen."""
    app = make_app(hosts=1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = "\n".join(screen_lines(app))
        for _keys, what in actions.key_table(actions.OPERATOR):
            assert what[:40] in text, what
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.main and footer_actions(app))
        shown = footer_actions(app)
        expected = [a.id for a in actions.for_mode("operator") if a.footer is not None]
        assert [a for a in shown if a != "command_palette"] == expected
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"approve gate")
        await until(pilot, lambda: "Approve" in "\n".join(screen_lines(app)))
        await pilot.press("enter")
        await until(
            pilot, lambda: any("no gate is waiting" in n.message for n in app._notifications)
        )
    from tui.commands import DeckCommands

    titles = [t for t, _, _ in DeckCommands._commands(type("P", (), {"app": app})())]
    assert titles == [a.title for a in actions.for_mode("operator")]
    assert all(b.id and b.description and b.tooltip for b in MainScreen.BINDINGS)


@pytest.mark.parametrize("mode", ["operator", "spectator"])
async def test_every_key_in_help_works_in_its_mode(mode) -> None:
    """Each key the help screen lists does its action here: none answers "cannot …
    from here"; a spectator's footer offers only what a spectator can do."""
    if mode == "spectator":
        app = ShipdeckApp(None, chat=LocalEcho("bob"), operator="bob", watch="demo")
    else:
        app = make_app(hosts=3, chat=LocalEcho("alice"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted and footer_actions(app))
        shown = set(footer_actions(app)) - {"command_palette"}
        assert shown == {a.id for a in actions.for_mode(mode) if a.footer is not None}
        if mode == "spectator":
            assert not shown & {"deploy", "rollback", "history"}
        ran: list[str] = []
        # every notice, counted as it is made (toasts time out: on a busy machine an
        # older one may leave while a key's own arrives)
        notices: list[str] = []
        notify = app.notify

        def counted(message, *args, **kw):  # type: ignore[no-untyped-def]
            notices.append(str(message))
            return notify(message, *args, **kw)

        app.notify = counted  # type: ignore[method-assign]

        for action in actions.for_mode(mode):
            if not action.keys or action.id in ("quit_safely", "focus_tree"):
                continue
            key = action.keys.split(",")[0]
            before = len(notices)
            screen = app.screen
            await pilot.press(key)
            await until(
                pilot,
                lambda screen=screen, before=before: (
                    app.screen is not screen
                    or len(notices) > before
                    or app.focused is not app.tree
                ),
                what=f"{key} does something",
            )
            for note in notices[before:]:
                assert "cannot" not in note and "from here" not in note, (key, note)
            ran.append(action.id)
            while app.screen is not app.main:
                await pilot.press("escape")
                await pilot.pause()
            app.tree.focus()
            await until(pilot, lambda: app.focused is app.tree)
        assert ran
        for hidden in {"deploy", "rollback", "history"} - {a.id for a in actions.for_mode(mode)}:
            key = actions.by_id(hidden).keys
            seen = {id(n) for n in app._notifications}  # older toasts may time out meanwhile
            await pilot.press(key)
            await pilot.pause()
            new = [n.message for n in app._notifications if id(n) not in seen]
            assert app.screen is app.main and not new, (hidden, new)


async def test_arrows_open_and_close_hosts() -> None:
    app = make_app(hosts=3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        tree = app.tree
        tree.select_key("release/wave-1/web1")
        await until(pilot, lambda: tree.selected_key == "release/wave-1/web1")
        host = tree.nodes_by_key["release/wave-1/web1"]
        assert not host.is_expanded
        await pilot.press("right")
        await until(pilot, lambda: host.is_expanded, what="→ opens")
        await pilot.press("l")  # open already: to its first step
        await until(pilot, lambda: tree.selected_key == "release/wave-1/web1/connect")
        await pilot.press("left")  # from a step: close the host, back on it
        await until(pilot, lambda: tree.selected_key == "release/wave-1/web1")
        assert not host.is_expanded
        await pilot.press("l")
        await until(pilot, lambda: host.is_expanded)
        await pilot.press("left")  # on an open host: close it
        await until(pilot, lambda: not host.is_expanded)
        assert tree.selected_key == "release/wave-1/web1"
        await pilot.press("left")  # closed: to the parent wave
        await until(pilot, lambda: tree.selected_key == "release/wave-1")


async def test_chat_without_relay_and_with_backend() -> None:
    app = make_app(hosts=1)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        chat = app.main.query_one("#chat-log", RichLog)
        await until(pilot, lambda: chat.lines)
        assert "relay not configured" in "".join(s.text for s in chat.lines[0])
        await pilot.press("c")
        await until(
            pilot, lambda: any("relay not configured" in n.message for n in app._notifications)
        )

    app = make_app(hosts=1, chat=LocalEcho("alice"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.focused, Input))
        await pilot.press(*"hello [b]bob", "enter")
        chat = app.main.query_one("#chat-log", RichLog)
        await until(
            pilot,
            lambda: any(
                "alice: hello [b]bob" in "".join(s.text for s in line) for line in chat.lines
            ),
        )
        await until(
            pilot,
            lambda: (
                "relay ◉ connected · 1 here: alice" in str(app.main.query_one("#header").render())
            ),
        )
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.focused, StageTree))


async def test_tab_cycles_panes_and_jk_move() -> None:
    app = make_app(hosts=3, chat=LocalEcho("alice"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        tree = app.main.query_one(StageTree)
        assert app.focused is tree
        await pilot.press("j", "j")
        assert tree.cursor_line == 2
        await pilot.press("k")
        assert tree.cursor_line == 1
        seen = []
        for _ in range(3):
            await pilot.press("tab")
            seen.append(app.focused.id)
        assert seen == ["log", "chat-input", "tree"]


async def test_small_terminal_says_what_it_needs() -> None:
    app = make_app(hosts=3)
    async with app.run_test(size=(50, 12)) as pilot:
        await until(pilot, lambda: app.painted and app.main.query_one("#too-small").display)
        msg = app.main.query_one("#too-small")
        assert msg.display and "at least 60×16" in str(msg.render())
        assert not app.main.query_one("#main").display


async def test_80x24_keeps_every_pane() -> None:
    app = make_app(hosts=8)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.painted, what="first paint")
        for sel in ("#tree", "#log-pane", "#chat-pane", "#header", "#log-title"):
            await until(pilot, lambda sel=sel: app.main.query(sel), what=sel)
            widget = app.main.query_one(sel)
            await until(pilot, lambda w=widget: w.size.height >= 1, what=f"{sel} laid out")
            assert widget.display and widget.size.width > 20, sel
        for sel in ("#tree", "#log-pane", "#chat-pane", "#header"):
            assert app.main.query_one(sel).size.height >= 2, sel
        assert app.main.has_class("-narrow") or app.screen.has_class("-narrow")


async def test_80x24_failed_host_footer_counts_reason_help_and_toasts() -> None:
    """At 80x24: the footer keeps ? and q, the ✗ count comes first and is never cut,
    the selected host's whole failure reason is in the log pane header, the help
    dialog scrolls to its last line, and a notification does not cover the chat input."""
    app = make_app(hosts=8, failing={"web3"}, chat=LocalEcho("alice"))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await until(pilot, lambda: screen_lines(app)[-1].startswith("d Deploy"), what="footer")
        assert "? Help" in screen_lines(app)[-1] and "q Quit" in screen_lines(app)[-1]
        await deploy(pilot, app)
        await until(pilot, lambda: app.last_exit is not None)
        app.tree.select_key("release/wave-2/web3")
        await until(pilot, lambda: app.log_pane.key == "release/wave-2/web3")
        await until(pilot, lambda: "✗ unhealthy" in "\n".join(screen_lines(app)), what="reason")
        lines = screen_lines(app)
        wave = next(line for line in lines if "wave 2" in line)
        assert "✗ 1 ✗ 3/4 ✓  wave 2" in wave, wave
        reason = app.model.plan["release/wave-2/web3"].detail
        assert "rolled back to" in reason and len(reason) > 60
        title = app.log_pane.query_one("#log-title")
        box = title.content_region
        shown = " ".join(lines[y][box.x : box.right].strip() for y in range(box.y, box.bottom))
        assert reason in shown, shown
        app.notify("a long notification " * 4, timeout=30)
        inp = app.main.query_one("#chat-input")
        await until(
            pilot,
            lambda: (
                app.screen.query("Toast")
                and all(t.region.height for t in app.screen.query("Toast"))
            ),
            what="toast shown",
        )
        for toast in app.screen.query("Toast"):
            assert not toast.region.overlaps(inp.region), (toast.region, inp.region)
            assert not toast.region.overlaps(title.region), (toast.region, title.region)
        assert inp.region.height == 1
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        body = app.screen.query_one("#help-body")
        await until(pilot, lambda: body.size.height > 0)
        last = actions.NAVIGATION[-1][1]
        if last not in "\n".join(screen_lines(app)):
            assert body.max_scroll_y > 0  # it scrolls
            await pilot.press("end")
            await until(pilot, lambda: last in "\n".join(screen_lines(app)), what="scrolled")
        assert body.region.bottom <= 24


async def test_worker_failure_is_a_notice_not_a_traceback() -> None:
    app = make_app(hosts=1)

    async def boom():
        raise RuntimeError("ssh agent went away")

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        app.runner.run = boom
        await deploy(pilot, app)
        await until(
            pilot, lambda: any("ssh agent went away" in n.message for n in app._notifications)
        )
        assert app.is_running and app.last_exit == 3


async def test_plan_error_is_a_notice() -> None:
    app = make_app(hosts=1)

    def broken(prompter):
        raise ValueError("shipdeck.toml: [hosts] is empty")

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        app.backend.new_deploy = broken
        app.runner_used = True
        await pilot.press("d")
        await until(pilot, lambda: any("[hosts] is empty" in n.message for n in app._notifications))


async def test_many_hosts_create_steps_lazily() -> None:
    app = make_app(hosts=1200)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        tree = app.main.query_one(StageTree)
        assert tree.lazy
        host = tree.nodes_by_key["release/wave-2/web2"]
        assert len(host.children) == 0 and host.allow_expand
        tree.select_key("release/wave-2/web2/health")
        await until(pilot, lambda: tree.selected_key == "release/wave-2/web2/health")
        assert len(host.children) == len(HOST_STEPS)
        assert tree.selected_key == "release/wave-2/web2/health"


async def test_80x24_long_header_keeps_the_state_line() -> None:
    """A long identity line (release id, relay, who is here) is cut with an ellipsis,
    never wrapped over the state line."""
    from tui.widgets.header import DeckHeader

    app = make_app(hosts=8)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.painted)
        app.relay_status = "connected"
        app.presence = ["alice", "bob-the-release-manager", "carol"]
        app.model.plan.meta.update(release_id="20261124T204924Z-96c054f", sha="96c054f" * 5)
        app.watch_room = "demo"
        app.update_header()
        header = app.main.query_one(DeckHeader)
        await until(
            pilot,
            lambda: "bob-the" in header.render_line(0).text or "…" in header.render_line(0).text,
        )
        lines = [header.render_line(y).text for y in range(2)]
        assert lines[0].rstrip().endswith("…"), lines
        assert "ready" in lines[1], lines


@pytest.mark.parametrize("watch", [False, True], ids=["deploying", "watch"])
@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
async def test_chat_input_shows_what_is_typed(size, watch) -> None:
    """What the operator types is on screen before Enter (the input is one visible
    line, not a bordered box squeezed to its borders), in the deploying TUI and in
    the spectator view of ``shipdeck watch``."""
    if watch:
        app = ShipdeckApp(
            None, chat=LocalEcho("bob"), operator="bob", watch="demo", cursor_blink=False
        )
    else:
        app = make_app(hosts=8, chat=LocalEcho("alice"))
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.painted, what="first paint")
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.focused, Input), what="chat focused")
        await pilot.press(*"deploying web now")
        inp = app.main.query_one("#chat-input", Input)
        await until(pilot, lambda: inp.value == "deploying web now", what="typed")
        await until(pilot, lambda: "deploying web now" in "".join(screen_lines(app)), what="drawn")
        row = inp.region.y
        assert inp.region.height >= 1
        assert "deploying web now" in screen_lines(app)[row], screen_lines(app)[row - 1 : row + 2]


async def test_footer_while_typing_offers_only_the_way_back() -> None:
    """In the chat input letters are text: the footer shows esc, not d/a/r/…"""
    app = make_app(hosts=2, chat=LocalEcho("alice"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted and footer_actions(app))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.focused, Input))
        await until(pilot, lambda: footer_actions(app) == ["focus_tree", "command_palette"])
        await pilot.press("escape")
        await until(pilot, lambda: "deploy" in footer_actions(app))


async def test_passphrase_modal_names_the_key_and_answers() -> None:
    """An encrypted key not in the agent: the engine asks the TUI once for its
    passphrase; the modal names the key file and masks what is typed."""
    import asyncio

    from tui.app import TuiPrompter

    app = make_app(hosts=1)
    async with app.run_test(size=SIZE) as pilot:
        asked = asyncio.ensure_future(TuiPrompter(app).ask_passphrase("/home/op/.ssh/id_deploy"))
        await until(pilot, lambda: isinstance(app.screen, PasswordScreen))
        body = " ".join(str(w.render()) for w in app.screen.query(".dialog-body"))
        assert "Passphrase for the key /home/op/.ssh/id_deploy" in body
        field = app.screen.query_one(Input)
        assert field.password is True
        await pilot.press(*"pass phrase")
        await until(pilot, lambda: field.value == "pass phrase")
        await pilot.press("enter")
        await until(pilot, lambda: asked.done())
        assert asked.result() == "pass phrase"

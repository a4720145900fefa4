"""The merged fleet log (L): every host's lines in arrival order, tagged; filter,
search, marks, timestamps, following the tail. Driven by the scripted runner; the
bounds are checked on the plain ring (tui/fleetlines.py)."""

from __future__ import annotations

import pytest

from engine.events import LogLine
from tests.tui.conftest import make_app, screen_lines, until
from tui.fleetlines import FleetLines

pytestmark = pytest.mark.timeout(30)

SIZE = (120, 40)


def fleet_rows(app) -> list[str]:
    """The fleet pane's rows as seen (its title, its lines)."""
    region = app.fleet_pane.region
    rows = screen_lines(app)[region.y : region.bottom]
    return [row[region.x : region.right] for row in rows]


def pane_text(app) -> str:
    return "\n".join(fleet_rows(app))


async def deployed(pilot, app) -> None:
    await pilot.press("d")
    await until(pilot, lambda: app.screen is not app.main, what="confirm")
    await pilot.press("enter")
    await until(pilot, lambda: app.last_exit is not None, what="the deploy's end")
    app.flush()


async def test_merged_log_tags_every_host_in_arrival_order() -> None:
    app = make_app(hosts=4)
    async with app.run_test(size=SIZE) as pilot:
        await deployed(pilot, app)
        await pilot.press("L")
        await until(pilot, lambda: app.fleet_shown and app.focused is app.fleet_pane.log)
        shown = list(app.fleet_lines.shown)
        assert {line.host for line in shown if line.host} == {"web1", "web2", "web3", "web4"}
        assert [line.seq for line in shown] == sorted(line.seq for line in shown)
        text = pane_text(app)
        assert "fleet · deploy" in text and "following" in text
        # the tail is on screen: the last line's host and step tag it
        last = shown[-1]
        assert any(last.host in row and last.step in row and last.text[:20] in row
                   for row in fleet_rows(app))  # fmt: skip
        await pilot.press("L")
        await until(pilot, lambda: not app.fleet_shown and app.focused is app.tree)
        assert any("log · " in r for r in screen_lines(app))


async def test_filter_failed_alone_and_by_host_glob() -> None:
    app = make_app(hosts=6, failing={"web4"})
    async with app.run_test(size=SIZE) as pilot:
        await deployed(pilot, app)
        await pilot.press("L")
        await until(pilot, lambda: app.fleet_shown)
        await pilot.press("slash", *"failed", "enter")
        await until(pilot, lambda: app.fleet_lines.filter.text == "failed")
        hosts = {line.host for line in app.fleet_lines.shown}
        assert hosts == {"web4"}
        rows = [r for r in fleet_rows(app)[2:-1] if r.strip("│ ")]
        assert rows and all("web4" in r for r in rows)
        assert "filter failed" in pane_text(app)
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"web[12]", "enter")
        await until(pilot, lambda: app.fleet_lines.filter.text == "web[12]")
        assert {line.host for line in app.fleet_lines.shown} == {"web1", "web2"}
        await pilot.press("slash", "ctrl+a", "ctrl+k", "enter")
        await until(pilot, lambda: not app.fleet_lines.filtered)
        assert len({line.host for line in app.fleet_lines.shown if line.host}) == 6


async def test_a_failed_filter_grows_as_hosts_fail(clock) -> None:
    app = make_app(clock, hosts=3)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("L")
        await pilot.press("slash", *"failed", "enter")
        await until(pilot, lambda: app.fleet_lines.filter.text == "failed")
        await deployed(pilot, app)
        assert not app.fleet_lines.shown  # nobody failed
        from engine.events import NodeStatus

        host = app.model.plan.hosts()[1]
        app.feed(NodeStatus(app.model.deploy_id, key=host.key, status="failed", at=clock()))
        app.feed(LogLine(app.model.deploy_id, key=f"{host.key}/health", text="HTTP 502"))
        await until(pilot, lambda: any("HTTP 502" in r for r in fleet_rows(app)), what="502")
        assert {line.host for line in app.fleet_lines.shown} == {host.label}


async def test_search_highlights_and_moves_next_and_previous(clock) -> None:
    app = make_app(clock, hosts=2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        for i in range(200):
            key = app.model.plan.hosts()[i % 2].key
            word = "needle" if i in (20, 90, 150) else "hay"
            app.feed(LogLine(app.model.deploy_id, key=key, text=f"{word} {i}"))
        app.flush()
        await pilot.press("L")
        await pilot.press("s", *"needle", "enter")
        await until(pilot, lambda: app.fleet_lines.search == "needle")
        log = app.fleet_pane.log
        # the newest match first, scrolled into view; the view stops following
        await until(pilot, lambda: any("needle 150" in r for r in fleet_rows(app)))
        assert not log.follow and "/needle/ 3" in pane_text(app)
        await pilot.press("n")
        await until(pilot, lambda: any("needle 20" in r for r in fleet_rows(app)))
        await pilot.press("n")
        await until(pilot, lambda: any("needle 90" in r for r in fleet_rows(app)))
        await pilot.press("N")
        await until(pilot, lambda: any("needle 20" in r for r in fleet_rows(app)))
        # highlighted: the match's cells carry the search style
        row = next(i for i, r in enumerate(screen_lines(app)) if "needle 20" in r)
        strips = app.screen._compositor.render_strips()
        styled = [seg for seg in strips[row] if seg.text.startswith("needle")]
        assert styled and styled[0].style.bgcolor is not None
        await pilot.press("end")
        await until(pilot, lambda: log.follow and "following" in pane_text(app))


async def test_mark_inserts_a_timestamped_divider_and_times_toggle(clock) -> None:
    import time as _time

    app = make_app(clock, hosts=2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        host = app.model.plan.hosts()[0].key
        app.feed(LogLine(app.model.deploy_id, key=host, text="before the mark", at=clock()))
        app.flush()
        await pilot.press("L")
        await pilot.press("m")
        stamp = _time.strftime("%H:%M:%S", _time.localtime(clock()))
        await until(pilot, lambda: any(f"mark {stamp}" in r for r in fleet_rows(app)))
        app.feed(LogLine(app.model.deploy_id, key=host, text="after the mark", at=clock()))
        app.flush()
        await until(pilot, lambda: any("after the mark" in r for r in fleet_rows(app)))
        rows = fleet_rows(app)
        order = [i for i, r in enumerate(rows) if "before the mark" in r or f"mark {stamp}" in r
                 or "after the mark" in r]  # fmt: skip
        assert len(order) == 3 and order == sorted(order)
        # a filter keeps the marks
        await pilot.press("slash", *"nohost", "enter")
        await until(pilot, lambda: app.fleet_lines.filter.text == "nohost")
        assert any(f"mark {stamp}" in r for r in fleet_rows(app))
        await pilot.press("slash", "ctrl+a", "ctrl+k", "enter")
        await until(pilot, lambda: not app.fleet_lines.filtered)
        await pilot.press("t")
        await until(pilot, lambda: any(r.strip().startswith(stamp) or f"│ {stamp}" in r
                                       or f" {stamp} web1" in r for r in fleet_rows(app)))  # fmt: skip


async def test_follows_the_tail_unless_scrolled_up(clock) -> None:
    app = make_app(clock, hosts=2)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.painted)
        await pilot.press("L")
        host = app.model.plan.hosts()[0].key
        for i in range(300):
            app.feed(LogLine(app.model.deploy_id, key=host, text=f"line {i}"))
        app.flush()
        await until(pilot, lambda: any("line 299" in r for r in fleet_rows(app)))
        await pilot.press("pageup", "pageup")
        log = app.fleet_pane.log
        await until(pilot, lambda: not log.follow and "paused" in pane_text(app))
        top = log.scroll_y
        for i in range(300, 320):
            app.feed(LogLine(app.model.deploy_id, key=host, text=f"line {i}"))
        app.flush()
        await until(pilot, lambda: len(app.fleet_lines.shown) == 320)
        await pilot.pause()
        assert log.scroll_y == top and not any("line 319" in r for r in fleet_rows(app))
        await pilot.press("end")
        await until(pilot, lambda: any("line 319" in r for r in fleet_rows(app)))
        for i in range(320, 330):
            app.feed(LogLine(app.model.deploy_id, key=host, text=f"line {i}"))
        app.flush()
        await until(pilot, lambda: any("line 329" in r for r in fleet_rows(app)))


def test_ring_is_bounded_in_lines_and_bytes_at_3000_hosts() -> None:
    ring = FleetLines(max_lines=5000, max_bytes=256 * 1024, line_chars=200)
    for i in range(60_000):
        ring.add(f"web{i % 3000:04d}", "restart", "stdout", "x" * (10 + i % 500), float(i))
    assert len(ring.lines) <= 5000 and ring.size <= 256 * 1024
    assert all(len(line.text) <= 200 for line in ring.lines)
    assert ring.lines[-1].seq == 60_000  # the newest kept
    newest = ring.lines[-1].host
    ring.set_filter(newest)
    assert {line.host for line in ring.shown} == {newest}

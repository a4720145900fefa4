"""History as an operator reads it: `shipdeck show` by deploy id, release id or a unique
prefix of either; the transcript view in words, never a raw Python dict."""

from __future__ import annotations

import os
import re

import pytest

from engine.deploy import Deployment, Rollback
from engine.history import AmbiguousId, History
from engine.localfleet import commit_version
from tests.tui.cli.helpers import shipdeck
from tui.render import transcript_lines

pytestmark = pytest.mark.timeout(90)

RAW = re.compile(r"\{'|\{\"|': |\[\{")  # what a printed dict or list of dicts looks like


def _unique_prefix(key: str, others: list[str]) -> str:
    """A proper prefix of ``key`` that starts none of ``others`` (ids made in the same
    second share their time stamp; the random part decides how short it can be)."""
    for n in range(len(key) - 3, len(key)):
        if not any(o.startswith(key[:n]) for o in others):
            return key[:n]
    raise AssertionError(f"no proper prefix of {key} is unique among {others}")


@pytest.fixture
async def two_deploys_and_a_rollback(fleet, fleet_config, sample_repo):
    config = fleet_config(health_timeout=0.5)
    first = Deployment(config)
    assert (await first.run()).exit_code == 0
    commit_version(sample_repo, "2.0.0")
    fleet.fail_health("host3", "2.0.0")  # only the new version is unhealthy there
    second = Deployment(config)
    assert (await second.run()).exit_code == 1
    back = Rollback(config, to=first.release_id)
    assert (await back.run()).exit_code == 0
    return first, second, back


async def test_show_by_id_release_id_prefix_and_transcript(two_deploys_and_a_rollback) -> None:
    first, second, back = two_deploys_and_a_rollback
    others = [second.deploy_id, second.release_id, back.deploy_id]
    for key in (
        first.deploy_id,
        first.release_id,  # the rollback to it names it too: the deploy that made it wins
        _unique_prefix(first.deploy_id, others),
        _unique_prefix(first.release_id, others),
    ):
        code, out, err = await shipdeck("show", key)
        assert code == 0, (key, out, err)
        assert out.splitlines()[0] == f"deploy {first.deploy_id}", key
        assert f"release   {first.release_id}" in out
    code, out, _ = await shipdeck("show", second.release_id)
    assert code == 0
    assert out.splitlines()[0] == f"deploy {second.deploy_id}"
    assert re.search(r"✗ host3 +failed +unhealthy", out), out
    code, out, _ = await shipdeck("show", back.deploy_id)
    assert code == 0 and out.splitlines()[0] == f"rollback {back.deploy_id}"

    # a prefix of several: exit 2 and the candidates, newest first
    prefix = os.path.commonprefix([first.deploy_id, second.deploy_id, back.deploy_id])
    assert prefix  # at least the century
    code, out, err = await shipdeck("show", prefix)
    assert code == 2
    assert out == ""
    assert f"show: {prefix!r} matches 3 deploys" in err
    for run in (first, second, back):
        assert run.deploy_id in err
    assert "Traceback" not in err
    with pytest.raises(AmbiguousId) as exc:
        History().find(prefix)
    assert [c["id"] for c in exc.value.candidates] == [
        back.deploy_id,
        second.deploy_id,
        first.deploy_id,
    ]

    # nothing of that name
    code, out, err = await shipdeck("show", "19990101")
    assert code == 2 and out == ""
    assert "show: no deploy or release '19990101'" in err

    # --transcript: every event as text
    code, out, err = await shipdeck("show", second.release_id, "--transcript")
    assert code == 0, err
    lines = out.splitlines()
    assert not [line for line in lines if RAW.search(line)]
    assert any("finished: failed — 2/3 hosts ok, 1 failed" in line for line in lines)
    assert any(line.startswith("  ✗ host3: unhealthy") for line in lines)
    assert any(re.search(r"✓ release/wave-1/host1/activate ok", line) for line in lines)


async def test_transcript_reads_as_text_here_and_in_the_tui(two_deploys_and_a_rollback) -> None:
    """The renderer's words for a transcript, and the TUI's history detail screen
    showing the same (Pilot reads its log)."""
    from textual.app import App
    from textual.widgets import Log

    from tests.tui.conftest import until
    from tui.screens.history import HistoryDetailScreen

    _, second, _ = two_deploys_and_a_rollback
    path = History().transcript(second.deploy_id)
    lines = [line for raw in path.read_text().splitlines() for line in transcript_lines(raw)]
    raw_looking = [line for line in lines if RAW.search(line)]
    assert not raw_looking, raw_looking
    finished = next(i for i, line in enumerate(lines) if " finished: " in line)
    assert re.search(
        r" finished: failed — 2/3 hosts ok, 1 failed in \d+\.\ds \(exit 1\)$", lines[finished]
    ), lines[finished]
    assert lines[finished + 1].startswith("  ✗ host3: unhealthy")
    plan = next(line for line in lines if " plan: " in line)
    assert "plan: deploy demo@main to 3 host(s) by tester" in plan

    class Viewer(App[None]):
        def on_mount(self) -> None:
            self.push_screen(HistoryDetailScreen(History(), second.deploy_id))

    app = Viewer()
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, HistoryDetailScreen))
        log = app.screen.query_one("#transcript", Log)
        await until(pilot, lambda: any(" finished: " in line for line in log.lines))
        text = list(log.lines)
    assert not [line for line in text if RAW.search(line)]
    assert any("finished: failed — 2/3 hosts ok, 1 failed" in line for line in text)
    assert any(line.startswith("  ✗ host3: unhealthy") for line in text)

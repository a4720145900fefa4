"""What's going out, on real git history: the commits between what each host runs
and the target, the files with lines added and removed, grouping by commit, the
no-op warning, bounds ("and N more"), and the card's wire form through the reducer."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import git as gitmod
from engine.events import ChangesOutgoing, event_from_json
from engine.localfleet import _git, commit_version, make_sample_repo
from engine.outgoing import (
    AHEAD,
    BEHIND,
    DIVERGED,
    NONE,
    SAME,
    UNKNOWN,
    UNREAD,
    Limits,
    Outgoing,
    Running,
    compute,
    fit_card,
    release_sha,
)
from engine.plan import build_plan
from engine.state import Bounds, RunState
from tui.render import outgoing_lines

pytestmark = pytest.mark.timeout(60)


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--author", "Ada Lovelace <ada@example.com>", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, list[str]]:
    """A repo with four commits: v1, v2 (VERSION), a new file, a change to app.sh."""
    repo = make_sample_repo(tmp_path / "repo")
    shas = [_git(repo, "rev-parse", "HEAD")]
    shas.append(commit_version(repo, "1.1.0", "Bump to 1.1.0"))
    shas.append(commit_file(repo, "docs/notes.txt", "one\ntwo\nthree\n", "Add release notes"))
    app = (repo / "app.sh").read_text()
    shas.append(commit_file(repo, "app.sh", app + "# tuned\n", "Tune the app"))
    return repo, shas


def test_release_ids_carry_their_short_sha() -> None:
    assert release_sha("20261124T153500Z-3f2a9c1") == "3f2a9c1"
    assert release_sha("") == release_sha("custom") == release_sha("a-not-hex") == ""


def test_commits_and_files_between_what_a_host_runs_and_the_target(history) -> None:
    repo, (v1, v2, notes, tune) = history
    card = compute(repo, "main", [Running.of_release("web1", f"20261124T153500Z-{v1[:7]}")])
    assert card.target == tune and card.subject == "Tune the app" and not card.noop
    (g,) = card.groups
    assert (g.state, g.base, g.hosts, g.host_count) == (AHEAD, v1, ["web1"], 1)
    assert [c.sha for c in g.commits] == [tune, notes, v2]  # newest first
    assert [c.subject for c in g.commits] == ["Tune the app", "Add release notes", "Bump to 1.1.0"]
    assert g.commits[0].author == "Ada Lovelace" and g.commits[0].date[:4].isdigit()
    files = {f.path: (f.added, f.removed) for f in g.files}
    assert files == {"VERSION": (1, 1), "docs/notes.txt": (3, 0), "app.sh": (1, 0)}
    assert (g.files_total, g.added, g.removed, g.commits_total) == (3, 5, 1, 3)


def test_hosts_on_different_commits_are_grouped(history) -> None:
    repo, (v1, v2, notes, tune) = history
    running = [
        Running("web1", "r1", v1),
        Running("web2", "r2", v2[:7]),  # a short sha groups with the full one
        Running("web3", "r2", v2),
        Running("web4", "r4", tune),
        Running("web5"),  # no release yet
        Running("web6", error="connection refused"),
        Running("web7", "r7", "0123456789abcdef0123"),  # not in the mirror
    ]
    card = compute(repo, tune, running)
    by_state = {g.state: g for g in card.groups}
    assert [g.host_count for g in card.groups][0] == 2  # the most hosts first
    assert by_state[AHEAD].hosts in (["web2", "web3"], ["web1"])
    ahead = [g for g in card.groups if g.state == AHEAD]
    assert {tuple(g.hosts): g.commits_total for g in ahead} == {("web2", "web3"): 2, ("web1",): 3}
    assert by_state[SAME].hosts == ["web4"] and card.groups[-1].state == SAME
    assert by_state[NONE].hosts == ["web5"] and by_state[NONE].commits_total == 4
    assert by_state[UNREAD].note == "connection refused"
    assert "not in the git mirror" in by_state[UNKNOWN].note
    assert card.hosts == 7 and not card.noop


def test_no_op_when_every_host_already_runs_the_target(history) -> None:
    repo, shas = history
    tune = shas[-1]
    running = [Running.of_release(f"web{i}", f"20261124T15350{i}Z-{tune[:7]}") for i in range(3)]
    card = compute(repo, "main", running)
    assert card.noop and [g.state for g in card.groups] == [SAME]
    lines = outgoing_lines(card.to_json())
    assert lines[1] == f"⚠ no-op: all 3 hosts already run {tune[:7]}; nothing new goes out"
    # one host not on it: not a no-op, and the card says which
    card = compute(repo, "main", [*running, Running("web9", "r", shas[0])])
    assert not card.noop and not any("no-op" in line for line in outgoing_lines(card))
    # a host that could not be read is not known to run it
    assert not compute(repo, "main", [*running, Running("web9", error="timeout")]).noop


def test_an_older_target_takes_commits_back_and_diverged_history_shows_both(history) -> None:
    repo, (v1, v2, notes, tune) = history
    card = compute(repo, v2, [Running("web1", "r", tune)])
    (g,) = card.groups
    assert g.state == BEHIND and g.commits_total == 0 and g.back_total == 2
    assert [c.subject for c in g.back] == ["Tune the app", "Add release notes"]
    assert {f.path: (f.added, f.removed) for f in g.files}["docs/notes.txt"] == (0, 3)
    _git(repo, "checkout", "-q", "-b", "hotfix", v2)
    fix = commit_file(repo, "fix.txt", "x\n", "Hotfix")
    (g,) = compute(repo, fix, [Running("web1", "r", tune)]).groups
    assert (g.state, g.commits_total, g.back_total) == (DIVERGED, 1, 2)
    assert any(
        "taken back" in line
        for line in outgoing_lines(compute(repo, fix, [Running("w", "r", tune)]))
    )


def test_lists_are_bounded_and_say_how_many_more(history) -> None:
    repo, shas = history
    for i in range(30):
        commit_file(repo, f"many/f{i}.txt", f"{i}\n", f"change {i}")
    limits = Limits(commits=5, files=4, groups=2, host_names=3)
    running = [Running(f"web{i}", "r", shas[0]) for i in range(10)]
    running += [Running("odd1", "r", shas[1]), Running("odd2", "r", shas[2])]
    card = compute(repo, "main", running, limits)
    first = card.groups[0]
    assert len(first.commits) == 5 and first.commits_total == 33
    assert len(first.files) == 4 and first.files_total == 33
    assert first.hosts == ["web0", "web1", "web2"] and first.host_count == 10
    assert (len(card.groups), card.more_groups, card.more_hosts) == (2, 1, 1)
    lines = outgoing_lines(card)
    assert "   web0, web1, web2, … +7" in lines
    assert "   … and 28 more commits" in lines and "   … and 29 more files" in lines
    assert lines[-1] == "── … and 1 more group (1 host) on other commits"


def test_a_target_the_mirror_lacks_is_a_card_that_says_so(history, tmp_path: Path) -> None:
    repo, _ = history
    card = compute(repo, "f" * 40, [Running("web1", "r", "")])
    assert card.error and not card.noop
    assert "cannot tell what goes out" in outgoing_lines(card)[1]
    assert "no git mirror" in compute(tmp_path / "nothing", "main", []).error


async def test_computed_from_the_deploys_own_mirror(history) -> None:
    repo, (v1, *_, tune) = history
    mirror, sha, _ = await gitmod.fetch(str(repo), "main")
    card = compute(mirror, sha, [Running("web1", "r", v1[:7])])
    assert card.groups[0].commits_total == 3 and card.target == tune


def test_the_card_travels_as_one_event_kept_by_the_reducer(history) -> None:
    repo, (v1, *_) = history
    card = compute(repo, "main", [Running("web1", "r", v1)])
    event = ChangesOutgoing("d1", key="release", changes=card.to_json(), at=1.0)
    again = event_from_json(event.dumps())
    assert again == event
    plan = build_plan("d1", [["web1"]], meta={"project": "web"})
    state = RunState(plan)
    state.apply(again)
    assert Outgoing.from_json(state.outgoing["release"]).to_json() == card.to_json()
    # a late joiner's snapshot carries it
    back = RunState.from_json(state.to_json())
    assert back.outgoing == state.outgoing
    # a new plan (another deploy) starts without it
    state.apply(build_plan("d2", [["web1"]]).to_event())
    assert state.outgoing == {}


def test_a_huge_card_is_cut_to_the_snapshot_budget_keeping_its_totals(history) -> None:
    repo, (v1, *_) = history
    card = compute(repo, "main", [Running("web1", "r", v1)]).to_json()
    group = card["groups"][0]
    group["files"] = [{"path": "x" * 150 + str(i), "added": 1, "removed": 0} for i in range(400)]
    group["files_total"] = 400
    small = fit_card(card, 8 * 1024)
    assert len(str(small)) < 12 * 1024
    assert small["groups"][0]["files_total"] == 400 and len(small["groups"][0]["files"]) < 400
    state = RunState(bounds=Bounds(outgoing_bytes=8 * 1024))
    state.apply(build_plan("d1", [["web1"]]).to_event())
    state.apply(ChangesOutgoing("d1", key="release", changes=card))
    assert state.outgoing["release"]["groups"][0]["files_total"] == 400
    assert "and" in outgoing_lines(state.outgoing["release"])[-1]

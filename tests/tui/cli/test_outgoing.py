"""What goes out, as ``shipdeck deploy --dry-run`` and ``--headless`` print it (text
and JSON), on the local fleet and real git history."""

from __future__ import annotations

import json

import pytest

from engine.events import event_from_json
from engine.localfleet import _git, commit_version
from tests.tui.cli.helpers import shipdeck

pytestmark = pytest.mark.timeout(120)


def commit_notes(repo, text: str, message: str) -> str:
    (repo / "NOTES").write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--author", "Grace Hopper <grace@example.com>", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


async def test_dry_run_shows_the_commits_and_files_going_out(
    fleet, fleet_config, sample_repo
) -> None:
    config = fleet_config()
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    v2 = commit_version(sample_repo, "2.0.0", "Bump to 2.0.0")
    notes = commit_notes(sample_repo, "a\nb\n", "Write the release notes")

    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--dry-run")
    assert code == 0, out + err
    card = out[out.index("what goes out") :].splitlines()
    assert card[0] == f"what goes out to 3 hosts: {notes[:7]} Write the release notes"
    assert card[1].startswith("── 3 hosts on ") and card[1].endswith(
        ": 2 commits going out, 2 files +3 −1"
    )
    assert card[2] == "   host1, host2, host3"
    assert card[3].startswith(f"   {notes[:7]}  20") and card[3].endswith(
        "  Grace Hopper  Write the release notes"
    )
    assert card[4].startswith(f"   {v2[:7]}  ") and card[4].endswith("  Bump to 2.0.0")
    assert card[5:7] == ["   +2 −0  NOTES", "   +1 −1  VERSION"]
    assert "no-op" not in out

    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--dry-run", "--json")
    assert code == 0, out + err
    data = json.loads(out[out.index("{") :])
    (group,) = data["outgoing"]["groups"]
    assert data["outgoing"]["target"] == notes and not data["outgoing"]["noop"]
    assert [c["subject"] for c in group["commits"]] == ["Write the release notes", "Bump to 2.0.0"]
    assert group["files"] == [
        {"path": "NOTES", "added": 2, "removed": 0},
        {"path": "VERSION", "added": 1, "removed": 1},
    ]


async def test_headless_prints_the_card_and_warns_of_a_no_op(
    fleet, fleet_config, sample_repo
) -> None:
    config = fleet_config()
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    assert "── 3 hosts with no release yet: the first release, 1 commit" in out
    sha = commit_notes(sample_repo, "x\n", "Note one thing")

    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    lines = out.splitlines()
    head = lines.index(f"what goes out to 3 hosts: {sha[:7]} Note one thing")
    assert lines[head + 1].endswith(": 1 commit going out, 1 file +1 −0")
    assert lines[head + 3].endswith("Grace Hopper  Note one thing")
    # the card comes before any host changes
    assert head < min(i for i, line in enumerate(lines) if "activate" in line)

    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    assert f"⚠ no-op: all 3 hosts already run {sha[:7]}; nothing new goes out" in out

    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--json")
    assert code == 0, out + err
    events = [event_from_json(line) for line in out.splitlines()]
    (card,) = [e for e in events if e.type == "outgoing"]
    assert card.key == "release" and card.changes["noop"] is True
    assert card.changes["groups"][0]["hosts"] == ["host1", "host2", "host3"]


async def test_each_gate_shows_what_its_approval_lets_go(fleet, fleet_config, sample_repo) -> None:
    """Without a terminal a gate stops the run; its card was printed first, about the
    hosts its approval would have let go (not the canary, already on the target)."""
    config = fleet_config()
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    sha = commit_notes(sample_repo, "gate\n", "Gate me")
    config = fleet_config(batches=["1", "100%"], approve=True)
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--json")
    assert code == 3, out + err
    events = [event_from_json(line) for line in out.splitlines()]
    cards = {e.key: e.changes for e in events if e.type == "outgoing"}
    assert set(cards) == {"release", "release/gate-1"}
    assert cards["release"]["hosts"] == 3 and cards["release"]["target"] == sha
    gate = cards["release/gate-1"]
    assert gate["hosts"] == 2 and [g["hosts"] for g in gate["groups"]] == [["host2", "host3"]]
    assert [c["subject"] for c in gate["groups"][0]["commits"]] == ["Gate me"]
    order = [e.type for e in events]
    assert order.index("outgoing", order.index("outgoing") + 1) < order.index("gate")

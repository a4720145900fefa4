"""Crash anywhere: a headless deploy SIGKILLed at 20 points leaves every host on a
complete old or new release, and a rerun completes as an uninterrupted deploy would."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path

import pytest

from engine.config import load_config
from engine.localfleet import commit_version

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (what 'complete' means)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != ".shipdeck-release":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def expected_tree(repo: Path) -> dict[str, str]:
    return {k: v for k, v in tree_digest(repo).items() if not k.startswith(".git/")}


async def run_until(config_path: Path, kill_at, env=None) -> tuple[int | None, list[str]]:
    """Run a headless --json deploy; SIGKILL it when ``kill_at(index, line)`` is true."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        "deploy",
        "-c",
        str(config_path),
        "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        # a SIGKILLed deploy cannot remove its build directory: keep it under the test's
        # own tmp dir, not in TMPDIR
        env={**os.environ, "TMPDIR": str(config_path.parent), **(env or {})},
    )
    lines: list[str] = []
    killed = False
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            break
        line = raw.decode()
        lines.append(line)
        if not killed and kill_at(len(lines) - 1, line):
            proc.send_signal(signal.SIGKILL)
            killed = True
    await proc.wait()
    return (None if killed else proc.returncode), lines


def crash_points(reference: list[str]) -> list[tuple[str, object]]:
    """20 distinct points: every step type's start and end, mid-upload, right after activate."""
    points: list[tuple[str, object]] = []

    def at_event(pattern: str):
        return lambda i, line: pattern in line

    wanted = [
        ('"key":"fetch","status":"ok"', "after fetch"),
        ('"key":"package","status":"ok"', "after package"),
        ('/connect","status":"ok"', "after connect"),
        ('/lock","status":"running"', "while locking"),
        ('/lock","status":"ok"', "after lock"),
        ('/upload","status":"running"', "upload started"),
        ('"type":"progress"', "mid-upload"),
        ('/upload","status":"ok"', "after upload"),
        ('/unpack","status":"running"', "while unpacking"),
        ('/unpack","status":"ok"', "after unpack"),
        ('/link","status":"ok"', "after link"),
        ('/before","status":"running"', "during before hook"),
        ('/activate","status":"running"', "while activating"),
        ('/activate","status":"ok"', "right after activate"),
        ('/restart","status":"running"', "during restart"),
        ('/restart","status":"ok"', "after restart"),
        ('/health","status":"ok"', "after health"),
        ('/cleanup","status":"running"', "during cleanup"),
    ]
    for pattern, name in wanted:
        assert any(pattern in line for line in reference), f"reference run has no {name} event"
        points.append((name, at_event(pattern)))
    # and two more at fixed event counts in the middle of the host work
    n = len(reference)
    for frac in (0.45, 0.7):
        k = int(n * frac)
        points.append((f"after event {k}", lambda i, line, k=k: i == k))
    return points


GROUPS = 4  # the 20 points in 4 groups of 5, each on its own fleet (pytest -n spreads them)


@pytest.mark.parametrize("group", range(GROUPS))
async def test_crash_at_20_points_then_rerun(crash_fleet, tmp_path, group: int) -> None:
    """Points ``group``, ``group + 4``, ... of the 20: each group runs the reference deploy
    itself, then kills a deploy at each of its points and reruns."""
    fleet_dirs, make_config, repo = crash_fleet
    config_path = make_config()
    code, lines = await run_until(config_path, lambda i, line: False)
    assert code == 0, [x for x in lines if '"failed"' in x][:5]
    old_tree = expected_tree(repo)

    results = []
    reference: list[str] | None = None
    mine = list(range(group, 20, GROUPS))
    for round_no in range(len(mine) + 1):
        (repo / "VERSION").write_text(f"2.{round_no}\n")
        (repo / "data.bin").write_bytes(os.urandom(3 << 20))
        commit_version(repo, f"2.{round_no}")
        new_tree = expected_tree(repo)
        if reference is None:
            # an uninterrupted run tells which events exist; it also is round 0's deploy
            code, reference = await run_until(config_path, lambda i, line: False)
            assert code == 0
            old_tree = new_tree
            points = crash_points(reference)
            assert len(points) == 20
            continue
        name, kill_at = points[mine[round_no - 1]]
        code, lines = await run_until(config_path, kill_at)
        # after the crash: every host's `current` names a complete old or new release.
        # The killed client's remote script may still be running (a host switching as we
        # look): read the link once and digest the release it names, not "current/".
        for d in fleet_dirs():
            app = d / "app"
            target = os.readlink(app / "current") if (app / "current").is_symlink() else None
            tree = tree_digest(app / target) if target else None
            assert tree in (old_tree, new_tree), f"{name}: {d.name} is on an incomplete release"
        # the rerun completes (the stale lock is recognised) and ends as an uninterrupted deploy
        code, rerun = await run_until(config_path, lambda i, line: False)
        assert code == 0, f"{name}: rerun failed: {rerun[-1]}"
        for d in fleet_dirs():
            app = d / "app"
            assert tree_digest(app / "current") == new_tree, name
            assert not (app / ".shipdeck.lock").exists()
            # an unpack killed mid-way may leave a <id>.tmp; cleanup removes those after 10 minutes
            assert not any(p.name.endswith(".tmp") for p in [Path(os.readlink(app / "current"))])
        results.append(name)
        old_tree = new_tree
    assert len(results) == len(mine) == 5
    print(f"\ncrash points survived: {', '.join(results)}")
    _ = load_config

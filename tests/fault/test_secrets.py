"""Secrets never leave the process that needs them: a canary SSH password must not
appear in any output, event stream, transcript or history database."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from engine.history import History
from engine.localfleet import LocalFleet, commit_version

pytestmark = [pytest.mark.fault, pytest.mark.timeout(90)]

CANARY_PW = "canary-PW-7f3c1e9a55"


def grep_tree(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


async def test_canary_password_never_recorded(tmp_path, sample_repo, _isolated_state) -> None:
    async with LocalFleet(tmp_path / "fleet", 2, password=CANARY_PW) as fleet:
        fleet.client_key_path.unlink()
        config = fleet.write_config(
            tmp_path / "shipdeck.toml",
            sample_repo,
            ssh_extra={"password_env": "SD_CANARY_PW"},
            health_timeout=0.5,
        )
        env = {**os.environ, "SD_CANARY_PW": CANARY_PW}
        outputs = []
        for n, args in enumerate((["--json"], ["--headless", "--verbose"])):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tui.cli",
                "deploy",
                "-c",
                str(config),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            outputs += [out, err]
            commit_version(sample_repo, f"2.0.{n}")
        fleet.fail_health("host2")  # a failing deploy and its rollback are recorded too
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tui.cli",
            "deploy",
            "-c",
            str(config),
            "--headless",
            "-v",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 1
        outputs += [out, err]

    needle = CANARY_PW.encode()
    assert all(needle not in o for o in outputs)
    state = History().path.parent
    assert History().list(), "nothing was recorded"
    assert grep_tree(state, needle) == []  # history.db (+wal) and every transcript
    assert grep_tree(_isolated_state, needle) == []  # caches too
    for h in (tmp_path / "fleet" / "hosts").iterdir():  # revisions.log, release files
        assert grep_tree(h, needle) == []

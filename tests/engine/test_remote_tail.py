"""The tail script, run by a local /bin/sh as a host's shell would run it."""

from __future__ import annotations

import os
import subprocess

import pytest

from engine.remote.tail import COUNT_MARK, NO_FILE_EXIT, file_sh, parse_count, tail_script


def _sh(script: str, home) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )


def test_last_lines_relative_to_the_deploy_path(tmp_path) -> None:
    log = tmp_path / "app" / "shared" / "log"
    log.mkdir(parents=True)
    (log / "app.log").write_text("".join(f"line {i}\n" for i in range(1, 8)))
    res = _sh(tail_script("app", "shared/log/app.log", lines=2, follow=False), tmp_path)
    assert res.returncode == 0 and res.stdout.splitlines() == ["line 6", "line 7"]
    missing = _sh(tail_script("app", "shared/log/no.log", lines=2, follow=False), tmp_path)
    assert missing.returncode == NO_FILE_EXIT
    assert f"cannot read {tmp_path}/app/shared/log/no.log" in missing.stderr


def test_path_forms() -> None:
    assert file_sh("/var/log/x") == "F=/var/log/x"
    assert file_sh("~/a b") == "F=\"$HOME\"/'a b'"
    assert file_sh("shared/$(x)") == "F=\"$P\"/'shared/$(x)'"
    for bad in ("", "~", ".", "a\0b"):
        with pytest.raises(ValueError, match="logs: "):
            file_sh(bad)


def test_follow_counts_lines_then_goes_on_after_the_last_seen(tmp_path) -> None:
    log = tmp_path / "app" / "a.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"l{i}\n" for i in range(1, 6)))
    # `tail -F` never ends: run the script with `tail` swapped for a non-following one
    script = tail_script("app", "a.log", lines=2, follow=True, after=3).replace(" -F ", " ")
    out = _sh(script, tmp_path).stdout.split("\n")[:-1]  # (\x1e ends a line for splitlines)
    assert parse_count(out[0]) == 5 and out[1:] == ["l4", "l5"]
    assert parse_count("l4") is None and COUNT_MARK.startswith("\x1e")

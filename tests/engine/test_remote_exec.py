"""The exec script, run by a local /bin/sh as a host's shell would run it, and the
revisions.log line it writes (read back by the release parser)."""

from __future__ import annotations

import os
import subprocess

from engine.releases import parse_revision
from engine.remote.exec import NO_DIR_EXIT, cwd_sh, exec_script, outcome


def _sh(script: str, home) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30
    )


def _layout(home):
    app = home / "app"
    (app / "releases" / "r1").mkdir(parents=True)
    (app / "current").symlink_to(app / "releases" / "r1")
    return app


def test_runs_in_current_and_records_an_exec_line(tmp_path) -> None:
    app = _layout(tmp_path)
    script = exec_script(
        "app", "pwd; echo \"it's\"; exit 3", cwd=None, operator="ann", exec_id="x-1"
    )
    res = _sh(script, tmp_path)
    assert res.returncode == 3
    assert res.stdout.splitlines() == [str(app / "current"), "it's"]
    line = (app / "revisions.log").read_text().splitlines()[-1]
    rev = parse_revision(line)
    assert rev is not None
    assert (rev.kind, rev.release, rev.operator, rev.outcome, rev.deploy) == (
        "exec", "r1", "ann", "exit-3", "x-1",
    )  # fmt: skip


def test_cwd_and_a_missing_directory(tmp_path) -> None:
    app = _layout(tmp_path)
    (app / "shared" / "log").mkdir(parents=True)
    ok = _sh(exec_script("app", "pwd", cwd="shared/log", operator="a", exec_id="x"), tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip() == str(app / "shared" / "log")
    assert "outcome=ok" in (app / "revisions.log").read_text()
    missing = _sh(exec_script("app", "echo ran", cwd="/nope", operator="a", exec_id="y"), tmp_path)
    assert missing.returncode == NO_DIR_EXIT and "ran" not in missing.stdout
    assert "no directory /nope" in missing.stderr
    assert "deploy=y" not in (app / "revisions.log").read_text()  # nothing ran, nothing recorded


def test_cwd_forms_are_quoted() -> None:
    assert cwd_sh(None) == 'D="$P/current"'
    assert cwd_sh("/srv/x y") == "D='/srv/x y'"
    assert cwd_sh("~/a;b") == "D=\"$HOME\"/'a;b'"
    assert cwd_sh("shared/$(x)") == "D=\"$P\"/'shared/$(x)'"
    assert (outcome(0), outcome(2)) == ("ok", "exit-2")

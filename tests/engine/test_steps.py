"""Remote scripts and the parsers of their output (engine/remote/), on plain strings
and a local /bin/sh; no SSH."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from engine.localproc import boot_id, pid_space
from engine.remote.hooks import TIMED_OUT, failure_line, hooks_script
from engine.remote.lock import (
    TAKEOVER_REFUSED,
    held_lock,
    parse_heartbeat,
    parse_kv,
    parse_takeover,
    refused_line,
)
from engine.remote.release import step_detail


def sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30)


# -- the probe's key=value lines -------------------------------------------------


def test_parse_kv_keeps_the_path_byte_for_byte_and_trims_the_rest() -> None:
    out = "path=/srv/my app \ncurrent= r1 \nnot a pair\n2x=skipped\nfree_kb=1024\r\n"
    assert parse_kv(out) == {"path": "/srv/my app ", "current": "r1", "free_kb": "1024"}


def test_parse_kv_a_later_key_wins_and_values_may_hold_equals() -> None:
    assert parse_kv("owner=a=b\nowner=c") == {"owner": "c"}
    assert parse_kv("last_revision=x release=r1 sha=1") == {"last_revision": "x release=r1 sha=1"}


# -- a lock held by someone else --------------------------------------------------


def owner(**extra: object) -> str:
    return json.dumps({"operator": "bob", "pid": 42, "host": "ci", "since": "T", **extra})


def test_held_lock_reads_owner_age_and_ttl() -> None:
    held = held_lock({"owner": owner(deploy_id="d-9", ttl=30), "lock_age": "31"}, 60.0)
    assert held.deploy_id == "d-9"
    assert (held.age, held.ttl, held.stale) == (31, 30.0, True)
    assert held.describe() == "bob (pid 42 on ci, since T)"


def test_a_lock_whose_process_on_this_machine_ended_is_known_gone() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    here = {"boot": boot_id(), "pidns": pid_space()}
    assert all(here.values()), "Linux has a boot id and pid namespaces"
    fresh = {"lock_age": "1"}

    def gone(**who: object) -> bool:
        return held_lock({**fresh, "owner": owner(**who)}, 60.0).owner_gone

    assert gone(pid=dead.pid, **here)
    # alive; another boot, machine or container (pid namespace); an older record
    alive = subprocess.Popen(["sleep", "30"])
    try:
        assert not gone(pid=alive.pid, **here)
    finally:
        alive.kill()
        alive.wait()
    assert not gone(pid=dead.pid, boot="other", pidns=here["pidns"])
    assert not gone(pid=dead.pid, boot=here["boot"], pidns="pid:[1]")
    assert not gone(pid=dead.pid)
    assert not gone(pid="x", **here)


def test_held_lock_a_fresh_heartbeat_is_not_stale() -> None:
    held = held_lock({"owner": owner(ttl=30), "lock_age": "10"}, 60.0)
    assert not held.stale
    assert held.stale_in == 21  # ttl - age + 1


def test_held_lock_without_a_readable_owner_uses_our_ttl_and_says_so() -> None:
    for line in ("", "{not json", "[1, 2]", '"text"'):
        held = held_lock({"owner": line, "lock_age": "5"}, 60.0)
        assert held.owner == {} and held.ttl == 60.0 and held.deploy_id == ""
        assert held.describe() == "an unknown owner (empty lock)"
    assert held_lock({"owner": owner(ttl=-1), "lock_age": "junk"}, 45.0).ttl == 45.0
    assert held_lock({"owner": owner(ttl="soon"), "lock_age": "junk"}, 45.0).age == 0


def test_parse_takeover() -> None:
    assert parse_takeover("lock=acquired\n") == "acquired"
    for what in TAKEOVER_REFUSED:
        assert parse_takeover(f"takeover={what}\n") == what
    assert parse_takeover("mkdir: cannot create directory\n") == ""


def test_parse_heartbeat() -> None:
    assert parse_heartbeat("hb=ok\n") == (True, "")
    assert parse_heartbeat("hb=lost\nlock taken over by bob (deploy d-2)\n") == (
        False,
        "lock taken over by bob (deploy d-2)",
    )
    assert parse_heartbeat("hb=lost\nlock taken over by nobody: the lock is gone\n") == (False, "")


def test_refused_line_is_the_fences_report() -> None:
    assert refused_line("x\nlock taken over by bob (deploy d-2)\n") == (
        "lock taken over by bob (deploy d-2)"
    )
    assert refused_line("all fine\n") == ""


# -- the one hook wrapper -------------------------------------------------------------


def test_hooks_run_in_cwd_with_env_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    script = hooks_script(
        str(tmp_path),
        ["pwd", 'echo "release=$SHIPDECK_RELEASE"', "exit 3", "echo never"],
        {"SHIPDECK_RELEASE": "r 1"},
        timeout=10,
    )
    res = sh(script)
    assert res.returncode == 3
    out = res.stdout.splitlines()
    assert out[:4] == ["$ pwd", str(tmp_path), '$ echo "release=$SHIPDECK_RELEASE"', "release=r 1"]
    assert out[-1] == "`exit 3` exited 3"
    assert "never" not in res.stdout
    assert failure_line(res.stdout, res.stderr, res.returncode) == "$ exit 3"


def test_a_hook_that_outlives_its_timeout_is_killed_and_says_so(tmp_path: Path) -> None:
    res = sh(hooks_script(str(tmp_path), ["sleep 30"], {}, echo=False, timeout=0.5))
    assert res.returncode == TIMED_OUT
    assert failure_line(res.stdout, res.stderr, res.returncode) == "timed out after 0.5s"


def test_failure_line_prefers_stderr_and_leaves_out_the_wrappers_report() -> None:
    assert failure_line("`curl x` exited 7\n", "curl: (7) refused\n", 7) == "curl: (7) refused"
    assert failure_line("starting\n`check` exited 1\n", "", 1) == "starting"
    assert failure_line("`check` exited 1\n", "", 1) == ""


def test_a_missing_cwd_fails_before_any_hook(tmp_path: Path) -> None:
    res = sh(hooks_script(str(tmp_path / "gone"), ["echo ran"], {}))
    assert res.returncode == 1 and "ran" not in res.stdout


# -- what each release step reports ------------------------------------------------------


def test_step_detail() -> None:
    assert step_detail("unpack", ["unpacked into releases/r1"]) == "unpacked into releases/r1"
    assert step_detail("link", ["linked log -> shared/log", "linked .env -> shared/.env"]) == (
        "2 shared linked"
    )
    assert step_detail("before", ["$ a", "out", "$ b"]) == "2 hooks"
    assert step_detail("restart", ["$ a"]) == "1 hook"
    assert step_detail("cleanup", ["removed release r0", "removed artifact x"]) == (
        "removed 1 old release(s)"
    )
    assert step_detail("cleanup", []) == "nothing to remove"
    assert step_detail("health", []) == "healthy after 1 attempt"
    assert step_detail("finish", ["anything"]) == ""

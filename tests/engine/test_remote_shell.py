"""The remote step scripts run by a real /bin/sh on a scratch deploy path."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine.remote.lock import (
    FENCED_EXIT,
    LOCK_DIR,
    fenced,
    heartbeat_script,
    lock_owner,
    parse_kv,
    probe_script,
    takeover_script,
)
from engine.remote.peer import grant_line, grant_script, revoke_script
from engine.remote.release import (
    DELTA_FAILED,
    RELEASE_FILE,
    cleanup_script,
    finish_script,
    receive_script,
)


def sh(script: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["/bin/sh", "-c", script], input=stdin, capture_output=True, timeout=30)


def layout(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    for d in ("releases", "artifacts", "shared"):
        (app / d).mkdir(parents=True)
    return app


def test_receive_takes_exactly_its_bytes_and_names_only_a_complete_upload(
    tmp_path: Path,
) -> None:
    app = layout(tmp_path)
    data = os.urandom(20000)
    sha = hashlib.sha256(data).hexdigest()
    wire = gzip.compress(data, mtime=0)
    part = app / "artifacts" / f"{sha}.tar.part"
    # a broken full upload keeps what arrived (a prefix of the tar), never the final name
    short = sh(receive_script(str(app), sha, len(data)), wire[: len(wire) // 2])
    assert short.returncode != 0
    assert b"upload broken" in short.stderr
    assert [p.name for p in (app / "artifacts").iterdir()] == [part.name]
    kept = part.read_bytes()
    assert 0 < len(kept) < len(data) and data.startswith(kept)
    # the upload's stdin ends with the artifact: more bytes than announced are refused
    long = sh(receive_script(str(app), sha, len(data)), gzip.compress(data + b"NEXT", mtime=0))
    assert long.returncode != 0 and b"upload too long" in long.stderr
    assert list((app / "artifacts").iterdir()) == []
    # a resume appends the rest to exactly the bytes it was told are there
    part.write_bytes(data[:5000])
    wrong = sh(receive_script(str(app), sha, len(data), "resume", offset=4000), data[4000:])
    assert wrong.returncode != 0 and b"not 4000" in wrong.stderr
    part.write_bytes(data[:5000])
    ok = sh(receive_script(str(app), sha, len(data), "resume", offset=5000), data[5000:])
    assert ok.returncode == 0, ok.stderr
    assert (app / "artifacts" / f"{sha}.tar").read_bytes() == data
    # bytes that are not the artifact (a resume of someone else's prefix) are refused
    (app / "artifacts" / f"{sha}.tar").unlink()
    part.write_bytes(b"x" * 5000)
    bad = sh(receive_script(str(app), sha, len(data), "resume", offset=5000), data[5000:])
    assert bad.returncode != 0 and b"sha256 mismatch" in bad.stderr
    assert list((app / "artifacts").iterdir()) == []


def test_receive_a_zstd_wire_copy(tmp_path: Path) -> None:
    app = layout(tmp_path)
    data = os.urandom(30000) + bytes(30000)
    sha = hashlib.sha256(data).hexdigest()
    wire = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True)
    ok = sh(receive_script(str(app), sha, len(data), codec="zstd"), wire.stdout)
    assert ok.returncode == 0, ok.stderr
    assert (app / "artifacts" / f"{sha}.tar").read_bytes() == data
    # cut short: what arrived is kept for a resume, a prefix of the artifact
    (app / "artifacts" / f"{sha}.tar").unlink()
    short = sh(receive_script(str(app), sha, len(data), codec="zstd"), wire.stdout[:-200])
    assert short.returncode != 0 and b"upload" in short.stderr
    kept = (app / "artifacts" / f"{sha}.tar.part").read_bytes()
    assert len(kept) < len(data) and data.startswith(kept)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd is not installed")
def test_receive_a_delta_rebuilds_the_artifact_or_says_so(tmp_path: Path) -> None:
    app = layout(tmp_path)
    old, new = os.urandom(50000), bytearray()
    new[:] = old
    new[20000:21000] = os.urandom(1000)
    base = hashlib.sha256(old).hexdigest()
    sha = hashlib.sha256(new).hexdigest()
    (app / "artifacts" / f"{base}.tar").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    subprocess.run(
        [
            "zstd",
            "-qf",
            f"--patch-from={app / 'artifacts' / (base + '.tar')}",
            str(tmp_path / "new"),
            "-o",
            str(tmp_path / "p"),
        ],
        check=True,
    )
    patch = (tmp_path / "p").read_bytes()
    assert len(patch) < 5000
    ok = sh(receive_script(str(app), sha, len(new), "delta", base=base), patch)
    assert ok.returncode == 0, ok.stderr
    assert (app / "artifacts" / f"{sha}.tar").read_bytes() == bytes(new)
    # a base that is not what the patch was made against: no artifact, exit DELTA_FAILED
    (app / "artifacts" / f"{sha}.tar").unlink()
    # (a block the patch must copy from the base: its last byte alone may come in it
    # as a literal, and then the result is right after all)
    damaged = bytearray(old)
    damaged[40000:40100] = bytes(255 - x for x in old[40000:40100])
    (app / "artifacts" / f"{base}.tar").write_bytes(bytes(damaged))
    bad = sh(receive_script(str(app), sha, len(new), "delta", base=base), patch)
    assert bad.returncode == DELTA_FAILED, bad.stderr
    assert sorted(p.name for p in (app / "artifacts").iterdir()) == [f"{base}.tar"]


def _release(app: Path, rid: str, artifact: str) -> None:
    r = app / "releases" / rid
    r.mkdir()
    (r / RELEASE_FILE).write_text(f"release={rid}\nsha=abc\nartifact={artifact}\n")
    (app / "artifacts" / f"{artifact}.tar").write_bytes(b"x")


def _lock(app: Path, deploy_id: str) -> None:
    (app / LOCK_DIR).mkdir()
    owner = {"operator": "alice", "deploy_id": deploy_id}
    (app / LOCK_DIR / "owner").write_text(json.dumps(owner) + "\n")


def test_cleanup_keeps_n_releases_and_their_artifacts_only(tmp_path: Path) -> None:
    app = layout(tmp_path)
    for i in range(1, 6):
        _release(app, f"2026010{i}T000000Z-aaaaaaa", f"{i:064x}")
    (app / "artifacts" / f"{9:064x}.tar").write_bytes(b"orphan")
    (app / "artifacts" / f"{8:064x}.tar.gz").write_bytes(b"an older shipdeck's")
    (app / "current").symlink_to("releases/20260102T000000Z-aaaaaaa")
    _lock(app, "d1")
    out = sh(cleanup_script(str(app), 2, ["20260105T000000Z-aaaaaaa"], "d1"))
    assert out.returncode == 0, out.stderr
    left = sorted(p.name for p in (app / "releases").iterdir())
    # the two newest are kept, and the live one (older) is never removed
    assert left == [
        "20260102T000000Z-aaaaaaa",
        "20260104T000000Z-aaaaaaa",
        "20260105T000000Z-aaaaaaa",
    ]
    arts = sorted(p.name[:64] for p in (app / "artifacts").iterdir())
    assert arts == [f"{i:064x}" for i in (2, 4, 5)]
    assert b"removed artifact" in out.stdout


def test_cleanup_and_finish_do_nothing_once_the_lock_is_someone_elses(tmp_path: Path) -> None:
    app = layout(tmp_path)
    for i in range(1, 5):
        _release(app, f"2026010{i}T000000Z-aaaaaaa", f"{i:064x}")
    _lock(app, "other-deploy")
    out = sh(cleanup_script(str(app), 1, [], "d1"))
    assert out.returncode == FENCED_EXIT
    assert out.stdout == b"lock taken over by alice (deploy other-deploy)\n"
    assert len(list((app / "releases").iterdir())) == 4
    out = sh(finish_script(str(app), "line", unlock=True, remove_release=None, deploy_id="d1"))
    assert out.returncode == FENCED_EXIT
    assert b"lock taken over by alice" in out.stdout
    assert (app / LOCK_DIR / "owner").exists()
    assert not (app / "revisions.log").exists()
    # without a lock at all, nothing is ours either
    (app / LOCK_DIR / "owner").unlink()
    (app / LOCK_DIR).rmdir()
    out = sh(cleanup_script(str(app), 1, [], "d1"))
    assert out.stdout == b"lock taken over by nobody: the lock is gone\n"
    # and with our own lock, finish writes the log line and unlocks
    _lock(app, "d1")
    out = sh(finish_script(str(app), "line", unlock=True, remove_release=None, deploy_id="d1"))
    assert out.returncode == 0
    assert (app / "revisions.log").read_text() == "line\n"
    assert not (app / LOCK_DIR).exists()


SHELLS = ["/bin/sh"] + (["busybox sh"] if shutil.which("busybox") else [])


def _stale_lock(app: Path, deploy_id: str, age: int) -> None:
    lock = app / LOCK_DIR
    lock.mkdir()
    owner = {"operator": "ghost", "deploy_id": deploy_id, "ttl": 60}
    (lock / "owner").write_text(json.dumps(owner) + "\n")
    (lock / "hb").write_text(f"{int(time.time()) - age}\n")


@pytest.mark.parametrize("shell", SHELLS)
def test_contenders_for_one_stale_lock_have_exactly_one_winner(tmp_path: Path, shell) -> None:
    app = layout(tmp_path)
    _stale_lock(app, "20261130T000000Z-60057a", age=600)
    scripts = [
        takeover_script(str(app), lock_owner(f"op{i}", f"D{i}", 60), "20261130T000000Z-60057a", 60)
        for i in range(12)
    ]
    procs = [subprocess.Popen([*shell.split(), "-c", s], stdout=subprocess.PIPE) for s in scripts]
    outs = [p.communicate(timeout=30)[0].decode() for p in procs]
    winners = [i for i, out in enumerate(outs) if "lock=acquired" in out]
    assert len(winners) == 1, outs
    assert all(
        "takeover=lost" in out or "takeover=changed" in out
        for i, out in enumerate(outs)
        if i != winners[0]
    ), outs
    owner = json.loads((app / LOCK_DIR / "owner").read_text())
    assert owner["deploy_id"] == f"D{winners[0]}"
    assert not list(app.glob(f"{LOCK_DIR}.takeover.*"))
    # the winner's heartbeat is fresh: nobody takes its lock over
    again = subprocess.run(
        [
            *shell.split(),
            "-c",
            takeover_script(str(app), lock_owner("x", "E", 60), owner["deploy_id"], 60),
        ],
        capture_output=True,
        timeout=30,
    )
    assert b"takeover=alive" in again.stdout
    assert json.loads((app / LOCK_DIR / "owner").read_text())["deploy_id"] == owner["deploy_id"]


@pytest.mark.parametrize("shell", SHELLS)
def test_probe_reports_the_heartbeat_age_and_a_path_that_is_no_lock(tmp_path: Path, shell) -> None:
    app = layout(tmp_path)
    _stale_lock(app, "G", age=120)
    run = lambda script: subprocess.run(  # noqa: E731
        [*shell.split(), "-c", script], capture_output=True, timeout=30, text=True
    )
    info = parse_kv(run(probe_script(str(app), None, lock_owner("me", "D1"))).stdout)
    assert info["lock"] == "held"
    assert 119 <= int(info["lock_age"]) <= 130
    assert json.loads(info["owner"])["operator"] == "ghost"
    # the heartbeat: refreshed only while the lock names us
    out = run(heartbeat_script(str(app), "D1")).stdout
    assert out.splitlines() == ["hb=lost", "lock taken over by ghost (deploy G)"]
    (app / LOCK_DIR / "owner").write_text(json.dumps({"operator": "me", "deploy_id": "D1"}) + "\n")
    assert run(heartbeat_script(str(app), "D1")).stdout == "hb=ok\n"
    info = parse_kv(run(probe_script(str(app), None, lock_owner("x", "D2"))).stdout)
    assert int(info["lock_age"]) <= 2
    # fenced: a step runs only while the lock is ours
    assert run(fenced(str(app), "D1", "echo ran")).stdout == "ran\n"
    refused = run(fenced(str(app), "D2", "echo ran"))
    assert refused.returncode == FENCED_EXIT
    assert refused.stdout == "lock taken over by me (deploy D1)\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_cleanup_removes_leftovers_of_killed_and_failed_deploys(tmp_path: Path, shell) -> None:
    app = layout(tmp_path)
    ids = [f"2026010{i}T000000Z-aaaaaaa" for i in range(1, 6)]
    for i, rid in enumerate(ids, start=1):
        _release(app, rid, f"{i:064x}")
    # 1, 2 and 4 became current once; 3 never did (a failed deploy); 5 is current
    (app / "revisions.log").write_text(
        "".join(
            f"2026-01-0{i}T00:00:00Z deploy release={ids[i - 1]} sha=abc operator=x outcome={o} deploy=d{i}\n"
            for i, o in ((1, "ok"), (2, "ok"), (3, "failed"), (4, "ok"), (5, "ok"))
        )
    )
    (app / "current").symlink_to(f"releases/{ids[4]}")
    (app / ".current.tmp.20260106T000000Z-bbbbbbb").symlink_to(f"releases/{ids[4]}")
    (app / "artifacts" / ("e" * 64 + ".tar.gz.part")).write_bytes(b"half")
    (app / "artifacts" / ("d" * 64 + ".tar.part")).write_bytes(b"half")
    # the broken upload of the artifact being deployed is kept for a resume
    (app / "artifacts" / ("c" * 64 + ".tar.part")).write_bytes(b"resume me")
    (app / "releases" / "20260106T000000Z-ccccccc.tmp").mkdir()
    (app / ".shipdeck-peer.0123abcd").mkdir()  # a killed peer copy's key folder
    (app / ".shipdeck-peer.0123abcd" / "key").write_text("k")
    _lock(app, "d9")
    script = cleanup_script(str(app), 5, [ids[4], ids[3]], "d9", "c" * 64)
    out = subprocess.run([*shell.split(), "-c", script], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (app / "releases").iterdir()) == [ids[0], ids[1], ids[3], ids[4]]
    assert not list(app.glob(".current.tmp.*"))
    assert [p.name for p in (app / "artifacts").glob("*.part")] == ["c" * 64 + ".tar.part"]
    assert not list(app.glob(".shipdeck-peer.*"))
    assert (app / "current").resolve().name == ids[4]
    assert f"removed release {ids[2]} (never current)".encode() in out.stdout


def test_a_peer_key_may_only_read_the_artifact_and_is_removed_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    line = grant_line("/srv/app", "a" * 64, "ssh-ed25519 AAAAC3Nz x\n", "0f1e", "202601010000Z")
    assert line == (
        'restrict,expiry-time="202601010000Z",command="cat \'/srv/app/artifacts/'
        + "a" * 64
        + ".tar'\" ssh-ed25519 AAAAC3Nz shipdeck-peer-0f1e"
    )
    with pytest.raises(ValueError):
        grant_line('/srv/"app', "a" * 64, "ssh-ed25519 AAAA", "0f1e", "202601010000Z")
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}

    def run(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True)

    granted = run(grant_script(line))
    assert granted.stdout.strip() == "created=dir"
    assert (home / ".ssh" / "authorized_keys").read_text() == line + "\n"
    assert run(revoke_script("0f1e", "dir")).returncode == 0
    assert list(home.iterdir()) == []  # what the grant made is gone
    # an existing file keeps its other lines, its mode and its inode
    (home / ".ssh").mkdir()
    keys = home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAAother me@laptop")  # no final newline
    keys.chmod(0o600)
    inode = keys.stat().st_ino
    assert run(grant_script(line)).stdout.strip() == "created="
    assert keys.read_text() == "ssh-ed25519 AAAAother me@laptop\n" + line + "\n"
    assert run(revoke_script("0f1e", "")).returncode == 0
    assert keys.read_text() == "ssh-ed25519 AAAAother me@laptop\n"
    assert keys.stat().st_ino == inode and keys.stat().st_mode & 0o777 == 0o600


def _tools_dir(tmp_path: Path, names: list[str], fake_openssl: str | None = None) -> str:
    """A PATH holding only ``names`` (linked to the real tools) and, if given, an
    ``openssl`` that is this shell script."""
    d = tmp_path / "bin"
    d.mkdir()
    for name in names:
        real = shutil.which(name)
        assert real, f"{name} is needed for this test"
        (d / name).symlink_to(real)
    if fake_openssl is not None:
        (d / "openssl").write_text(f"#!/bin/sh\n{fake_openssl}\n")
        (d / "openssl").chmod(0o755)
    return str(d)


@pytest.mark.parametrize(
    "tools, fake_openssl",
    [
        (["openssl", "sha256sum", "cat"], None),  # OpenSSL's digest, as a stock host has
        (["sha256sum", "cat"], None),  # no openssl: coreutils
        (["sha256sum", "cat"], "echo 'SHA256(stdin)= nothex'"),  # an openssl without -r
        (["sha256sum", "cat"], "exit 1"),  # a broken openssl
    ],
    ids=["openssl", "sha256sum", "openssl-without-r", "broken-openssl"],
)
def test_the_hosts_sha256_is_right_whichever_tool_it_has(
    tmp_path: Path, tools: list[str], fake_openssl: str | None
) -> None:
    from engine.remote.shell import SHA256_SH

    data = os.urandom(300_000)
    f = tmp_path / "artifact.tar"
    f.write_bytes(data)
    path = _tools_dir(tmp_path, tools, fake_openssl)
    script = f'{SHA256_SH}\nsd_can_hash && sd_sha256 {f} && echo "$SD_SUM"'
    out = subprocess.run(
        ["/bin/sh", "-c", script], env={"PATH": path}, capture_output=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().strip() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fake_openssl", [None, "exit 1", "echo 'SHA256(stdin)= e3b0'"])
def test_a_host_with_no_hash_tool_says_so(tmp_path: Path, fake_openssl: str | None) -> None:
    """No tool, or only an openssl that does not hash right: the host says it cannot
    hash (its uploads go unchecked, as before) rather than failing every check."""
    from engine.remote.shell import SHA256_SH

    path = _tools_dir(tmp_path, ["cat"], fake_openssl)
    out = subprocess.run(
        ["/bin/sh", "-c", f"{SHA256_SH}\nsd_can_hash || echo none"],
        env={"PATH": path},
        capture_output=True,
        timeout=30,
    )
    assert out.stdout == b"none\n"


@pytest.mark.parametrize("shell", ["/bin/sh", "busybox sh", "bash --posix"])
def test_the_probe_names_the_newest_other_artifact_as_the_base(tmp_path: Path, shell: str) -> None:
    """What a delta is made against: the host's newest artifact but the one going out
    (mtime, as ``ls -t`` ordered them), in the shells hosts have."""
    from engine.remote.lock import artifact_probe_sh

    exe = shell.split()[0]
    if shutil.which(exe) is None and not Path(exe).exists():
        pytest.skip(f"{exe} not installed")
    app = layout(tmp_path)
    now = time.time()
    names = {"a" * 64: now - 300, "b" * 64: now - 100, "c" * 64: now - 200, "d" * 64: now}
    for name, at in names.items():
        f = app / "artifacts" / f"{name}.tar"
        f.write_bytes(b"x")
        os.utime(f, (at, at))
    (app / "artifacts" / ("e" * 64 + ".tar.part")).write_bytes(b"x")  # not an artifact
    script = f"P={app}\n{artifact_probe_sh('d' * 64)}"
    out = subprocess.run([*shell.split(), "-c", script], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    kv = parse_kv(out.stdout.decode())
    assert kv["base"] == "b" * 64  # the newest, "d" being the one going out
    assert kv["artifact_sha"] == hashlib.sha256(b"x").hexdigest()
    # no other artifact: no base
    for name in ("a", "b", "c"):
        (app / "artifacts" / f"{name * 64}.tar").unlink()
    out = subprocess.run([*shell.split(), "-c", script], capture_output=True, timeout=30)
    assert "base=" not in out.stdout.decode()


def test_hooks_whose_environment_brings_a_path_try_timeout_themselves(tmp_path: Path) -> None:
    """The session's SD_TK says GNU's timeout is on the session's PATH; a hook
    environment with a PATH of its own (here: none of the tools) runs without it."""
    from engine.remote.hooks import hooks_script

    script = hooks_script(str(tmp_path), ["echo ran"], {"PATH": "/nonexistent"}, timeout=5)
    res = sh(f"SD_TK=1\n{script}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.decode().splitlines()[-1] == "ran"

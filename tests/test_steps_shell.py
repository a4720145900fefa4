"""The remote step scripts run by a real /bin/sh on a scratch deploy path."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from engine.steps import LOCK_DIR, RELEASE_FILE, cleanup_script, finish_script, receive_script


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
    data = b"release bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    short = sh(receive_script(str(app), sha, len(data)), data[:-10])
    assert short.returncode != 0
    assert f"upload incomplete: {len(data) - 10} of {len(data)} bytes".encode() in short.stderr
    assert list((app / "artifacts").iterdir()) == []  # neither .part nor the final name
    # the upload's stdin ends with the artifact: more bytes than announced are refused
    long = sh(receive_script(str(app), sha, len(data)), data + b"NEXT COMMAND")
    assert long.returncode != 0 and b"upload too long" in long.stderr
    assert list((app / "artifacts").iterdir()) == []
    ok = sh(receive_script(str(app), sha, len(data)), data)
    assert ok.returncode == 0, ok.stderr
    assert (app / "artifacts" / f"{sha}.tar.gz").read_bytes() == data


def _release(app: Path, rid: str, artifact: str) -> None:
    r = app / "releases" / rid
    r.mkdir()
    (r / RELEASE_FILE).write_text(f"release={rid}\nsha=abc\nartifact={artifact}\n")
    (app / "artifacts" / f"{artifact}.tar.gz").write_bytes(b"x")


def _lock(app: Path, deploy_id: str) -> None:
    (app / LOCK_DIR).mkdir()
    owner = {"operator": "alice", "deploy_id": deploy_id}
    (app / LOCK_DIR / "owner").write_text(json.dumps(owner) + "\n")


def test_cleanup_keeps_n_releases_and_their_artifacts_only(tmp_path: Path) -> None:
    app = layout(tmp_path)
    for i in range(1, 6):
        _release(app, f"2026010{i}T000000Z-aaaaaaa", f"{i:064x}")
    (app / "artifacts" / f"{9:064x}.tar.gz").write_bytes(b"orphan")
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
    assert out.returncode == 0
    assert b"no longer ours" in out.stdout
    assert len(list((app / "releases").iterdir())) == 4
    out = sh(finish_script(str(app), "line", unlock=True, remove_release=None, deploy_id="d1"))
    assert b"no longer ours" in out.stdout
    assert (app / LOCK_DIR / "owner").exists()
    assert not (app / "revisions.log").exists()
    # without a lock at all, nothing is ours either
    (app / LOCK_DIR / "owner").unlink()
    (app / LOCK_DIR).rmdir()
    out = sh(cleanup_script(str(app), 1, [], "d1"))
    assert b"no longer ours" in out.stdout
    # and with our own lock, finish writes the log line and unlocks
    _lock(app, "d1")
    out = sh(finish_script(str(app), "line", unlock=True, remove_release=None, deploy_id="d1"))
    assert out.returncode == 0
    assert (app / "revisions.log").read_text() == "line\n"
    assert not (app / LOCK_DIR).exists()

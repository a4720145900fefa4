"""Large artifacts on real sshd hosts: deterministic packages, delta uploads, resumed
uploads (and, with sites, copies between the hosts of a site)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from engine.build import _pack
from engine.config import load_config
from engine.localfleet import commit_version
from tests.engine.test_deploy_sshd import run, write_config
from tests.helpers import current_version
from tests.throttle import ThrottledProxy

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


@pytest.fixture
def zstd_available() -> None:
    """Skip (or, with CI=true, fail) without zstd: deltas need it on both ends."""
    if shutil.which("zstd") is None:
        reason = "zstd not installed (apt-get install zstd; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true", pytrace=False)
        pytest.skip(reason)


def add_data(repo: Path, files: int = 4, size: int = MB) -> None:
    """Random (incompressible) data files in the sample app, copied into its build."""
    data = repo / "data"
    data.mkdir(exist_ok=True)
    for i in range(files):
        (data / f"blob{i}.bin").write_bytes(os.urandom(size))
    build = repo / "build.sh"
    build.write_text(build.read_text() + "cp -r data dist/\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "data"], check=True)


def change_blob(repo: Path, i: int = 1, size: int = MB) -> None:
    (repo / "data" / f"blob{i}.bin").write_bytes(os.urandom(size))
    commit_version(repo, f"2.{i}.0")


def transfers(rec) -> dict[str, object]:
    """Per host (its upload step's key): the Transfer event."""
    return {e.key: e for e in rec.of("transfer")}


def artifact_of(home: Path) -> Path:
    """The artifact ``current`` was unpacked from."""
    info = (home / "app" / "current" / ".shipdeck-release").read_text()
    sha = dict(line.split("=", 1) for line in info.split())["artifact"]
    return home / "app" / "artifacts" / f"{sha}.tar"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_package_is_deterministic(tmp_path: Path) -> None:
    """The same files give the same tar whatever their mtimes, owner or umask; one
    changed file changes only its own bytes in the tar."""
    a, b = tmp_path / "a", tmp_path / "b"
    for root, mtime in ((a, 1_600_000_000), (b, 1_700_000_000)):
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "run").write_text("#!/bin/sh\n")
        (root / "bin" / "run").chmod(0o775 if root == a else 0o700)
        for i in range(3):
            (root / f"f{i}").write_bytes(bytes([i]) * 5000)
        for p in root.rglob("*"):
            os.utime(p, (mtime, mtime))
    pa, pb = _pack(a, tmp_path / "pa"), _pack(b, tmp_path / "pb")
    assert pa.sha256 == pb.sha256
    assert pa.path.read_bytes() == pb.path.read_bytes()
    with tarfile.open(pa.path) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["bin/run"] == 0o755 and modes["f0"] == 0o644
    (b / "f1").write_bytes(b"\x09" * 5000)
    pc = _pack(b, tmp_path / "pc")
    x, y = pa.path.read_bytes(), pc.path.read_bytes()
    diff = [i for i in range(len(x)) if x[i] != y[i]]
    assert len(x) == len(y) and 0 < len(diff) <= 5000 + 512  # the file and its header


async def test_delta_after_one_file_change(
    zstd_available, sshd_fleet, sample_repo, tmp_path
) -> None:
    fleet = sshd_fleet(2)
    add_data(sample_repo, files=4)
    config = load_config(write_config(tmp_path / "s.toml", fleet, sample_repo))
    result, rec, first = await run(config)
    assert result.exit_code == 0, result.summary
    full = transfers(rec)
    assert {t.mode for t in full.values()} == {"full"}
    size = next(iter(full.values())).total
    assert all(t.sent >= 4 * MB for t in full.values())

    change_blob(sample_repo, 1)
    result, rec, second = await run(config)
    assert result.exit_code == 0, result.summary
    delta = transfers(rec)
    assert {t.mode for t in delta.values()} == {"delta"}, delta
    for t in delta.values():
        assert t.total >= size
        assert t.sent < 1.2 * MB  # one changed 1 MiB file, not the 4+ MiB artifact
    for h in fleet.hosts:
        art = artifact_of(h.home)
        assert sha256(art) == art.name.removesuffix(".tar")
        assert current_version(h.home / "app") == "2.1.0"
        release = h.home / "app" / "current" / "data"
        assert (release / "blob1.bin").read_bytes() == (
            sample_repo / "data" / "blob1.bin"
        ).read_bytes()
    totals = result.summary.get("transfer") if isinstance(result.summary, dict) else None
    assert totals is None or totals["sent"] == sum(t.sent for t in delta.values())
    # the first release's wire copy was made (zstd: the hosts have it); the second's,
    # sent only as a patch, never was
    assert first.package is not None and first.package.wire("zstd").is_file()
    assert second.package is not None
    assert not second.package.wire("zstd").exists() and not second.package.wire("gzip").exists()


async def one_host_with_a_first_release(sshd_fleet, sample_repo, tmp_path):
    """One sshd host that holds a first release of the sample app with 2 MiB of data:
    (host, config, the first run's Deployment)."""
    fleet = sshd_fleet(1)
    (h,) = fleet.hosts
    add_data(sample_repo, files=2)
    config = load_config(write_config(tmp_path / "s.toml", fleet, sample_repo))
    result, _, first = await run(config)
    assert result.exit_code == 0, result.summary
    return h, config, first


async def test_corrupted_base_falls_back_to_full_upload(
    zstd_available, sshd_fleet, sample_repo, tmp_path
) -> None:
    h, config, _ = await one_host_with_a_first_release(sshd_fleet, sample_repo, tmp_path)
    base = artifact_of(h.home)
    with open(base, "r+b") as f:  # a flipped block in the middle of the host's artifact
        f.seek(base.stat().st_size // 2)
        f.write(b"\xff" * 4096)

    change_blob(sample_repo, 0)
    result, rec, _ = await run(config)
    assert result.exit_code == 0, result.summary
    (t,) = transfers(rec).values()
    assert t.mode == "full"
    assert t.sent >= 2 * MB  # the whole (incompressible) artifact
    logs = [e.text for e in rec.of("log") if e.key.endswith("/upload")]
    assert any("delta" in line and "now full" in line for line in logs), logs
    art = artifact_of(h.home)
    assert sha256(art) == art.name.removesuffix(".tar")
    assert current_version(h.home / "app") == "2.0.0"
    assert not list((h.home / "app" / "artifacts").glob("*.part"))


async def test_an_unpack_that_fails_after_a_delta_is_not_a_failed_upload(
    zstd_available, sshd_fleet, sample_repo, tmp_path
) -> None:
    """The upload's command carries the unpack: when the patch went in but the unpack
    fails, the unpack is what failed -- no whole artifact is sent after it."""
    h, config, first = await one_host_with_a_first_release(sshd_fleet, sample_repo, tmp_path)
    releases = h.home / "app" / "releases"
    releases.chmod(0o555)  # the host's user can no longer create a release there
    try:
        change_blob(sample_repo, 0)
        result, rec, _ = await run(config)
    finally:
        releases.chmod(0o755)
    assert result.exit_code != 0
    (t,) = transfers(rec).values()
    assert t.mode == "delta" and t.sent < 1.2 * MB
    status = {e.key.rsplit("/", 1)[-1]: e for e in rec.of("status") if e.status in ("ok", "failed")}
    assert status["upload"].status == "ok" and status["unpack"].status == "failed"
    assert "Permission denied" in status["unpack"].detail, status["unpack"].detail
    logs = [e.text for e in rec.of("log") if e.key.endswith("/upload")]
    assert not any("now full" in line for line in logs), logs
    assert current_version(h.home / "app") == "1.0.0"  # current as it was
    assert first.release_id in (h.home / "app" / "current").resolve().name


def _through(fleet, proxy: ThrottledProxy) -> str:
    """The bastion reached through ``proxy``: its spec, its host key known there."""
    b = fleet.bastion
    line = next(
        ln
        for ln in fleet.known_hosts.read_text().splitlines()
        if ln.startswith(f"[{b.addr}]:{b.port} ")
    )
    with open(fleet.known_hosts, "a") as f:
        f.write(f"[127.0.0.1]:{proxy.port} {line.split(' ', 1)[1]}\n")
    return f"{b.user}@127.0.0.1:{proxy.port}"


async def _await(cond, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_resume_after_a_killed_upload(sshd_fleet, sample_repo, tmp_path) -> None:
    """The client is killed (SIGKILL) mid-upload through a slow jump link; the next
    deploy of the same artifact checks the bytes the host kept and sends the rest."""
    fleet = sshd_fleet(1, bastion=True)
    (h,) = fleet.hosts
    add_data(sample_repo, files=8)  # 8 MiB, incompressible
    with ThrottledProxy("127.0.0.1", fleet.bastion.port, rate=2 * MB) as link:
        jump = _through(fleet, link)
        cfg = write_config(tmp_path / "s.toml", fleet, sample_repo, ssh_jump=f'"{jump}"')
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "deploy", "-c", str(cfg), "--headless", "--yes"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        arts = h.home / "app" / "artifacts"
        try:

            def parts() -> list[Path]:
                return list(arts.glob("*.part")) if arts.is_dir() else []

            await _await(lambda: any(p.stat().st_size > 2 * MB for p in parts()), "half an upload")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        (part,) = parts()
        # the host side ends once the dropped connection reaches it
        kept = part.stat().st_size
        assert 2 * MB < kept < 8 * MB

        link.reset()
        config = load_config(cfg)
        # no --force-unlock: the killed client's lock names a process of this machine
        # that has ended, so the rerun takes it over at once
        result, rec, _ = await run(config)
        assert result.exit_code == 0, result.summary
        assert any("on this machine has ended" in e.text for e in rec.of("log")), [
            e.text for e in rec.of("log")
        ]
        (t,) = transfers(rec).values()
        assert t.mode == "resume", t
        assert t.jump
        assert t.sent <= t.total - kept
        assert link.bytes_up < t.total - kept + MB  # what crossed the jump link
    art = artifact_of(h.home)
    assert sha256(art) == art.name.removesuffix(".tar")
    assert not list(arts.glob("*.part"))
    assert current_version(h.home / "app") == "1.0.0"


def fallbacks(rec) -> list[str]:
    """The log lines of copies between hosts that fell back to an upload from shipdeck."""
    return [
        e.text
        for e in rec.of("log")
        if e.key.endswith("/upload") and "; uploading directly" in e.text
    ]


def leftovers(fleet) -> list[str]:
    """What a peer copy could leave on a host: a key folder, a key line, a .part."""
    found = []
    for h in fleet.hosts:
        app = h.home / "app"
        found += [str(p) for p in app.glob(".shipdeck-peer.*")]
        found += [str(p) for p in (app / "artifacts").glob("*.part")]
        keys = h.home / ".ssh" / "authorized_keys"
        if keys.exists() and "shipdeck-peer" in keys.read_text():
            found.append(str(keys))
        if (h.home / ".ssh").exists():
            found.append(str(h.home / ".ssh"))
    return found


async def test_a_site_behind_a_bastion_gets_the_artifact_across_the_link_once(
    zstd_available, sshd_fleet, sample_repo, tmp_path
) -> None:
    """Through a bastion (behind a counting proxy), one host gets the artifact from
    shipdeck and the others copy it from each other, none serving more than 3; a
    one-file change then crosses the link as one delta."""
    fleet = sshd_fleet(6, bastion=True, user_keys=True)
    add_data(sample_repo, files=4)
    with ThrottledProxy("127.0.0.1", fleet.bastion.port) as link:
        jump = _through(fleet, link)
        cfg = write_config(tmp_path / "s.toml", fleet, sample_repo, ssh_jump=f'"{jump}"')
        config = load_config(cfg)
        result, rec, _ = await run(config)
        assert result.exit_code == 0, result.summary
        first = link.bytes_up
        ts = transfers(rec)
        modes = sorted(t.mode for t in ts.values())
        # one host gets it across the link, the others from each other; a copy that
        # fails on a loaded machine (sshd's MaxStartups, a timeout) falls back to an
        # upload across the link, and says so
        direct = fallbacks(rec)
        assert modes == ["full"] * (1 + len(direct)) + ["peer"] * (5 - len(direct)), (
            modes,
            direct,
        )
        assert modes.count("peer") >= 3, (modes, direct)
        size = next(iter(ts.values())).total
        assert first < (1.3 + len(direct)) * size, (first, size)  # not 6 x the artifact
        served = [t.source for t in ts.values() if t.mode == "peer"]
        assert max(served.count(s) for s in set(served)) <= 3, served
        # the tree says where each host's artifact came from
        details = [
            e.detail for e in rec.of("status") if e.key.endswith("/upload") and e.status == "ok"
        ]
        assert sum(d.startswith("peer from ") for d in details) == 5 - len(direct), details
        summary = result.summary["transfer"]
        assert summary["peer"] == 5 - len(direct)
        assert summary["jump"] == summary["sent"] < (1.1 + len(direct)) * size

        link.reset()
        change_blob(sample_repo, 2)
        result, rec, _ = await run(config)
        assert result.exit_code == 0, result.summary
        modes = sorted(t.mode for t in transfers(rec).values())
        # one host gets the patch across the link and the others copy it from each
        # other; a copy that fails (a loaded machine: sshd's MaxStartups, a timeout)
        # falls back to a delta across the link, and says so
        fell_back = fallbacks(rec)
        assert modes == ["delta"] * (1 + len(fell_back)) + ["peer"] * (5 - len(fell_back)), (
            modes,
            fell_back,
        )
        assert modes.count("peer") >= 1
        assert link.bytes_up < (1 + len(fell_back)) * 2 * MB
        # the hosts that had the previous artifact copied the patch, not the artifact
        details = [
            e.detail for e in rec.of("status") if e.key.endswith("/upload") and e.status == "ok"
        ]
        patched = sum(d.startswith("peer from ") and "(patch)" in d for d in details)
        assert patched == 5 - len(fell_back), details
    for h in fleet.hosts:
        art = artifact_of(h.home)
        assert sha256(art) == art.name.removesuffix(".tar")
        assert current_version(h.home / "app") == "2.2.0"
    assert leftovers(fleet) == []


async def test_a_peer_that_refuses_means_a_direct_upload(sshd_fleet, sample_repo, tmp_path) -> None:
    """The hosts' sshd reads no user key files: every copy between hosts is refused
    and each host falls back to an upload from shipdeck; nothing is left behind."""
    fleet = sshd_fleet(3, bastion=True)
    b = fleet.bastion
    cfg = write_config(tmp_path / "s.toml", fleet, sample_repo, ssh_jump=f'"{b.spec}"')
    result, rec, _ = await run(load_config(cfg))
    assert result.exit_code == 0, result.summary
    ts = transfers(rec)
    assert {t.mode for t in ts.values()} == {"full"}
    assert all(t.jump for t in ts.values())
    logs = [e.text for e in rec.of("log") if e.key.endswith("/upload")]
    assert len([line for line in logs if "uploading directly" in line]) == 2, logs
    for h in fleet.hosts:
        assert current_version(h.home / "app") == "1.0.0"
    assert leftovers(fleet) == []


async def test_a_host_whose_base_is_corrupt_rebuilds_nothing_from_a_peers_patch(
    zstd_available, sshd_fleet, sample_repo, tmp_path
) -> None:
    """One host's copy of the previous artifact was damaged: the patch (from a peer or
    across the link) cannot rebuild the new one there, so that host gets the whole
    artifact instead; the hosts serving the patch go on serving it to the others."""
    fleet = sshd_fleet(4, bastion=True, user_keys=True)
    add_data(sample_repo, files=2)
    b = fleet.bastion
    config = load_config(
        write_config(tmp_path / "s.toml", fleet, sample_repo, ssh_jump=f'"{b.spec}"')
    )
    result, _, _ = await run(config)
    assert result.exit_code == 0, result.summary
    bad = fleet.hosts[3]
    base = artifact_of(bad.home)
    with open(base, "r+b") as f:  # same size, other bytes: only its sha256 tells
        f.seek(base.stat().st_size // 2)
        f.write(b"\0" * 4096)

    change_blob(sample_repo, 1)
    result, rec, _ = await run(config)
    assert result.exit_code == 0, result.summary
    ts = transfers(rec)
    bad_key = next(k for k in ts if f"/{bad.spec}/" in k)
    assert ts[bad_key].mode == "full", ts[bad_key]
    others = sorted(t.mode for k, t in ts.items() if k != bad_key)
    assert others in (["delta", "peer", "peer"], ["delta", "delta", "peer"]), others
    logs = [e.text for e in rec.of("log") if e.key.endswith("/upload")]
    # no serving host was blamed for the damaged base
    assert not [line for line in logs if "copy from" in line and "failed" in line], logs
    for h in fleet.hosts:
        art = artifact_of(h.home)
        assert sha256(art) == art.name.removesuffix(".tar")
        assert current_version(h.home / "app") == "2.1.0"
    assert leftovers(fleet) == []

"""Hosts that are not like the lab's, on real OpenSSH sshd: a BusyBox-only userland,
tcsh and fish logins with noisy dotfiles, a ``mv`` without ``-T``, deploy paths with
a trailing space, a backslash, a space or non-ASCII, and a malicious build output."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.config import load_config
from engine.deploy import Rollback
from engine.localfleet import commit_version
from engine.preflight import preflight
from tests.engine.test_deploy_sshd import run, write_config
from tests.helpers import current, current_version, revisions

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]

BANNER = "Welcome to a noisy host"


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        reason = f"not installed: {', '.join(missing)} (.ci/run installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def _as_user(host, path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    for p in [path, *path.parents]:
        if p == host.home.parent:
            break
        shutil.chown(p, host.user)


def _login_shell(host, shell: str) -> None:
    out = subprocess.run(["usermod", "-s", shell, host.user], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def busybox_only(host) -> None:
    """zsh login whose ~/.zshenv leaves only BusyBox applets on PATH (as on Alpine)."""
    bb = host.home / "bb"
    bb.mkdir()
    busybox = shutil.which("busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True).stdout.split()
    for applet in applets:
        (bb / applet).symlink_to(busybox)
    shutil.chown(bb, host.user)
    _login_shell(host, shutil.which("zsh"))
    _as_user(host, host.home / ".zshenv", f'echo "{BANNER}"\npath=({bb})\nexport PATH\n')


def mv_without_T(host) -> None:
    """A ``mv`` that refuses ``-T`` with a usage message and has BSD's ``-h``."""
    _login_shell(host, shutil.which("zsh"))
    _as_user(
        host,
        host.home / "mvbin" / "mv",
        "#!/bin/sh\n"
        'case "$1" in -T) echo "usage: mv [-f | -i | -n] [-hv] source target" >&2; exit 64 ;;\n'
        '  -h) shift; exec /bin/mv -T "$@" ;; esac\n'
        'exec /bin/mv "$@"\n',
        0o755,
    )
    _as_user(host, host.home / ".zshenv", f"path=({host.home}/mvbin $path)\nexport PATH\n")


def tcsh_noisy(host) -> None:
    _login_shell(host, shutil.which("tcsh"))
    _as_user(host, host.home / ".tcshrc", f'echo "{BANNER}"\nstty -echo\nset prompt="% "\n')


def fish_noisy(host) -> None:
    _login_shell(host, shutil.which("fish"))
    _as_user(
        host,
        host.home / ".config" / "fish" / "config.fish",
        f'echo "{BANNER}"\nstty sane\necho "more noise" >&2\n',
    )


def csh_noisy(host) -> None:
    _login_shell(host, "/bin/csh")
    _as_user(host, host.home / ".cshrc", f'echo "{BANNER}"\nset path = ( /usr/bin /bin )\n')


def bash_login(host) -> None:
    _login_shell(host, shutil.which("bash"))


ODD = {
    "busybox": busybox_only,
    "mv-no-T": mv_without_T,
    "tcsh": tcsh_noisy,
    "fish": fish_noisy,
    "csh": csh_noisy,
    "bash": bash_login,
}


@pytest.fixture
def odd_fleet(sshd_fleet):
    _need("busybox", "zsh", "tcsh", "fish")
    fleet = sshd_fleet(len(ODD))
    if fleet.shared_user:
        pytest.skip("needs root: one login user per host")
    for host, make in zip(fleet.hosts, ODD.values(), strict=True):
        make(host)
    return fleet


async def test_deploy_rollback_and_dry_run_on_odd_hosts(odd_fleet, sample_repo, tmp_path) -> None:
    fleet = odd_fleet
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet, sample_repo))

    result, _, first = await run(config)
    assert result.exit_code == 0, result.summary
    # the BusyBox host has no zstd: its full upload came as gzip, the others' as zstd
    assert first.package is not None
    assert first.package.wire("gzip").is_file() and first.package.wire("zstd").is_file()
    commit_version(sample_repo, "2.0.0")
    result, rec, second = await run(config)
    assert result.exit_code == 0, result.summary
    for name, h in zip(ODD, fleet.hosts, strict=True):
        app = h.home / "app"
        assert current(app) == second.release_id, name
        assert current_version(app) == "2.0.0", name
        assert (h.home / "RUNNING").read_text().strip() == "2.0.0", name
        assert not list(app.glob(".current.tmp.*")), name
        assert not list((app / "artifacts").glob("*.part")), name
        assert f"release={second.release_id}" in revisions(app)[-1], name
        assert not (app / ".shipdeck.lock").exists(), name
    # what the dotfiles printed never reaches the deploy's log or the results
    assert not any(BANNER in str(e.to_json()) for e in rec.events)

    report = await preflight(config, config.all_hosts(), ref="main")
    assert len(report.hosts) == len(ODD)
    for row in report.hosts:
        assert row.ok, row
        assert row.current == second.release_id

    # download (SFTP) from each of them: relative to the deploy path
    from engine.preflight import download

    got = await download(config, config.all_hosts(), "current/VERSION", tmp_path / "dl")
    assert all(ok for ok, _ in got.values()), got
    assert len(list((tmp_path / "dl").rglob("VERSION"))) == len(ODD)

    back = Rollback(config, operator="tester")
    res = await back.run()
    assert res.exit_code == 0, res.summary
    for name, h in zip(ODD, fleet.hosts, strict=True):
        assert current(h.home / "app") == first.release_id, name
        assert (h.home / "RUNNING").read_text().strip() == "1.0.0", name


@pytest.mark.parametrize(
    "path",
    ["app ", "app\\nightly", "my app", "äpp-ü"],
    ids=["trailing-space", "backslash", "space", "non-ascii"],
)
async def test_a_deploy_path_is_used_byte_for_byte(sshd_fleet, sample_repo, tmp_path, path) -> None:
    fleet = sshd_fleet(1)
    if fleet.shared_user:
        pytest.skip("needs root: one login user per host")
    h = fleet.hosts[0]
    toml_path = path.replace("\\", "\\\\")
    cfg = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo)
    cfg.write_text(cfg.read_text().replace('path = "app"', f'path = "{toml_path}"'))
    config = load_config(cfg)
    result, _, first = await run(config)
    assert result.exit_code == 0, result.summary
    commit_version(sample_repo, "2.0.0")
    result, _, second = await run(config)
    assert result.exit_code == 0, result.summary
    app = h.home / path
    assert current(app) == second.release_id
    assert not (app / ".shipdeck.lock").exists()
    # nothing was made anywhere else (no "app" beside "app ", no "app" + newline + "ightly")
    made = {p.name for p in h.home.iterdir() if not p.name.startswith(".")} - {"RUNNING"}
    assert made == {path}
    back = await Rollback(config, operator="tester").run()
    assert back.exit_code == 0, back.summary
    assert current(app) == first.release_id


def test_a_deploy_path_with_a_newline_is_refused_where_it_is_written(tmp_path) -> None:
    from engine.config import ConfigError

    cfg = tmp_path / "shipdeck.toml"
    cfg.write_text(
        '[project]\nname = "w"\nrepo = "."\n[deploy]\npath = "app\\nx"\n[hosts]\nweb = ["h"]\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert f"{cfg}:5: [deploy] path:" in text and "control characters" in text


async def test_a_malicious_build_output_writes_nothing_outside(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    """A build output with a symlink named like shipdeck's release marker, and a
    symlinked parent of a shared entry: refused at package time with a clear error;
    files outside the deploy path stay byte-identical."""
    fleet = sshd_fleet(1)
    h = fleet.hosts[0]
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_text("precious\n")
    (outside / "dir" / "data").write_text("precious too\n")
    for p in [outside, *outside.rglob("*")]:  # the deploy user could write them
        shutil.chown(p, h.user)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}

    for evil, shared in (
        (f"ln -s {outside}/file dist/.shipdeck-release", '["log"]'),
        (f"rm -rf dist/log; ln -s {outside}/dir dist/log", '["log/app"]'),
        ("ln -s ../../../../../../../../etc dist/etc", '["log"]'),
    ):
        (sample_repo / "build.sh").write_text(
            (sample_repo / "build.sh").read_text().split("# evil")[0] + f"# evil\n{evil}\n"
        )
        commit_version(sample_repo, f"evil-{len(evil)}")
        config = load_config(
            write_config(tmp_path / "shipdeck.toml", fleet, sample_repo, shared=shared)
        )
        result, rec, _ = await run(config)
        assert result.exit_code != 0
        text = " ".join(str(e.to_json()) for e in rec.events)
        assert "outside the release" in text or "a name shipdeck writes" in text, text[-2000:]
        assert not (h.home / "app" / "current").exists()
    after = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    assert after == before
    assert not (outside / "dir").is_symlink() and (outside / "file").read_text() == "precious\n"


@pytest.mark.parametrize("shell", ["/bin/sh", "busybox sh", "bash"])
def test_the_session_runs_framed_scripts_exactly_under_any_sh(shell: str) -> None:
    """The loop itself, under dash, BusyBox ash and bash, with scripts full of what
    shells like to interpret; bytes after a script are never swallowed by it."""
    from engine.session import BOOT, loader

    _need(shell.split()[0])
    inner = BOOT.split("'")[1]
    assert "\n" not in BOOT and "\\" not in inner and "!" not in BOOT
    scripts = [
        "printf '%s\\n' 'a\\nb' \"$HOME\" '$x' \"it's\"",
        "cat; echo after-cat",  # stdin is /dev/null: never the next script
        "",
        "x='multi\nline'; printf '%s|' \"$x\"; echo",
    ]
    stdin = loader("tok")
    for s in scripts:
        body = s + "\n"
        stdin += f"SD2 tok {body.count(chr(10))}\n".encode() + body.encode()
    out = subprocess.run(
        [*shell.split(), "-c", inner],
        input=stdin,
        capture_output=True,
        timeout=30,
        env={"HOME": "/h", "PATH": os.environ["PATH"]},
    )
    lines = [x for x in out.stdout.decode().split("\n") if x]
    assert lines[0].startswith("\x1eready tok ")
    assert lines[1:] == [
        "a\\nb",
        "/h",
        "$x",
        "it's",
        "\x1edone tok 0",
        "after-cat",
        "\x1edone tok 0",
        "\x1edone tok 0",
        "multi",
        "line|",
        "\x1edone tok 0",
    ], lines


async def test_a_host_without_tar_is_told_what_is_missing(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    _need("busybox", "zsh")
    fleet = sshd_fleet(1)
    if fleet.shared_user:
        pytest.skip("needs root: one login user per host")
    h = fleet.hosts[0]
    busybox_only(h)
    (h.home / "bb" / "tar").unlink()
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet, sample_repo))
    report = await preflight(config, config.all_hosts(), ref="main")
    assert "this host lacks: tar" in report.hosts[0].error
    result, _, _ = await run(config)
    assert result.exit_code != 0
    assert "this host lacks: tar" in result.summary["failures"][h.spec]
    assert not (h.home / "app" / ".shipdeck.lock").exists()


async def test_heartbeat_and_abort_reach_every_login_shell(
    odd_fleet, sample_repo, tmp_path
) -> None:
    """The lock heartbeat and an abort's kill run on their own channels: through tcsh,
    csh and fish too (csh has no ``2>``), they must reach /bin/sh unchanged."""
    import asyncio
    import json

    from engine.remote.lock import heartbeat_script
    from engine.session import BOOT, loader
    from engine.ssh import Connector

    fleet = odd_fleet
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet, sample_repo))
    connector = Connector(config.ssh, config.base_dir)
    try:
        for spec, h in zip(config.all_hosts(), fleet.hosts, strict=True):
            lock = h.home / "app" / ".shipdeck.lock"
            lock.mkdir(parents=True)
            (lock / "owner").write_text(json.dumps({"operator": "t", "deploy_id": "d-1"}) + "\n")
            for p in (lock.parent, lock, lock / "owner"):
                shutil.chown(p, h.user)
            host = await connector.connect(spec)
            res = await host.conn.run(
                BOOT, input=loader("hb", heartbeat_script("app", "d-1")).decode(), check=False
            )
            assert "hb=ok" in str(res.stdout), (spec.name, res.stdout, res.stderr)
            assert (lock / "hb").read_text().strip().isdigit()
            running = asyncio.ensure_future(host.run("sleep 77; echo never"))
            while not _sleeps(h.user, "sleep 77"):
                await asyncio.sleep(0.05)
            assert await host.interrupt()
            with pytest.raises(Exception):  # noqa: B017 - the session ended under it
                await asyncio.wait_for(running, 10)
            assert _sleeps(h.user, "sleep 77") == [], spec.name
    finally:
        await connector.close()


def _sleeps(user: str, what: str) -> list[str]:
    out = subprocess.run(["ps", "-u", user, "-o", "args="], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.startswith(what)]

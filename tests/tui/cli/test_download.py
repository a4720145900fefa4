"""`shipdeck download`: a relative path is under the deploy path, `~/...` under the login
home, an absolute path as given; on the local fleet and on real OpenSSH hosts."""

from __future__ import annotations

import pytest

from engine.config import load_config
from engine.preflight import remote_path, shown_path
from tests.tui.cli.helpers import shipdeck

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(
    ("deploy_path", "remote", "expected"),
    [
        ("app", "shared/log/app.log", "app/shared/log/app.log"),
        ("~/srv/app", "shared/log/app.log", "srv/app/shared/log/app.log"),
        ("~", "shared/log/app.log", "shared/log/app.log"),
        ("/srv/web", "shared/log/app.log", "/srv/web/shared/log/app.log"),
        ("/srv/web", "current/REVISION", "/srv/web/current/REVISION"),
        ("/srv/web", "/var/log/syslog", "/var/log/syslog"),
        ("/srv/web", "~/.bash_history", ".bash_history"),
        ("~/srv/app ", "revisions.log", "srv/app /revisions.log"),
    ],
)
def test_remote_path(deploy_path: str, remote: str, expected: str) -> None:
    assert remote_path(deploy_path, remote) == expected


@pytest.mark.parametrize("remote", ["", "~", "shared/log/", ".", "current/..", "a\0b"])
def test_remote_path_refuses_what_is_not_a_file(remote: str) -> None:
    with pytest.raises(ValueError, match="download: "):
        remote_path("app", remote)


def test_shown_path() -> None:
    assert shown_path("app/shared/log/app.log") == "~/app/shared/log/app.log"
    assert shown_path("/srv/web/revisions.log") == "/srv/web/revisions.log"


async def test_download_is_relative_to_the_deploy_path(fleet, fleet_config, tmp_path) -> None:
    config = fleet_config()  # deploy.path = "app", under each host's home
    for h in fleet.hosts:
        log = h.home / "app" / "shared" / "log"
        log.mkdir(parents=True)
        (log / "app.log").write_text(f"app log of {h.name}\n")
        (h.home / "app.log").write_text("a decoy in the home\n")
    dest = tmp_path / "logs"
    code, out, err = await shipdeck(
        "download", "-c", str(config.path), "shared/log/app.log", "--dest", str(dest)
    )
    assert code == 0, out + err
    assert out.splitlines()[0] == (
        f"download ~/app/shared/log/app.log from 3 host(s) into {dest}/<host>/"
    )
    for h in fleet.hosts:
        assert (dest / h.name / "app.log").read_text() == f"app log of {h.name}\n"
        assert f"✓ {h.name}: {dest / h.name / 'app.log'}" in out

    # an absolute path is taken as it is
    target = fleet.host("host2").home / "app" / "shared" / "log" / "app.log"
    code, out, err = await shipdeck(
        "download", "-c", str(config.path), str(target), "--dest", str(tmp_path / "abs"),
        "--hosts", "host2",
    )  # fmt: skip
    assert code == 0, out + err
    assert (tmp_path / "abs" / "host2" / "app.log").read_text() == "app log of host2\n"


async def test_download_a_missing_file_names_it(fleet, fleet_config, tmp_path) -> None:
    config = fleet_config()
    code, out, _ = await shipdeck(
        "download", "-c", str(config.path), "shared/log/none.log", "--dest", str(tmp_path)
    )
    assert code == 3  # no host had it
    assert "✗ host1: app/shared/log/none.log: no such file" in out


@pytest.mark.sshd
async def test_download_on_real_sshd_hosts(sshd_fleet, sample_repo, tmp_path) -> None:
    from tests.engine.test_deploy_sshd import write_config

    fleet = sshd_fleet(2)
    config = load_config(write_config(tmp_path / "shipdeck.toml", fleet, sample_repo))
    code, out, err = await shipdeck("deploy", "-c", str(config.path), "--headless")
    assert code == 0, out + err
    for h in fleet.hosts:  # what the running app would have written
        (h.home / "app" / "shared" / "log" / "app.log").write_text(f"served by {h.name}\n")
    dest = tmp_path / "logs"
    code, out, err = await shipdeck(
        "download", "-c", str(config.path), "shared/log/app.log", "--dest", str(dest)
    )
    assert code == 0, out + err
    for h in fleet.hosts:
        assert (dest / h.spec / "app.log").read_text() == f"served by {h.name}\n"

    # the deploy's own record, by a path through `current` and by an absolute path
    code, out, err = await shipdeck(
        "download", "-c", str(config.path), "revisions.log", "--dest", str(tmp_path / "rev")
    )
    assert code == 0, out + err
    h1 = fleet.hosts[0]
    assert "outcome=ok" in (tmp_path / "rev" / h1.spec / "revisions.log").read_text()
    code, out, err = await shipdeck(
        "download", "-c", str(config.path), str(h1.home / "app" / "current" / "VERSION"),
        "--dest", str(tmp_path / "abs"), "--hosts", h1.spec,
    )  # fmt: skip
    assert code == 0, out + err
    assert (tmp_path / "abs" / h1.spec / "VERSION").read_text().strip() == "1.0.0"


async def test_download_from_every_host(fleet, fleet_config, tmp_path) -> None:
    config = fleet_config()
    for h in fleet.hosts[:2]:
        (h.home / "app.log").write_text(f"log of {h.name}\n")
    code, out, _ = await shipdeck(
        "download", "-c", str(config.path), "~/app.log", "--dest", str(tmp_path / "logs")
    )
    assert code == 1  # host3 has no such file
    assert (tmp_path / "logs" / "host1" / "app.log").read_text() == "log of host1\n"
    assert "✗ host3: app.log: no such file" in out


def test_download_with_unknown_hosts_pattern_is_a_usage_error(tmp_path) -> None:
    from tui.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[project]\nname = "x"\nrepo = "/nonexistent"\n[deploy]\npath = "app"\n'
        '[hosts]\nweb = ["a.example"]\n'
    )
    assert main(["download", "-c", str(cfg), "--hosts", "nomatch", "log.txt"]) == 2

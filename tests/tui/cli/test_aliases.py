"""`[aliases]` on real OpenSSH hosts: `shipdeck console` runs the saved command line
(with -c FILE and extra words), aliases are listed in --help, and an alias never
shadows a built-in command."""

from __future__ import annotations

import pytest

from tests.engine.test_deploy_sshd import write_config
from tests.tui.cli.helpers import shipdeck

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def _with_aliases(path, *lines: str):
    path.write_text(path.read_text() + "[aliases]\n" + "".join(f"{li}\n" for li in lines))
    return path


async def test_alias_runs_its_command_line(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(2)
    h1, h2 = fleet.hosts
    config = _with_aliases(
        write_config(tmp_path / "fleet.toml", fleet, sample_repo),
        f"console = 'exec --cwd \"~\" --hosts {h1.spec} -- echo console on'",
    )
    code, out, err = await shipdeck("console", "-c", str(config), "web1", "now")
    assert code == 0, out + err
    assert f"{h1.spec} | console on web1 now" in out and h2.spec not in out

    # the default config in the working directory, and --help lists the aliases
    (tmp_path / "shipdeck.toml").write_text(config.read_text())
    code, out, err = await shipdeck("console", cwd=tmp_path)
    assert code == 0 and f"{h1.spec} | console on" in out, out + err
    code, out, _ = await shipdeck("--help", cwd=tmp_path)
    assert code == 0
    assert "aliases (from shipdeck.toml):" in out
    assert f"console  exec --cwd '~' --hosts {h1.spec} -- echo console on" in out

    code, _, err = await shipdeck("consol", cwd=tmp_path)  # neither a command nor an alias
    assert code == 2 and "invalid choice: 'consol'" in err


async def test_an_alias_never_shadows_a_built_in(tmp_path, sample_repo, sshd_fleet) -> None:
    fleet = sshd_fleet(1)
    base = write_config(tmp_path / "fleet.toml", fleet, sample_repo).read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(base + '[aliases]\nup = "exec -- uptime"\nstatus = "exec -- true"\n')
    line = len(base.splitlines()) + 3
    for argv in (["up", "-c", str(bad)], ["status", "-c", str(bad)]):
        code, out, err = await shipdeck(*argv)
        assert code == 2 and out == ""
        assert err.strip() == (
            f"shipdeck: {bad}:{line}: [aliases] status: alias 'status' shadows the built-in"
            " command `shipdeck status`; rename it"
        )
    bad.write_text(base + '[aliases]\nup = "uptime -p"\n')
    code, _, err = await shipdeck("up", "-c", str(bad))
    assert code == 2 and "alias 'up' runs 'uptime', which is not a shipdeck command" in err

"""One shipdeck.toml for staging and production, as an operator uses it: `-e NAME`,
`SHIPDECK_ENV`, the default environment, labelled hosts chosen with `--hosts role=web`;
the environment recorded in history, the transcript and revisions.log. Local fleet,
real subprocesses; one deploy on real OpenSSH hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import load_config
from engine.deploy import Deployment
from engine.history import History
from tests.engine.test_deploy_sshd import write_config
from tests.helpers import current, revisions
from tests.tui.cli.helpers import shipdeck

pytestmark = pytest.mark.timeout(120)

ENVS = """
[env.staging]
default = true

[env.staging.hosts]
web = [{ host = "host1", labels = { role = "web", az = "a" } }]

[env.production.hosts]
web = [
  { host = "host2", labels = { role = "web", az = "a" } },
  { host = "host3", labels = { role = "web", az = "b" } },
]
worker = [{ host = "host1", labels = { role = "worker" } }]

[env.production.deploy]
keep_releases = 4
"""


@pytest.fixture
def envs_config(fleet, sample_repo, tmp_path) -> Path:
    path = fleet.write_config(tmp_path / "shipdeck.toml", sample_repo)
    path.write_text(path.read_text() + ENVS)
    return path


async def test_deploy_to_an_environment_chosen_by_flag_and_labels(fleet, envs_config) -> None:
    code, out, err = await shipdeck(
        "deploy", "-c", str(envs_config), "-e", "production", "--hosts", "role=web,az=b", "--headless"
    )
    assert code == 0, out + err
    assert "OK: 1/1 hosts ok" in out
    app = {h.name: h.home / "app" for h in fleet.hosts}
    assert current(app["host3"]) and not current(app["host2"]) and not current(app["host1"])
    last = revisions(app["host3"])[-1]
    assert " deploy=" in last and last.endswith(" env=production")
    row = History().list(1)[0]
    assert row["env"] == "production"
    transcript = History().transcript(row["id"]).read_text().splitlines()
    plan = json.loads(transcript[0])
    assert plan["type"] == "plan" and plan["meta"]["env"] == "production"

    # the default environment, and SHIPDECK_ENV over it
    code, out, err = await shipdeck("deploy", "-c", str(envs_config), "--headless")
    assert code == 0, out + err
    assert current(app["host1"]) and revisions(app["host1"])[-1].endswith(" env=staging")
    code, out, err = await shipdeck(
        "deploy", "-c", str(envs_config), "--headless", "--hosts", "worker", env={"SHIPDECK_ENV": "production"}
    )
    assert code == 0, out + err
    assert revisions(app["host1"])[-1].endswith(" env=production")


async def test_status_takes_the_environment_and_a_selector(fleet, envs_config) -> None:
    code, out, err = await shipdeck(
        "status", "-c", str(envs_config), "--env", "production", "--hosts", "az=a", "--json"
    )
    assert code == 0, out + err
    assert "host2" in out and "host3" not in out


async def test_environment_mistakes_exit_2_naming_file_and_environment(envs_config) -> None:
    code, _, err = await shipdeck("deploy", "-c", str(envs_config), "-e", "prodution", "--headless")
    assert code == 2
    assert err.strip() == (
        f"shipdeck: {envs_config}: -e prodution: no environment 'prodution' (did you mean "
        "'production'? environments: staging, production)"
    )
    code, _, err = await shipdeck("status", "-c", str(envs_config), env={"SHIPDECK_ENV": "qa"})
    assert code == 2 and "SHIPDECK_ENV qa: no environment 'qa'" in err
    envs_config.write_text(envs_config.read_text().replace("default = true\n", ""))
    code, _, err = await shipdeck("exec", "-c", str(envs_config), "--", "true")
    assert code == 2
    assert "[env]: 2 environments (staging, production) and none chosen: pass -e NAME" in err
    code, _, err = await shipdeck("deploy", "-c", str(envs_config), "-e", "production", "--hosts", "role=db", "--headless")
    assert code == 2
    assert "--hosts 'role=db' matches no host (groups: web, worker; labels: az=a|b; role=web|worker) (environment 'production')" in err


@pytest.mark.sshd
async def test_an_environment_deploys_to_its_own_real_hosts(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(2)
    path = write_config(tmp_path / "shipdeck.toml", fleet, sample_repo, hosts=["nowhere.invalid"])
    h1, h2 = (h.spec for h in fleet.hosts)
    path.write_text(
        path.read_text()
        + f'[env.production.hosts]\nweb = [{{ host = "{h1}", labels = {{ az = "a" }} }}, "{h2}"]\n'
    )
    config = load_config(path, "production")
    d = Deployment(config, hosts="az=a")
    assert (await d.run()).exit_code == 0
    first, second = (h.home / "app" for h in fleet.hosts)
    assert current(first) == d.release_id and current(second) is None
    assert revisions(first)[-1].endswith(" env=production")
    assert History().get(d.deploy_id)["env"] == "production"

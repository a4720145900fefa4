"""[env.<name>] tables: one file for staging and production; which one is read, how it
overrides the top level, and errors that name the environment, file, line and key."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, parse_config

BASE = """
[project]
name = "web"
repo = "/srv/git/web.git"

[deploy]
path = "/srv/web"
keep_releases = 3
batches = ["1", "100%"]

[ssh]
user = "deploy"

[hosts]
web = ["localhost"]

[relay]
url = "ws://relay.example:8765"
room = "web"

[aliases]
console = "exec -- ./bin/console"
"""

ENVS = """
[env.staging]
default = true
hosts = { web = ["stage1", "stage2"] }
relay.room = "web-staging"

[env.production]
ssh.port = 2200

[env.production.hosts]
web = ["web1", "web2:2222"]
db = ["db1"]

[env.production.deploy]
keep_releases = 10

[env.production.aliases]
tail = "logs log/app.log"
"""


def config(text: str, env: str | None = None, **kw):
    return parse_config(text, "conf/shipdeck.toml", env, **kw)


def error(text: str, env: str | None = None, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        config(text, env, **kw)
    return str(e.value)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_a_file_without_environments_reads_as_before() -> None:
    c = config(BASE)
    assert c.env is None and c.relay.room == "web" and c.deploy.keep_releases == 3


def test_an_environment_overrides_tables_key_by_key_and_hosts_whole() -> None:
    text = BASE + ENVS
    prod = config(text, "production")
    assert prod.env == "production"
    assert prod.deploy.keep_releases == 10 and prod.deploy.path == "/srv/web"
    assert prod.deploy.batches == ("1", "100%")
    assert (prod.ssh.port, prod.ssh.user) == (2200, "deploy")
    assert sorted(prod.hosts) == ["db", "web"]
    assert [h.name for h in prod.all_hosts()] == ["web1", "web2:2222", "db1"]
    assert prod.relay.room == "web"
    assert prod.aliases == {"console": "exec -- ./bin/console", "tail": "logs log/app.log"}

    staging = config(text, "staging")
    assert [h.name for h in staging.all_hosts()] == ["stage1", "stage2"]
    assert staging.relay.room == "web-staging" and staging.relay.url == "ws://relay.example:8765"
    assert staging.deploy.keep_releases == 3 and staging.ssh.port is None


def test_the_default_environment_is_read_when_none_is_asked_for() -> None:
    assert config(BASE + ENVS).env == "staging"


def test_the_only_environment_is_read_without_a_default() -> None:
    assert config(BASE + '[env.production]\nssh.port = 2200\n').env == "production"


def test_several_environments_and_none_chosen_is_an_error_naming_them() -> None:
    text = BASE + ENVS.replace("default = true\n", "")
    assert error(text) == (
        f"conf/shipdeck.toml:{line_of(text, '[env.staging]')}: [env]: 2 environments "
        "(staging, production) and none chosen: pass -e NAME, set SHIPDECK_ENV, or mark "
        "one with default = true"
    )


def test_two_defaults_are_an_error_at_the_second() -> None:
    text = BASE + ENVS.replace("[env.production]\n", "[env.production]\ndefault = true\n")
    line = line_of(text, "[env.production]") + 1
    assert error(text) == (
        f"conf/shipdeck.toml:{line}: [env.production] default: environments 'staging', "
        "'production' are all marked default = true; mark one"
    )


def test_an_unknown_environment_says_did_you_mean_and_who_asked() -> None:
    text = BASE + ENVS
    assert error(text, "prodution") == (
        "conf/shipdeck.toml: -e prodution: no environment 'prodution' (did you mean "
        "'production'? environments: staging, production)"
    )
    msg = error(text, "qa", env_source="SHIPDECK_ENV")
    assert msg.startswith("conf/shipdeck.toml: SHIPDECK_ENV qa: no environment 'qa'")
    assert "asked for, but the file has no [env.<name>] tables" in error(BASE, "production")


def test_a_bad_value_in_an_environment_names_its_table_key_and_line() -> None:
    text = BASE + ENVS.replace("keep_releases = 10", "keep_releases = 1")
    line = line_of(text, "keep_releases = 1")
    assert error(text, "production") == (
        f"conf/shipdeck.toml:{line}: [env.production.deploy] keep_releases: expected a number >= 2, got 1"
    )
    text = BASE + ENVS.replace('relay.room = "web-staging"', "relay.room = 7")
    assert error(text, "staging") == (
        f"conf/shipdeck.toml:{line_of(text, 'relay.room = 7')}: [env.staging.relay] room: "
        "expected a string, got int 7"
    )
    text = BASE + ENVS.replace('db = ["db1"]', 'db = ["db1:99999"]')
    msg = error(text, "production")
    assert msg.startswith(f"conf/shipdeck.toml:{line_of(text, 'db1:99999')}: [env.production.hosts] db[0]:")


def test_a_top_level_value_read_for_an_environment_says_which() -> None:
    text = BASE.replace('user = "deploy"', 'user = 5') + ENVS
    assert error(text, "production") == (
        f"conf/shipdeck.toml:{line_of(text, 'user = 5')}: [ssh] user: expected a string, "
        "got int 5 (environment 'production')"
    )


def test_a_required_key_missing_from_an_environment_names_it() -> None:
    text = BASE.replace('path = "/srv/web"\n', "") + ENVS
    assert error(text, "production") == (
        f"conf/shipdeck.toml:{line_of(text, '[env.production.deploy]')}: "
        "[env.production.deploy]: missing required key 'path'"
    )


def test_an_unknown_section_of_an_environment_says_did_you_mean() -> None:
    text = BASE + ENVS + "[env.production.deplyo]\nparallel = 2\n"
    assert error(text, "staging") == (
        f"conf/shipdeck.toml:{line_of(text, '[env.production.deplyo]')}: "
        "[env.production.deplyo]: unknown section (did you mean [env.production.deploy]?)"
    )
    text = BASE + "[env.production]\ndefault = 1\n"
    assert error(text).endswith("[env.production] default: expected true or false, got int 1")
    assert "[envs]: unknown section (did you mean [env]?)" in error(BASE + "[envs.x]\n")

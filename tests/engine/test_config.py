"""Config validation: every error names the file, the key (and line) and what is expected;
the README's config table is the one the key declarations generate."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from engine.config import (
    BuildConfig,
    ConfigError,
    DeployConfig,
    ProjectConfig,
    SshConfig,
    load_config,
    markdown_table,
    parse_config,
    parse_host,
    split_waves,
)

GOOD = """
[project]
name = "web"
repo = "/srv/git/web.git"
ref = "main"

[build]
commands = ["make dist"]
artifact = "dist"

[deploy]
path = "/srv/web"
keep_releases = 5
parallel = 20
batches = ["1", "25%", "100%"]
max_fail = "10%"
shared = ["log", ".env"]
before_activate = ["./bin/migrate --check"]
after_activate = ["sudo systemctl restart web"]
health = "curl -fsS http://127.0.0.1:8080/health"
health_timeout = 30

[ssh]
user = "deploy"
port = 22
identity = "~/.ssh/id_ed25519"
jump = "bastion.example.com"
host_key_policy = "strict"
known_hosts = "~/.ssh/known_hosts"
config = "~/.ssh/config"
password_env = "DEPLOY_PASSWORD"
max_startups = 8
connect_timeout = 10

[hosts]
web = ["web1.example.com", "web2.example.com:2222"]
db = ["admin@db1:2200", "web1.example.com"]

[relay]
url = "wss://relay.example.com:8765"
room = "web-prod"
token_env = "SHIPDECK_TOKEN"
"""


def err(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "conf/shipdeck.toml")
    return str(info.value)


def test_design_example_parses() -> None:
    c = parse_config(GOOD, "shipdeck.toml")
    assert c.project.name == "web"
    assert c.deploy.batches == ("1", "25%", "100%")
    assert c.ssh.jump == "bastion.example.com"
    assert [h.name for h in c.all_hosts()] == [
        "web1.example.com",
        "web2.example.com:2222",
        "admin@db1:2200",
    ]
    web2 = c.all_hosts()[1]
    assert (web2.host, web2.port, web2.user) == ("web2.example.com", 2222, None)
    db1 = c.all_hosts()[2]
    assert (db1.host, db1.port, db1.user) == ("db1", 2200, "admin")
    assert c.relay is not None and c.relay.room == "web-prod"


def test_select_hosts_by_group_and_glob() -> None:
    c = parse_config(GOOD)
    assert [h.name for h in c.select_hosts("db")] == ["web1.example.com", "admin@db1:2200"]
    assert [h.name for h in c.select_hosts("web2*")] == ["web2.example.com:2222"]
    assert [h.name for h in c.select_hosts("web,db")] == [h.name for h in c.all_hosts()]
    with pytest.raises(ConfigError, match="matches no group or host"):
        c.select_hosts("nope*")


def test_missing_required_key() -> None:
    text = GOOD.replace('path = "/srv/web"\n', "")
    assert err(text).startswith("conf/shipdeck.toml:")
    assert "[deploy]" in err(text) and "missing required key 'path'" in err(text)


def test_missing_section() -> None:
    text = GOOD.split("[hosts]")[0]
    assert "missing section [hosts]" in err(text)


def test_unknown_key_suggests_nearest_and_gives_line() -> None:
    text = GOOD.replace("keep_releases = 5", "keep_release = 5")
    msg = err(text)
    line = text.splitlines().index("keep_release = 5") + 1
    assert (
        msg
        == f"conf/shipdeck.toml:{line}: [deploy] keep_release: unknown key (did you mean 'keep_releases'?)"
    )


def test_unknown_section() -> None:
    assert "unknown section (did you mean [deploy]?)" in err(GOOD + "\n[deplyo]\nx = 1\n")


def test_wrong_type() -> None:
    msg = err(GOOD.replace("parallel = 20", 'parallel = "20"'))
    assert "[deploy] parallel: expected an integer, got str '20'" in msg
    msg = err(GOOD.replace("rollback", "x").replace("keep_releases = 5", "keep_releases = true"))
    assert "keep_releases: expected an integer" in msg


def test_bad_percentage() -> None:
    msg = err(GOOD.replace('"25%"', '"25 percent"'))
    assert '[deploy] batches[1]: "25 percent" is not a count or a percentage' in msg
    assert "is more than 100%" in err(GOOD.replace('max_fail = "10%"', 'max_fail = "150%"'))
    assert "empty wave" in err(GOOD.replace('"25%"', '"0"'))


def test_empty_host_list() -> None:
    msg = err(GOOD.replace('db = ["admin@db1:2200", "web1.example.com"]', "db = []"))
    assert "[hosts] db: empty host list" in msg
    assert (
        ":" + str(GOOD.splitlines().index('db = ["admin@db1:2200", "web1.example.com"]') + 1) + ":"
        in msg
    )


def test_bad_host_syntax() -> None:
    msg = err(GOOD.replace('"web2.example.com:2222"', '"web2:99999"'))
    assert "[hosts] web[1]" in msg and "out of range" in msg
    msg = err(GOOD.replace('"web2.example.com:2222"', '"we b2"'))
    assert "is not a host (expected host, host:port or user@host:port)" in msg


def test_bad_policy_and_toml_syntax() -> None:
    assert 'expected "strict" or "accept-new"' in err(GOOD.replace('"strict"', '"yolo"'))
    msg = err(GOOD.replace('ref = "main"', "ref = main"))
    assert msg.startswith("conf/shipdeck.toml:5: invalid TOML")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_parse_host_forms() -> None:
    assert parse_host("web1").host == "web1"
    assert parse_host("[::1]:2222").port == 2222
    with pytest.raises(ValueError):
        parse_host("a@b@c")


def test_waves_follow_design() -> None:
    c = parse_config(GOOD)
    hosts = [parse_host(f"h{i}") for i in range(10)]
    waves = split_waves(hosts, c.deploy.batches)
    assert [len(w) for w in waves] == [1, 3, 6]  # 1, ceil(25% of 10), rest
    assert [len(w) for w in split_waves(hosts, ("2", "3"))] == [2, 8]  # last wave takes the rest
    assert [len(w) for w in split_waves(hosts[:1], ("1", "25%", "100%"))] == [1]


MINIMAL = """
[project]
name = "web"
repo = "/srv/git/web.git"

[deploy]
path = "/srv/web"

[hosts]
web = ["web1"]
"""


def readme_config_table() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Config reference\n", 1)[1]
    start = section.index("| key | default | meaning |")
    return section[start : section.index("\n\n", start) + 1]


def test_readme_config_table_is_the_generated_one() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine.config", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out == markdown_table()
    assert readme_config_table() == out, (
        "the README's config table is stale: paste `python -m engine.config --markdown` into it"
    )


def test_table_has_every_key_with_its_default() -> None:
    rows = dict(
        (cells[1].strip("` "), cells[2].strip())
        for cells in (line.split("|") for line in markdown_table().splitlines()[2:])
    )
    for section, cls in [("project", ProjectConfig), ("deploy", DeployConfig), ("ssh", SshConfig)]:
        assert all(f"{section}.{f.name}" in rows for f in fields(cls))
    assert rows["deploy.health_timeout"] == "30"
    assert rows["deploy.batches"] == '`["100%"]`'
    assert rows["deploy.path"] == rows["hosts.<group>"] == "required"
    assert rows["relay.url"] == "required in [relay]"


def test_absent_keys_take_the_declared_defaults() -> None:
    c = parse_config(MINIMAL)
    assert c.project == ProjectConfig(name="web", repo="/srv/git/web.git")
    assert c.project.ref == "main"
    assert c.deploy == DeployConfig(path="/srv/web")
    assert (c.deploy.health_timeout, c.deploy.batches, c.deploy.max_fail) == (
        30.0,
        ("100%",),
        "100%",
    )
    assert c.build == BuildConfig() and c.ssh == SshConfig() and c.relay is None
    assert (c.ssh.dead_after, c.ssh.keepalive, c.ssh.config) == (20.0, None, "~/.ssh/config")


def test_given_values_are_converted_as_before() -> None:
    text = MINIMAL.replace(
        'path = "/srv/web"', 'path = "/srv/web"\nhealth_timeout = 5\nmax_fail = 2\nhealth = ""'
    )
    text += '\n[ssh]\nkeepalive = 2\nconfig = ""\n'
    c = parse_config(text)
    assert c.deploy.health_timeout == 5.0 and isinstance(c.deploy.health_timeout, float)
    assert c.deploy.max_fail == "2" and c.deploy.health is None
    # a config that sets only the older keepalive key: dead after 4 unanswered
    assert (c.ssh.keepalive, c.ssh.dead_after, c.ssh.config) == (2.0, 8.0, None)


def test_bounds_and_number_types_name_key_and_line() -> None:
    text = MINIMAL.replace('path = "/srv/web"', 'path = "/srv/web"\nhealth_interval = 0')
    line = text.splitlines().index("health_interval = 0") + 1
    assert err(text) == (
        f"conf/shipdeck.toml:{line}: [deploy] health_interval: expected a number >= 0.01, got 0.0"
    )
    text = MINIMAL.replace('path = "/srv/web"', 'path = "/srv/web"\nhook_timeout = "5m"')
    assert "[deploy] hook_timeout: expected a number, got str '5m'" in err(text)
    assert "[relay] url: expected a ws:// or wss:// URL" in err(
        MINIMAL + '[relay]\nurl = "http://x"\nroom = "r"\n'
    )

"""[hosts] entries with labels, and --hosts: globs and label selectors, one function."""

from __future__ import annotations

import pytest

from engine.config import ConfigError, parse_config
from engine.hosts import NoMatch, parse_selector, select

BASE = """
[project]
name = "web"
repo = "/srv/git/web.git"

[deploy]
path = "/srv/web"
"""

HOSTS = """
[hosts]
web = [
  { host = "web1", labels = { role = "web", az = "a" } },
  { host = "deploy@web2:2222", labels = { role = "web", az = "b" } },
  "web3",
]
db = [{ host = "db1", labels = { role = "db", az = "a" } }, "web3"]
"""


def hosts(text: str = HOSTS):
    return parse_config(BASE + text, "shipdeck.toml")


def names(chosen) -> list[str]:
    return [h.name for h in chosen]


def test_labelled_entries_sit_beside_plain_strings() -> None:
    c = hosts()
    web1, web2, web3, db1 = c.all_hosts()
    assert (web1.name, web1.labels) == ("web1", (("az", "a"), ("role", "web")))
    assert (web2.host, web2.port, web2.user, web2.label("az")) == ("web2", 2222, "deploy", "b")
    assert web3.labels == () and web3.groups == ("web", "db")
    assert db1.label("role") == "db" and db1.groups == ("db",)


def test_label_selectors_and_globs_choose_hosts() -> None:
    c = hosts()
    assert names(c.select_hosts("role=web")) == ["web1", "deploy@web2:2222"]
    assert names(c.select_hosts("role=web,az=a")) == ["web1"]
    assert names(c.select_hosts("az=a")) == ["web1", "db1"]
    assert names(c.select_hosts("az!=a")) == ["deploy@web2:2222", "web3"]
    assert names(c.select_hosts("role=w*")) == ["web1", "deploy@web2:2222"]
    assert names(c.select_hosts("db,web1")) == ["web1", "web3", "db1"]  # globs: any one
    assert names(c.select_hosts("web*,az=b")) == ["deploy@web2:2222"]  # and every label
    assert names(c.select_hosts(None)) == names(c.all_hosts())


def test_a_selector_matching_nothing_says_what_there_is() -> None:
    c = hosts()
    with pytest.raises(ConfigError) as e:
        c.select_hosts("role=cache")
    assert str(e.value) == (
        "shipdeck.toml: hosts: --hosts 'role=cache' matches no host "
        "(groups: db, web; labels: az=a|b; role=web|db)"
    )
    with pytest.raises(ConfigError, match=r"matches no group or host \(groups: db, web; labels"):
        c.select_hosts("cache*")
    with pytest.raises(ConfigError, match="'=web' is not a label selector"):
        c.select_hosts("=web")


def test_the_selector_alone_without_labels_in_the_config() -> None:
    plain = parse_config(BASE + '[hosts]\nweb = ["a", "b"]\n', "x.toml").all_hosts()
    with pytest.raises(NoMatch, match=r"^--hosts 'c' matches no group or host \(groups: web\)$"):
        select(plain, "c")
    assert parse_selector(" web* , role = web ").labels == (("role", "web", True),)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('{ host = "web1", label = { role = "web" } }', "unknown key 'label' (did you mean 'labels'?)"),
        ('{ labels = { role = "web" } }', 'missing host (expected host = "web1"), got None'),
        ('{ host = "web1", labels = { role = 3 } }', "label 'role': expected a non-empty string without ',', got 3"),
        ('{ host = "web1", labels = "web" }', "labels: expected a table like { role = \"web\" }, got 'web'"),
        ('{ host = "web1:99999" }', "port 99999 is out of range"),
        ("7", "expected a host or {"),
    ],
)
def test_a_bad_entry_names_group_index_and_line(entry: str, message: str) -> None:
    text = f'\n[hosts]\nweb = ["web0", {entry}]\n'
    with pytest.raises(ConfigError) as e:
        hosts(text)
    assert str(e.value).startswith(f"shipdeck.toml:{BASE.count(chr(10)) + 3}: [hosts] web[1]: ")
    assert message in str(e.value)


def test_one_host_with_two_values_of_a_label_is_refused() -> None:
    text = '\n[hosts]\nweb = [{ host = "h", labels = { role = "web" } }]\ndb = [{ host = "h", labels = { role = "db" } }]\n'
    with pytest.raises(ConfigError, match=r"\[hosts\] db\[0\]: h: label role='db', but role='web' in another group"):
        hosts(text)


def test_an_environment_brings_its_own_labelled_hosts() -> None:
    text = HOSTS + '\n[env.staging.hosts]\nweb = [{ host = "s1", labels = { role = "web" } }]\n'
    c = parse_config(BASE + text, "x.toml", "staging")
    assert names(c.select_hosts("role=web")) == ["s1"]
    with pytest.raises(ConfigError, match=r"matches no host .*\(environment 'staging'\)"):
        c.select_hosts("role=db")

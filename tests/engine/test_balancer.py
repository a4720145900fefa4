"""The balancer: its config section, HAProxy's runtime API commands beside the parsers
of their answers (on plain strings), and the drain/undrain steps in the plan."""

from __future__ import annotations

import pytest

from engine.balancer import (
    SHOW_STAT,
    ServerStat,
    drains,
    in_maint,
    parse_servers,
    parse_set_state,
    parse_stat,
    set_state_command,
    socket_script,
)
from engine.config import ConfigError, parse_config
from engine.errors import StepFailed
from engine.plan import HOST_STEPS, ROLLBACK_STEPS, build_plan

BASE = """
[project]
name = "web"
repo = "/srv/git/web.git"

[deploy]
path = "/srv/web"
{deploy}

[hosts]
web = ["web1", "web2"]
"""

LB = """
[balancer]
kind = "haproxy"
host = "lb1"
socket = "/run/haproxy/admin.sock"
backend = "web"
server = "{name}"
drain_timeout = 5
"""

# `show stat` as HAProxy 2.6 prints it (columns cut after the ones read, as it allows)
STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,
fe,FRONTEND,,,3,9,1000,120,0,0,0,0,0,,,,,OPEN,
web,web1,0,0,2,5,,60,0,0,,0,,0,0,0,0,DRAIN,
web,web2,0,0,0,4,,60,0,0,,0,,0,0,0,0,no check,
web,BACKEND,0,0,2,9,100,120,0,0,0,0,,0,0,0,0,UP,
"""


def test_balancer_section_parses_with_its_defaults() -> None:
    c = parse_config(BASE.format(deploy="") + LB)
    assert c.balancer is not None
    assert (c.balancer.host, c.balancer.backend, c.balancer.drain_timeout) == ("lb1", "web", 5.0)
    assert c.balancer.drain_timeout_ok is False
    assert drains(c)
    plain = parse_config(BASE.format(deploy=""))
    assert plain.balancer is None and not drains(plain)
    hooks = parse_config(BASE.format(deploy='drain = ["./lb out $SHIPDECK_HOST"]'))
    assert hooks.balancer is None and drains(hooks)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            LB + "drain_timout = 3\n",
            "[balancer] drain_timout: unknown key (did you mean 'drain_timeout'?)",
        ),
        (LB.replace('backend = "web"\n', ""), "[balancer]: missing required key 'backend'"),
        (LB.replace('"{name}"', '"{nmae}"'), "only {name} and {host} may be filled in"),
        (LB.replace('"haproxy"', '"nginx"'), 'expected "haproxy" or "hooks", got \'nginx\''),
        (LB.replace('"lb1"', '"lb1:99999"'), "port 99999 is out of range"),
        (LB.replace("drain_timeout = 5", "drain_timeout = -1"), "expected a number >= 0"),
    ],
)
def test_balancer_errors_name_the_key(section: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.format(deploy="") + section, "shipdeck.toml")
    assert expected in str(info.value)
    assert "shipdeck.toml" in str(info.value)


def test_max_unavailable_is_a_count_or_percentage() -> None:
    c = parse_config(BASE.format(deploy="max_unavailable = 2"))
    assert c.deploy.max_unavailable == "2"
    assert (
        parse_config(BASE.format(deploy='max_unavailable = "25%"')).deploy.max_unavailable == "25%"
    )
    assert parse_config(BASE.format(deploy="")).deploy.max_unavailable is None
    with pytest.raises(ConfigError, match=r"max_unavailable: \"x\" is not a count"):
        parse_config(BASE.format(deploy='max_unavailable = "x"'))


def test_set_state_command_and_its_answer() -> None:
    assert set_state_command("web", "web1", "drain") == "set server web/web1 state drain"
    assert set_state_command("web", "web1", "maint") == "set server web/web1 state maint"
    assert set_state_command("web", "web1", "ready") == "set server web/web1 state ready"
    with pytest.raises(ValueError):
        set_state_command("web", "web1", "down")
    assert parse_set_state("\n") == ""
    assert parse_set_state("No such server.\n\n") == "No such server."


def test_show_stat_row_of_a_server() -> None:
    assert parse_stat(STAT, "web", "web1") == ServerStat("DRAIN", 2)
    assert parse_stat(STAT, "web", "web2") == ServerStat("no check", 0)
    assert parse_stat(STAT, "web", "web9") is None
    assert parse_stat(STAT, "api", "web1") is None
    with pytest.raises(StepFailed, match="Permission denied"):
        parse_stat("Permission denied\n", "web", "web1")


def test_show_stat_servers_of_a_backend_for_maintenance() -> None:
    assert parse_servers(STAT, "web") == {
        "web1": ServerStat("DRAIN", 2),
        "web2": ServerStat("no check", 0),
    }  # FRONTEND and BACKEND rows are not servers
    assert parse_servers(STAT, "api") == {}
    with pytest.raises(StepFailed, match="Unknown command"):
        parse_servers("Unknown command.\n", "web")
    assert in_maint("MAINT") and in_maint("MAINT (via web/web1)")
    assert not in_maint("DRAIN") and not in_maint("no check") and not in_maint("UP")


def test_socket_script_sends_one_line() -> None:
    script = socket_script("/run/haproxy/admin.sock", SHOW_STAT)
    assert "UNIX-CONNECT:/run/haproxy/admin.sock" in script
    assert "'show stat'" in script
    assert "python3 -c" in script  # where socat is missing


def test_plan_has_drain_and_undrain_only_when_asked() -> None:
    plain = build_plan("d1", [["web1"]])
    assert [n.name for n in plain.kids("release/wave-1/web1")] == list(HOST_STEPS)
    drained = build_plan("d1", [["web1"]], drain=True)
    names = [n.name for n in drained.kids("release/wave-1/web1")]
    assert names.index("drain") == names.index("activate") - 1
    assert names.index("undrain") == names.index("health") + 1
    rollback = build_plan("d1", [["web1"]], steps=ROLLBACK_STEPS, drain=True, with_source=False)
    assert [n.name for n in rollback.kids("release/wave-1/web1")] == [
        "connect",
        "lock",
        "drain",
        "activate",
        "restart",
        "health",
        "undrain",
    ]

"""Maintenance mode on a real HAProxy (Debian's haproxy on loopback) in front of real
sshd hosts: every server out of rotation and back, over the balancer connection a
deploy uses; what a run finds when it starts."""

from __future__ import annotations

import http.client
import io

import pytest

from engine.balancer import Balancer
from engine.deploy import Rollback
from engine.errors import ConfigError
from engine.events import OK, MaintenanceChanged
from engine.history import History
from engine.localfleet import commit_version
from engine.maintenance import find, switch
from engine.ssh import Connector
from tests.engine.test_zero_downtime_sshd import (  # noqa: F401
    Site,
    deploy,
    haproxy_available,
    hkey,
)
from tests.haproxy import READY, admin
from tests.helpers import Recorder, current_version
from tui.headless import HeadlessPrinter

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(180)]


@pytest.fixture
def site(haproxy_available, sshd_fleet, tmp_path):  # noqa: F811
    s = Site(sshd_fleet(3), tmp_path)
    yield s
    s.close()


def get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        res = conn.getresponse()
        res.read()
        return res.status
    finally:
        conn.close()


def connector(config):
    return lambda: Connector(config.ssh, config.base_dir)


async def test_on_takes_every_server_out_and_off_puts_them_back(site) -> None:
    config = site.config(balancer_host=site.hosts[0].spec)  # the socket over SSH
    result, _, _ = await deploy(config)  # the apps run
    assert result.exit_code == 0, result.summary
    assert get(site.lb.port) == 200
    history = History()

    done = await switch(
        config, True, by="alice", message="db upgrade", deploy_id="m1", connector=connector(config)
    )
    assert set(site.lb.states().values()) == {"maint"}
    assert get(site.lb.port) == 503  # HAProxy itself answers: nobody is in rotation
    assert done.event.on is True and done.event.by == "alice"
    assert done.event.where == "web: 3/3 servers in MAINT"
    assert set(done.before.values()) == {"no check"}
    history.record_maintenance(done.event, project="web", config="x", detail=done.detail())

    # a run starting now finds it on, with who and why from the record
    found = await find(config, Balancer(config, connector(config)), history, deploy_id="d1")
    assert found is not None and (found.by, found.message) == ("alice", "db upgrade")
    assert found.deploy_id == "d1" and found.where == "web: 3/3 servers in MAINT"

    off = await switch(
        config,
        False,
        by="bob",
        message="done",
        deploy_id="m2",
        connector=connector(config),
        previous=history.last_maintenance("web"),
    )
    assert site.lb.states() == {h.addr: READY for h in site.hosts}
    assert get(site.lb.port) == 200
    assert off.event.where == "web: 3/3 servers back in rotation" and off.kept == []
    history.record_maintenance(off.event, project="web", config="x", detail=off.detail())
    assert await find(config, Balancer(config, connector(config)), history, deploy_id="d2") is None


async def test_off_leaves_out_a_server_that_was_out_before_on(site) -> None:
    config = site.config(balancer_host="local")
    out = site.hosts[1].addr  # e.g. left drained by a failed deploy
    assert admin(site.lb.sock, f"set server web/{out} state maint").strip() == ""
    history = History()
    on = await switch(
        config, True, by="al", message="", deploy_id="m1", connector=connector(config)
    )
    history.record_maintenance(on.event, project="web", config="x", detail=on.detail())
    off = await switch(
        config,
        False,
        by="al",
        message="",
        deploy_id="m2",
        connector=connector(config),
        previous=history.last_maintenance("web"),
    )
    assert off.kept == [out]
    assert site.lb.states() == {h.addr: (READY if h.addr != out else "maint") for h in site.hosts}
    assert f"{out} left in maint (out before maintenance on)" in off.event.where


async def test_maintenance_hooks_run_where_the_balancer_is(site) -> None:
    mark = site.hosts[0].home / "maint"  # the balancer host's home
    hook = 'echo "$SHIPDECK_MAINTENANCE $SHIPDECK_OPERATOR $SHIPDECK_MAINTENANCE_MESSAGE" >> "$HOME/maint"'
    config = site.config(
        balancer_host=site.hosts[0].spec,
        maintenance_on=f"['{hook}']",
        maintenance_off=f"['{hook}']",
    )
    await switch(config, True, by="al", message="why", deploy_id="m1", connector=connector(config))
    done = await switch(
        config, False, by="al", message="", deploy_id="m2", connector=connector(config)
    )
    assert mark.read_text().splitlines() == ["on al why", "off al "]
    assert done.hooks == 1 and done.event.where.endswith("; 1 hook(s)")


async def test_without_adapter_or_hooks_there_is_nothing_to_switch(site) -> None:
    config = site.config()
    with pytest.raises(ConfigError, match="maintenance needs the HAProxy adapter"):
        await switch(config, True, by="al", message="", deploy_id="m", connector=connector(config))
    history = History()
    history.record_maintenance(
        MaintenanceChanged("m0", on=True, by="al"), project="web", config="x"
    )
    assert await find(config, None, history, deploy_id="d") is None  # nothing it could be


async def test_a_deploy_during_maintenance_says_so_and_leaves_every_host_out(site) -> None:
    config = site.config(balancer_host="local")
    result, _, _ = await deploy(config)  # 1.0.0 starts the apps
    assert result.exit_code == 0, result.summary
    history = History()
    on = await switch(
        config, True, by="alice", message="db upgrade", deploy_id="m1", connector=connector(config)
    )
    history.record_maintenance(on.event, project="web", config="x", detail=on.detail())

    commit_version(site.repo, "2.0.0")
    result, rec, d = await deploy(config)
    assert result.exit_code == 0, result.summary  # not refused
    (said,) = rec.of("maintenance")
    assert said.deploy_id == d.deploy_id and said.on is True
    assert (said.by, said.message) == ("alice", "db upgrade")
    # said before any host was touched
    first_host_step = next(
        i for i, e in enumerate(rec.events) if e.type == "status" and e.key.startswith("release/")
    )
    assert rec.events.index(said) < first_host_step
    out = io.StringIO()
    printer = HeadlessPrinter(out)
    for event in rec.events:
        printer(event)
    assert "⚠ maintenance on since" in out.getvalue()
    assert "by alice: db upgrade (web: 3/3 servers in MAINT)" in out.getvalue()
    # released, but nobody went back in rotation
    for h in site.hosts:
        assert current_version(h.home / "app") == "2.0.0"
        host = hkey(d, h.spec)
        assert d.plan[f"{host}/undrain"].status == OK
        assert d.plan[f"{host}/undrain"].detail == "left out of rotation: maintenance is on"
        assert "already (maintenance on)" in d.plan[f"{host}/drain"].detail
    assert set(site.lb.states().values()) == {"maint"}

    # a rollback during maintenance: the same
    rollback = Rollback(config)
    rec = Recorder()
    rollback.subscribe(rec)
    result = await rollback.run()
    assert result.exit_code == 0, result.summary
    assert [e.by for e in rec.of("maintenance")] == ["alice"]
    assert {h.addr: current_version(h.home / "app") for h in site.hosts} == {
        h.addr: "1.0.0" for h in site.hosts
    }
    assert set(site.lb.states().values()) == {"maint"}


async def test_on_twice_then_off_still_puts_every_server_back(site) -> None:
    config = site.config(balancer_host="local")
    history = History()
    for deploy_id in ("m1", "m2"):
        on = await switch(
            config,
            True,
            by="al",
            message="",
            deploy_id=deploy_id,
            connector=connector(config),
            previous=history.last_maintenance("web"),
        )
        history.record_maintenance(on.event, project="web", config="x", detail=on.detail())
    off = await switch(
        config,
        False,
        by="al",
        message="",
        deploy_id="m3",
        connector=connector(config),
        previous=history.last_maintenance("web"),
    )
    assert off.kept == [] and site.lb.states() == {h.addr: READY for h in site.hosts}

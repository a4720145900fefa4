"""Zero-downtime rolling deploys: a real HAProxy (Debian's haproxy, on loopback) in front
of real sshd hosts, each running a small real HTTP app whose restart stops the old
process and starts the new one; load runs through HAProxy during the deploys."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from engine.config import load_config
from engine.deploy import Deployment, Rollback
from engine.events import OK, RUNNING, SKIPPED, WAITING
from engine.localfleet import commit_version
from tests.haproxy import (
    HAPROXY,
    READY,
    HAProxy,
    Load,
    StatWatch,
    app_pid,
    free_port,
    install_app_env,
    make_web_repo,
    stop_apps,
)
from tests.helpers import Recorder, current_version, releases

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(240)]


@pytest.fixture
def haproxy_available() -> None:
    """Skip (or, with CI=true, fail) when Debian's haproxy is not installed."""
    if not (shutil.which("haproxy") or os.access(HAPROXY, os.X_OK)):
        reason = "haproxy not installed (apt-get install haproxy; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " and CI=true", pytrace=False)
        pytest.skip(reason)


class Site:
    """Three sshd hosts with the web app, HAProxy in front (server name = address)."""

    def __init__(self, fleet, root: Path) -> None:
        self.fleet = fleet
        self.hosts = fleet.hosts
        self.repo = make_web_repo(root / "repo")
        port = free_port(self.hosts[0].addr)
        install_app_env(self.hosts, port)
        self.lb = HAProxy(fleet.root / "lb", [(h.addr, h.addr, port) for h in self.hosts])
        self.lb.start()
        self.root = root

    def config(self, name: str = "shipdeck.toml", *, balancer_host: str | None = None, **deploy):
        settings = {
            "path": '"app"',
            "after_activate": '["./bin/restart"]',
            "health": '"./bin/health"',
            "health_timeout": "10",
            "health_interval": "0.1",
            "batches": '["1", "100%"]',
            **deploy,
        }
        lines = [
            "[project]",
            'name = "web"',
            f'repo = "{self.repo}"',
            "[build]",
            'commands = ["sh build.sh"]',
            'artifact = "dist"',
            "[deploy]",
            *(f"{k} = {v}" for k, v in settings.items()),
            "[ssh]",
            f'identity = "{self.fleet.client_key}"',
            f'known_hosts = "{self.fleet.known_hosts}"',
            'config = ""',
            "[hosts]",
            "web = [" + ", ".join(f'"{h.spec}"' for h in self.hosts) + "]",
        ]
        if balancer_host is not None:
            lines += [
                "[balancer]",
                'kind = "haproxy"',
                f'host = "{balancer_host}"',
                f'socket = "{self.lb.sock}"',
                'backend = "web"',
                'server = "{host}"',
                "drain_timeout = 10",
            ]
        path = self.root / name
        path.write_text("\n".join(lines) + "\n")
        return load_config(path)

    def close(self) -> None:
        self.lb.stop()
        stop_apps(self.hosts)


@pytest.fixture
def site(haproxy_available, sshd_fleet, tmp_path):
    s = Site(sshd_fleet(3), tmp_path)
    yield s
    s.close()


async def deploy(config, **kw):
    d = Deployment(config, **kw)
    rec = Recorder()
    d.subscribe(rec)
    return await d.run(), rec, d


def step_states(rec: Recorder, d, host: str, step: str) -> list[str]:
    return rec.statuses(f"{hkey(d, host)}/{step}")


def running_at(rec: Recorder, key: str) -> float:
    return next(e.at for e in rec.of("status") if e.key == key and e.status == RUNNING)


def hkey(d, host: str) -> str:
    return next(n.key for n in d.plan.hosts() if n.label == host)


async def test_rolling_deploy_drains_each_host_and_drops_nothing(site) -> None:
    lb_host = site.hosts[0].spec  # the balancer's socket, reached over SSH
    config = site.config(balancer_host=lb_host)
    result, _, _ = await deploy(config)  # 1.0.0 starts the apps
    assert result.exit_code == 0, result.summary
    assert site.lb.states() == {h.addr: READY for h in site.hosts}
    pids = {h.addr: app_pid(h) for h in site.hosts}

    commit_version(site.repo, "2.0.0")
    with StatWatch(site.lb) as watch, Load(site.lb.port, rate=80) as load:
        result, rec, d = await deploy(config)
    assert result.exit_code == 0, result.summary
    # every request through HAProxy answered while each app really restarted
    assert load.total > 50 and load.failed == 0, dict(load.errors)
    for h in site.hosts:
        assert current_version(h.home / "app") == "2.0.0"
        assert app_pid(h) != pids[h.addr]
        # HAProxy's own view: out (drain, then maint), then back in rotation
        seen = [s for s in watch.changes[h.addr] if s != "drain"]
        assert seen == [READY, "maint", READY], watch.changes[h.addr]
        if "drain" in watch.changes[h.addr]:
            assert watch.changes[h.addr].index("drain") < watch.changes[h.addr].index("maint")
        # the tree: drain -> activate -> restart -> health -> undrain, each timed
        host = hkey(d, h.spec)
        names = [n.name for n in d.plan.kids(host)]
        order = ["drain", "activate", "restart", "health", "undrain"]
        assert [n for n in names if n in order] == order
        for step in order:
            node = d.plan[f"{host}/{step}"]
            assert node.status == OK, (step, node.detail)
            assert node.started is not None and node.ended is not None
        assert d.plan[f"{host}/drain"].ended <= d.plan[f"{host}/activate"].started
        assert d.plan[f"{host}/health"].ended <= d.plan[f"{host}/undrain"].started
        assert "DRAIN -> MAINT" in d.plan[f"{host}/drain"].detail
    assert site.lb.states() == {h.addr: READY for h in site.hosts}

    # a rollback drains and undrains around each host's switch back
    with StatWatch(site.lb) as watch, Load(site.lb.port, rate=80) as load:
        rollback = Rollback(config)
        result = await rollback.run()
    assert result.exit_code == 0, result.summary
    assert load.failed == 0, dict(load.errors)
    for h in site.hosts:
        assert current_version(h.home / "app") == "1.0.0"
        assert [s for s in watch.changes[h.addr] if s != "drain"] == [READY, "maint", READY]
        assert rollback.plan[f"{hkey(rollback, h.spec)}/undrain"].status == OK


async def test_unhealthy_host_stays_drained(site) -> None:
    config = site.config(balancer_host="local")
    result, _, _ = await deploy(config)
    assert result.exit_code == 0, result.summary
    h1, h2, h3 = site.hosts
    commit_version(site.repo, "2.0.0")
    (h2.home / "FAIL_HEALTH").write_text("2.0.0")
    os.chmod(h2.home / "FAIL_HEALTH", 0o644)
    with Load(site.lb.port, rate=80) as load:
        result, rec, d = await deploy(config)
    assert result.exit_code == 1
    assert load.failed == 0, dict(load.errors)
    # rolled back, healthy on 1.0.0, but out of rotation until someone looks
    assert current_version(h2.home / "app") == "1.0.0"
    assert "rolled back to" in result.summary["failures"][h2.spec]
    assert "left out of rotation" in result.summary["failures"][h2.spec]
    assert site.lb.states() == {h1.addr: READY, h2.addr: "maint", h3.addr: READY}
    assert d.plan[f"{hkey(d, h2.spec)}/undrain"].status == SKIPPED
    assert OK not in step_states(rec, d, h2.spec, "undrain")


async def test_max_unavailable_takes_one_host_out_at_a_time(site) -> None:
    config = site.config(balancer_host="local", batches='["100%"]', max_unavailable="1")
    result, _, _ = await deploy(config)
    assert result.exit_code == 0, result.summary
    commit_version(site.repo, "2.0.0")
    with StatWatch(site.lb) as watch, Load(site.lb.port, rate=60) as load:
        result, rec, d = await deploy(config)
    assert result.exit_code == 0, result.summary
    assert load.failed == 0, dict(load.errors)
    assert watch.out_at_once == 1
    # one wave of three: the others waited their turn, shown as waiting
    waited = [h for h in site.hosts if WAITING in step_states(rec, d, h.spec, "drain")]
    assert len(waited) >= 1
    spans = sorted(  # from the drain's start (after its wait) to the undrain's end
        (running_at(rec, f"{hkey(d, h.spec)}/drain"), d.plan[f"{hkey(d, h.spec)}/undrain"].ended)
        for h in site.hosts
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start  # never two hosts out of rotation at once


def at(rec: Recorder, key: str, status: str) -> float:
    return next(e.at for e in rec.of("status") if e.key == key and e.status == status)


async def test_once_runs_on_one_host_between_unpack_and_activate(site) -> None:
    config = site.config(balancer_host="local", once='["./bin/migrate"]')
    result, _, _ = await deploy(config)
    assert result.exit_code == 0, result.summary
    commit_version(site.repo, "2.0.0")
    result, rec, d = await deploy(config)
    assert result.exit_code == 0, result.summary
    first = site.hosts[0]
    # exactly once, on the first host of the first wave, in the new release
    assert (first.home / "MIGRATED").read_text().split() == ["1.0.0", "2.0.0"]
    assert not any((h.home / "MIGRATED").exists() for h in site.hosts[1:])
    once = d.plan["release/once"]
    assert once.status == OK and first.spec in once.label
    began, ended = at(rec, "release/once", RUNNING), at(rec, "release/once", OK)
    for h in site.hosts:  # every host unpacked before; none activated until after
        host = hkey(d, h.spec)
        assert at(rec, f"{host}/unpack", OK) <= began
        assert at(rec, f"{host}/activate", RUNNING) >= ended


async def test_once_failure_switches_nothing(site) -> None:
    config = site.config(balancer_host="local", once='["./bin/migrate"]')
    result, _, first_run = await deploy(config)
    assert result.exit_code == 0, result.summary
    commit_version(site.repo, "2.0.0")
    (site.hosts[0].home / "FAIL_MIGRATE").write_text("")
    result, _, d = await deploy(config)
    assert result.exit_code != 0
    assert d.plan["release/once"].status == "failed"
    assert "table is locked" in d.plan["release/once"].detail
    assert result.summary["reason"].startswith(f"deploy.once failed on {site.hosts[0].spec}")
    assert result.summary["ok"] == 0
    for h in site.hosts:
        app = h.home / "app"
        assert current_version(app) == "1.0.0"
        assert releases(app) == [first_run.release_id]  # the unpacked release is gone
        assert not (app / ".shipdeck.lock").exists()
        assert d.plan[f"{hkey(d, h.spec)}/activate"].status == SKIPPED
    assert site.lb.states() == {h.addr: READY for h in site.hosts}  # nobody drained


async def test_drain_timeout_fails_the_host_and_puts_it_back(site) -> None:
    config = site.config(balancer_host="local")
    result, _, first = await deploy(config)
    assert result.exit_code == 0, result.summary
    commit_version(site.repo, "2.0.0")
    strict = replace(config, balancer=replace(config.balancer, drain_timeout=0.3))
    # every request takes 2 s: every server always has sessions in flight
    with Load(site.lb.port, rate=20, slow_every=1, slow_ms=2000) as load:
        result, _, d = await deploy(strict)
    assert result.exit_code == 3  # the canary wave failed: nothing more started
    canary = site.hosts[0]
    for h in site.hosts[1:]:
        assert d.plan[f"{hkey(d, h.spec)}/activate"].status == SKIPPED
    reason = result.summary["failures"][canary.spec]
    assert "drain timed out after 0.3s" in reason and "put back in rotation" in reason
    assert current_version(canary.home / "app") == "1.0.0"  # never switched
    assert site.lb.states() == {h.addr: READY for h in site.hosts}
    assert load.failed == 0, dict(load.errors)

    lenient = replace(strict, balancer=replace(strict.balancer, drain_timeout_ok=True))
    with Load(site.lb.port, rate=20, slow_every=1, slow_ms=2000):
        result, _, d = await deploy(lenient)
    assert result.exit_code == 0, result.summary
    assert "session(s) cut" in d.plan[f"{hkey(d, canary.spec)}/drain"].detail
    assert site.lb.states() == {h.addr: READY for h in site.hosts}


async def test_drain_hooks_for_any_balancer(site, tmp_path) -> None:
    out = tmp_path / "lb-calls"
    drain = f'["echo drain $SHIPDECK_HOST $SHIPDECK_HOST_ADDR $SHIPDECK_RELEASE >> {out}"]'
    undrain = f'["echo undrain $SHIPDECK_HOST $SHIPDECK_HOST_ADDR $SHIPDECK_RELEASE >> {out}"]'
    config = site.config(drain=drain, undrain=undrain, max_unavailable="1")
    result, _, d = await deploy(config)
    assert result.exit_code == 0, result.summary
    calls = out.read_text().splitlines()
    assert len(calls) == 6
    for drained, undrained in zip(calls[::2], calls[1::2], strict=True):
        # one host out at a time: its drain, then its undrain, then the next host's
        assert drained.startswith("drain ") and undrained == "un" + drained
    assert sorted(calls[::2]) == sorted(
        f"drain {h.spec} {h.addr} {d.release_id}" for h in site.hosts
    )
    for h in site.hosts:
        assert d.plan[f"{hkey(d, h.spec)}/drain"].detail == "1 hook(s)"


async def test_drain_hooks_run_on_the_balancer_host(site) -> None:
    """``kind = "hooks"`` with a balancer host: the hooks run there, over SSH, not here."""
    lb = site.hosts[0]
    drain = '["echo drain $SHIPDECK_HOST $(whoami) >> $HOME/lb-calls"]'
    undrain = '["echo undrain $SHIPDECK_HOST $(whoami) >> $HOME/lb-calls"]'
    site.config("hooks.toml", drain=drain, undrain=undrain)
    path = site.root / "hooks.toml"
    text = path.read_text() + f'[balancer]\nkind = "hooks"\nhost = "{lb.spec}"\nbackend = "web"\n'
    path.write_text(text)
    result, _, _ = await deploy(load_config(path))
    assert result.exit_code == 0, result.summary
    calls = sorted((lb.home / "lb-calls").read_text().splitlines())
    assert calls == sorted(
        f"{what} {h.spec} {lb.user}" for h in site.hosts for what in ("drain", "undrain")
    )
    assert not (Path.home() / "lb-calls").exists()


@pytest.mark.parametrize("limit", ["1", '"33%"'])  # a count, or a share of the 3 hosts
async def test_max_unavailable_without_a_balancer_restarts_one_at_a_time(site, limit) -> None:
    config = site.config(batches='["100%"]', max_unavailable=limit)
    result, rec, d = await deploy(config)
    assert result.exit_code == 0, result.summary
    host = hkey(d, site.hosts[0].spec)
    assert f"{host}/drain" not in d.plan  # no balancer, no drain hooks: no drain steps
    waited = [h for h in site.hosts if WAITING in step_states(rec, d, h.spec, "activate")]
    assert waited
    spans = sorted(  # from the switch to the passing health check
        (running_at(rec, f"{hkey(d, h.spec)}/activate"), at(rec, f"{hkey(d, h.spec)}/health", OK))
        for h in site.hosts
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start


async def test_abort_while_draining_puts_the_host_back(site) -> None:
    config = site.config(balancer_host="local")
    result, _, _ = await deploy(config)
    assert result.exit_code == 0, result.summary
    commit_version(site.repo, "2.0.0")
    canary = site.hosts[0]
    d = Deployment(config)
    rec = Recorder()
    d.subscribe(rec)
    # every request takes 5 s: the canary's sessions outlast the abort
    with Load(site.lb.port, rate=10, slow_every=1, slow_ms=5000) as load:
        run = asyncio.ensure_future(d.run())
        while site.lb.state(canary.addr) != "drain":  # HAProxy is draining it: abort
            assert not run.done(), run.result().summary
            await asyncio.sleep(0.01)
        d.abort(reason="operator changed their mind")
        result = await run
    assert result.exit_code == 3
    node = d.plan[f"{hkey(d, canary.spec)}/drain"]
    assert node.status == "cancelled" and "back in rotation" in node.detail
    assert current_version(canary.home / "app") == "1.0.0"
    assert site.lb.states() == {h.addr: READY for h in site.hosts}
    assert load.failed == 0, dict(load.errors)

"""Connecting to real sshd hosts: handshake caps where the limit lives, a host that
stops answering, the wire counters."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.config import SshConfig, load_config, parse_host
from engine.deploy import Deployment
from engine.ssh import Connector, SSHError
from tests.engine.test_deploy_sshd import write_config
from tests.helpers import splice

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def _connector(fleet, tmp_path: Path, **over) -> Connector:
    kw = dict(
        identity=str(fleet.client_key),
        known_hosts=str(fleet.known_hosts),
        config=None,
        connect_timeout=20,
    )
    kw.update(over)
    return Connector(SshConfig(**kw), tmp_path)


async def _barrier_proxies(fleet, n: int) -> tuple[list[str], list[asyncio.Server]]:
    """One TCP proxy per host (same address, another port) that forwards nothing until
    ``n`` connections have arrived in all: a client that handshakes one sshd at a time
    never gets past it."""
    arrived = [0]
    everyone = asyncio.Event()
    specs, servers = [], []
    lines = fleet.known_hosts.read_text().splitlines()
    for h in fleet.hosts:

        async def handle(reader, writer, h=h) -> None:
            arrived[0] += 1
            if arrived[0] >= n:
                everyone.set()
            await everyone.wait()
            up_r, up_w = await asyncio.open_connection(h.addr, h.port)

            await asyncio.gather(splice(reader, up_w), splice(up_r, writer))

        server = await asyncio.start_server(handle, h.addr, 0)
        port = server.sockets[0].getsockname()[1]
        key = next(ln.split(" ", 1)[1] for ln in lines if ln.startswith(f"[{h.addr}]:{h.port} "))
        lines.append(f"[{h.addr}]:{port} {key}")
        specs.append(f"{h.user}@{h.addr}:{port}")
        servers.append(server)
    fleet.known_hosts.write_text("\n".join(lines) + "\n")
    return specs, servers


async def test_distinct_sshds_handshake_in_parallel(sshd_fleet, tmp_path) -> None:
    """max_startups caps each sshd, not the fleet: four servers, a cap of 1, four
    handshakes in flight at once."""
    fleet = sshd_fleet(4, one_process_per_host=True)
    specs, servers = await _barrier_proxies(fleet, 4)
    conn = _connector(fleet, tmp_path, max_startups=1)
    try:
        hosts = await asyncio.wait_for(
            asyncio.gather(*(conn.connect(parse_host(s)) for s in specs)), 60
        )
        assert [(await h.run("id -un")).stdout for h in hosts] == [h.user for h in fleet.hosts]
        assert conn.peak_global == 4
        assert max(conn.peak_in_flight.values()) == 1
        assert len(conn.peak_in_flight) == 4
    finally:
        await conn.close()
        for s in servers:
            s.close()


async def test_the_fleet_ceiling_caps_distinct_sshds(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(4, one_process_per_host=True)
    conn = _connector(fleet, tmp_path, max_handshakes=2)
    try:
        await asyncio.gather(*(conn.connect(parse_host(h.spec)) for h in fleet.hosts))
        assert conn.peak_global == 2
    finally:
        await conn.close()


async def test_one_sshd_behind_many_addresses_never_sees_more_than_max_startups(
    sshd_fleet, tmp_path
) -> None:
    """Twelve addresses served by one sshd whose MaxStartups drops every connection
    beyond 4 pending: with a cap of 2 per sshd (known_hosts names the same key for all
    twelve) at most 2 of ours are ever in flight, and every host connects.

    (Retries are not counted here: sshd frees a startup slot only when its listener
    reads the child's auth notice, and the fleet's own readiness probes may still
    hold slots, so a rare reset is sshd's accounting, which the retry is for.)"""
    fleet = sshd_fleet(12, max_startups="4:100:5")
    assert len(fleet.procs) == 1
    conn = _connector(fleet, tmp_path, max_startups=2)
    try:
        hosts = await asyncio.gather(*(conn.connect(parse_host(h.spec)) for h in fleet.hosts))
        assert len(hosts) == 12
        assert list(conn.peak_in_flight.values()) == [2]
        assert conn.connect_retries <= 2, conn.connect_retries
    finally:
        await conn.close()
    assert fleet.accepted_logins() == 12


async def test_a_host_frozen_mid_command_fails_within_dead_after(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(2, one_process_per_host=True)
    conn = _connector(fleet, tmp_path, dead_after=2.0)
    try:
        frozen, other = [await conn.connect(parse_host(h.spec)) for h in fleet.hosts]
        started = asyncio.Event()

        def on_line(stream: str, text: str) -> None:
            if text == "started":
                started.set()

        step = asyncio.ensure_future(frozen.run("echo started; sleep 60", on_line=on_line))
        await asyncio.wait_for(started.wait(), 30)
        fleet.freeze_host(0)
        try:
            with pytest.raises(SSHError) as err:
                await asyncio.wait_for(step, 3 * 2.0)  # 3x dead_after
        finally:
            fleet.thaw_all()
        assert "stopped answering" in str(err.value)
        assert "dead_after" in str(err.value)
        assert (await other.run("echo alive")).stdout == "alive"
    finally:
        await conn.close()


async def test_deploy_with_a_host_frozen_during_a_hook(sshd_fleet, sample_repo, tmp_path) -> None:
    fleet = sshd_fleet(2, one_process_per_host=True)
    h0 = fleet.hosts[0]
    (h0.home / "freeze-me").write_text("")
    hook = "if [ -e ~/freeze-me ]; then touch ~/hook-started; sleep 60; fi"
    config = load_config(
        write_config(
            tmp_path / "d.toml",
            fleet,
            sample_repo,
            before_activate=f"[{hook!r}]".replace("'", '"'),
            ssh_dead_after="2",
        )
    )
    deploy = asyncio.ensure_future(Deployment(config).run())
    try:
        while not (h0.home / "hook-started").exists():
            assert not deploy.done(), deploy.result().summary
            await asyncio.sleep(0.02)
        fleet.freeze_host(0)
        result = await asyncio.wait_for(deploy, 30)
    finally:
        fleet.thaw_all()
    assert result.summary["ok"] == 1
    assert "stopped answering" in result.summary["failures"][h0.spec]
    assert not (h0.home / "app" / "current").exists()


async def test_wire_counters(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(1)
    conn = _connector(fleet, tmp_path)
    try:
        host = await conn.connect(parse_host(fleet.hosts[0].spec))
        await host.run("echo one")
        await host.run("echo two")
        row = conn.stats()[host.name]
    finally:
        await conn.close()
    assert row["commands"] == 2 and row["sessions"] == 1
    assert 3 <= row["handshake_round_trips"] < row["round_trips"]
    assert row["bytes_out"] > 0 and row["bytes_in"] > 0
    assert row["tcp_bytes_received"] == row["bytes_in"]


class _SlowTypist:
    """An operator who takes a few seconds to type the password in the TUI modal."""

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool:
        return False

    async def ask_password(self, host: str, user: str) -> str | None:
        await asyncio.sleep(2.0)
        return "pw-review-1"


async def test_password_prompt_is_not_cut_by_connect_timeout(tmp_path, sample_repo) -> None:
    from engine.localfleet import LocalFleet

    async with LocalFleet(tmp_path / "pw", 1, password="pw-review-1") as fleet:
        fleet.client_key_path.unlink()
        path = fleet.write_config(
            tmp_path / "pw.toml", sample_repo, ssh_extra={"connect_timeout": 0.5}
        )
        result = await Deployment(load_config(path), prompter=_SlowTypist()).run()
        assert result.exit_code == 0, result.summary["failures"]

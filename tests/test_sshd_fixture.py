"""The real-sshd fleet (tests/sshd.py) does what integration tests rely on."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import time

import asyncssh
import pytest

from tests.sshd import SSHD, SshdFleet, SshdHost

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(30)]


async def _connect(fleet: SshdFleet, host: SshdHost, **kw) -> asyncssh.SSHClientConnection:
    options = {
        "username": host.user,
        "client_keys": [str(fleet.client_key)],
        "known_hosts": str(fleet.known_hosts),
        "connect_timeout": 5,
    }
    options.update(kw)
    return await asyncssh.connect(host.addr, host.port, **options)


async def test_every_host_runs_commands_in_its_own_home(sshd3: SshdFleet) -> None:
    assert [h.name for h in sshd3.hosts] == ["h1", "h2", "h3"]
    assert len({h.addr for h in sshd3.hosts}) == 3
    assert len({h.user for h in sshd3.hosts}) == 3
    for host in sshd3.hosts:
        assert host.spec == f"{host.user}@{host.addr}:{host.port}"
        async with await _connect(sshd3, host) as conn:
            result = await conn.run("pwd; echo $HOME; id -un; echo $SHLVL", check=True)
        assert result.stdout.split() == [str(host.home), str(host.home), host.user, "1"]


async def test_host_keys_are_checked_strictly(sshd3: SshdFleet, tmp_path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await _connect(sshd3, sshd3.hosts[0], known_hosts=str(empty))


async def test_sftp_write_then_read_in_the_host_home(sshd3: SshdFleet) -> None:
    host = sshd3.hosts[1]
    async with await _connect(sshd3, host) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("app/releases", exist_ok=True)
        async with sftp.open("app/releases/hello.txt", "w") as f:
            await f.write("hello from sftp\n")
        async with sftp.open("app/releases/hello.txt") as f:
            assert await f.read() == "hello from sftp\n"
    on_disk = host.home / "app" / "releases" / "hello.txt"
    assert on_disk.read_text() == "hello from sftp\n"
    if not host.shared_user:
        assert pwd.getpwuid(on_disk.stat().st_uid).pw_name == host.user


@pytest.mark.timeout(180)  # 40 login users made and removed, on a loaded box
async def test_forty_hosts_over_several_processes(sshd_fleet) -> None:
    t0 = time.monotonic()
    fleet = sshd_fleet(40)
    started = time.monotonic() - t0
    assert len(fleet.procs) == 3  # 16 + 16 + 8 addresses
    assert [len(p.hosts) for p in fleet.procs] == [16, 16, 8]
    assert len({(h.addr, h.port) for h in fleet.hosts}) == 40
    t0 = time.monotonic()
    for host in fleet.hosts:
        async with await _connect(fleet, host) as conn:
            result = await conn.run("echo $HOME", check=True)
            assert result.stdout.strip() == str(host.home)
    connected = time.monotonic() - t0
    assert fleet.accepted_logins() == 40
    assert all(fleet.accepted_logins(p.index) == len(p.hosts) for p in fleet.procs)
    print(f"40 hosts: start {started:.2f}s, 40 sequential connect+run {connected:.2f}s")


async def test_bastion_tunnels_with_one_login(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(2, bastion=True)
    bastion = fleet.bastion
    assert bastion is not None and bastion.proc_index == len(fleet.procs) - 1
    async with await _connect(fleet, bastion) as jump:
        for host in fleet.hosts:
            async with await _connect(fleet, host, tunnel=jump) as conn:
                result = await conn.run("pwd", check=True)
                assert result.stdout.strip() == str(host.home)
    assert fleet.accepted_logins(bastion.proc_index) == 1
    assert fleet.accepted_logins(fleet.hosts[0].proc_index) == 2
    assert f"Accepted publickey for {bastion.user}" in fleet.log_text(bastion.proc_index)

    # The same through an OpenSSH client config with ProxyJump.
    config = fleet.write_ssh_config(
        tmp_path / "ssh_config",
        {"jump": bastion, "web1": fleet.hosts[0]},
        proxy_jump="jump",
    )
    async with asyncssh.connect("web1", config=[str(config)], connect_timeout=5) as conn:
        result = await conn.run("id -un", check=True)
    assert result.stdout.strip() == fleet.hosts[0].user
    assert fleet.accepted_logins(bastion.proc_index) == 2


async def test_password_authentication(sshd_fleet) -> None:
    fleet = sshd_fleet(1, password="s3cret-pw")
    host = fleet.hosts[0]
    async with await _connect(fleet, host, client_keys=None, password="s3cret-pw") as conn:
        assert (await conn.run("pwd", check=True)).stdout.strip() == str(host.home)
    assert "Accepted password for" in fleet.log_text()
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(fleet, host, client_keys=None, password="wrong")


async def test_freeze_thaw_stop_and_restart_one_host(sshd_fleet) -> None:
    fleet = sshd_fleet(2, one_process_per_host=True)
    h1, h2 = fleet.hosts
    assert h1.proc_index != h2.proc_index
    open_conn = await _connect(fleet, h1)

    assert fleet.freeze_host(0) == [h1]
    with pytest.raises((asyncio.TimeoutError, asyncssh.Error, OSError)):
        await _connect(fleet, h1, connect_timeout=0.5)
    with pytest.raises(asyncio.TimeoutError):  # already-open connections hang too
        await asyncio.wait_for(open_conn.run("true"), 0.5)
    async with await _connect(fleet, h2) as conn:  # the other host is unaffected
        await conn.run("true", check=True)

    fleet.thaw_all()
    await asyncio.wait_for(open_conn.run("true", check=True), 5)
    open_conn.close()

    assert fleet.stop_host(h1) == [h1]
    with pytest.raises(OSError):
        await _connect(fleet, h1)
    fleet.start_host(0)
    async with await _connect(fleet, h1) as conn:
        await conn.run("true", check=True)


def test_stop_removes_processes_and_users(sshd_fleet) -> None:
    fleet = sshd_fleet(3, bastion=True)
    pids = [p.pid for p in fleet.procs]
    users = [h.user for h in [*fleet.hosts, fleet.bastion]]
    fleet.stop()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in _state(pid)
    if os.geteuid() == 0:
        for user in users:
            with pytest.raises(KeyError):
                pwd.getpwnam(user)
    fleet.stop()  # idempotent


def test_bad_extra_config_is_reported_with_sshd_output(tmp_path, sshd_available) -> None:
    fleet = SshdFleet(tmp_path / "bad", 1, extra_config="NoSuchOption yes")
    with pytest.raises(RuntimeError, match="NoSuchOption"):
        fleet.start()
    if os.geteuid() == 0:
        with pytest.raises(KeyError):
            pwd.getpwnam(fleet.hosts[0].user)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_extra_config_overrides_defaults_and_may_end_in_match(sshd_fleet) -> None:
    fleet = sshd_fleet(
        1,
        max_startups="50:30:200",
        extra_config="X11Forwarding yes\nMatch User nobody\n    PermitTTY no",
    )
    effective = subprocess.run(
        [SSHD, "-T", "-f", str(fleet.procs[0].config)], capture_output=True, text=True, check=True
    ).stdout
    assert "x11forwarding yes" in effective
    assert "maxstartups 50:30:200" in effective


async def test_a_port_another_listener_holds_is_not_taken_for_the_fleets(
    tmp_path, sshd_available, monkeypatch
) -> None:
    """Test workers' fleets share the addresses 127.0.0.x: when another listener holds
    the port a fleet picked, the fleet must not take that listener for its sshd (its
    tests would meet a stranger's host key); it moves to another port."""
    import socket

    import tests.sshd as sshd_mod

    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.2", 0))
    squatter.listen(8)
    taken = squatter.getsockname()[1]
    real = sshd_mod._free_port
    picks: list[int] = []

    def first_the_taken_port(addrs: list[str]) -> int:
        picks.append(taken if not picks else real(addrs))
        return picks[-1]

    monkeypatch.setattr(sshd_mod, "_free_port", first_the_taken_port)
    fleet = SshdFleet(tmp_path / "f", 1)
    try:
        fleet.start()
        (h,) = fleet.hosts
        assert h.port != taken and len(picks) >= 2
        conn = await _connect(fleet, h)  # its own sshd, with the host key it knows
        async with conn:
            res = await conn.run("echo ok", check=True)
        assert res.stdout == "ok\n"
    finally:
        fleet.stop()
        squatter.close()

"""The OpenSSH client config as OpenSSH reads it, against real sshd hosts: identities
(ssh-agent, encrypted files, certificates, IdentitiesOnly), UserKnownHostsFile,
Include, Match host, a two-hop ProxyJump chain, ProxyCommand, host-key prompts."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from engine.config import ConfigError, SshConfig, load_config, parse_host
from engine.ssh import AuthFailed, Connector, HostKeyError, JumpHostError, SSHError
from tests.sshd import SshdFleet, make_user_key

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]

PASS = "correct horse 7731"


def block(alias: str, h, **opts: str) -> str:
    lines = [f"Host {alias}", f"    HostName {h.addr}", f"    Port {h.port}", f"    User {h.user}"]
    lines += [f"    {k} {v}" for k, v in opts.items()]
    return "\n".join(lines) + "\n"


def connector(tmp_path: Path, fleet: SshdFleet, ssh_config: str, **over) -> Connector:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ssh_config)
    kw = dict(config=str(cfg), known_hosts=str(fleet.known_hosts), connect_timeout=10)
    kw.update(over)
    return Connector(SshConfig(**kw), tmp_path)


async def echo(conn: Connector, alias: str) -> str:
    host = await conn.connect(parse_host(alias))
    return (await host.run("echo ok-$(id -un)")).stdout


class Asker:
    """An operator at a terminal: answers and counts what was asked."""

    interactive = True

    def __init__(self, passphrase: str | None = PASS, trust: bool = True):
        self.passphrase = passphrase
        self.trust = trust
        self.passphrases: list[str] = []
        self.host_keys: list[str] = []

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool:
        self.host_keys.append(host)
        await asyncio.sleep(0)  # others connect meanwhile
        return self.trust

    async def ask_password(self, host: str, user: str) -> str | None:
        return None

    async def ask_passphrase(self, path: str) -> str | None:
        self.passphrases.append(path)
        return self.passphrase


@pytest.fixture
def encrypted_key(tmp_path: Path) -> Path:
    return make_user_key(tmp_path / "id_enc", PASS)


# -- identities ---------------------------------------------------------------------


async def test_encrypted_identity_whose_key_is_in_the_agent_is_signed_by_the_agent(
    sshd_fleet, ssh_agent, encrypted_key, tmp_path
) -> None:
    fleet = sshd_fleet(1)
    fleet.authorize(encrypted_key.with_suffix(".pub"))
    ssh_agent.add(encrypted_key, PASS)
    h = fleet.hosts[0]
    cfg = block("web", h, IdentityFile=str(encrypted_key), IdentitiesOnly="yes")
    conn = connector(tmp_path, fleet, cfg)  # no prompter, no passphrase: only the agent
    try:
        assert await echo(conn, "web") == f"ok-{h.user}"
    finally:
        await conn.close()


async def test_encrypted_identity_in_the_agent_without_its_pub_file(
    sshd_fleet, ssh_agent, encrypted_key, tmp_path
) -> None:
    """The private file's public half (OpenSSH keys carry it in clear) identifies it."""
    fleet = sshd_fleet(1)
    fleet.authorize(encrypted_key.with_suffix(".pub"))
    ssh_agent.add(encrypted_key, PASS)
    encrypted_key.with_suffix(".pub").unlink()
    cfg = block("web", fleet.hosts[0], IdentityFile=str(encrypted_key), IdentitiesOnly="yes")
    conn = connector(tmp_path, fleet, cfg)
    try:
        assert (await echo(conn, "web")).startswith("ok-")
    finally:
        await conn.close()


async def test_encrypted_key_not_in_the_agent_asks_its_passphrase_once(
    sshd_fleet, encrypted_key, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    fleet = sshd_fleet(3)
    fleet.authorize(encrypted_key.with_suffix(".pub"))
    cfg = "".join(
        block(f"w{i}", h, IdentityFile=str(encrypted_key)) for i, h in enumerate(fleet.hosts)
    )
    asker = Asker()
    conn = connector(tmp_path, fleet, cfg)
    conn.prompter = asker
    try:
        out = await asyncio.gather(*(echo(conn, f"w{i}") for i in range(3)))
        assert all(o.startswith("ok-") for o in out)
        assert asker.passphrases == [str(encrypted_key)]
    finally:
        await conn.close()


async def test_passphrase_env_decrypts_and_a_wrong_one_is_a_clear_error(
    sshd_fleet, encrypted_key, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    fleet = sshd_fleet(1)
    fleet.authorize(encrypted_key.with_suffix(".pub"))
    cfg = block("web", fleet.hosts[0], IdentityFile=str(encrypted_key))
    monkeypatch.setenv("SD_KEY_PASS", PASS)
    conn = connector(tmp_path, fleet, cfg, passphrase_env="SD_KEY_PASS")
    try:
        assert (await echo(conn, "web")).startswith("ok-")
    finally:
        await conn.close()
    monkeypatch.setenv("SD_KEY_PASS", "wrong")
    conn = connector(tmp_path, fleet, cfg, passphrase_env="SD_KEY_PASS")
    try:
        with pytest.raises(SSHError) as err:
            await echo(conn, "web")
        assert str(encrypted_key) in str(err.value)
        assert "SD_KEY_PASS" in str(err.value) and "wrong" not in str(err.value)
    finally:
        await conn.close()
    # headless, nothing to ask and no agent: says what to do
    conn = connector(tmp_path, fleet, cfg)
    try:
        with pytest.raises(SSHError, match="ssh-add or set ssh.passphrase_env"):
            await echo(conn, "web")
    finally:
        await conn.close()


async def test_identities_only_keeps_other_agent_keys_out(sshd_fleet, ssh_agent, tmp_path) -> None:
    """The agent holds the authorised key; IdentityFile names another one. OpenSSH
    with IdentitiesOnly offers only the named one (and fails); without, both."""
    fleet = sshd_fleet(1)
    ssh_agent.add(fleet.client_key)
    other = make_user_key(tmp_path / "id_other")
    h = fleet.hosts[0]
    only = connector(
        tmp_path, fleet, block("web", h, IdentityFile=str(other), IdentitiesOnly="yes")
    )
    try:
        with pytest.raises(AuthFailed, match="authentication failed"):
            await echo(only, "web")
    finally:
        await only.close()
    both = connector(tmp_path, fleet, block("web", h, IdentityFile=str(other)))
    try:
        assert (await echo(both, "web")).startswith("ok-")
    finally:
        await both.close()


async def test_certificate_file_signed_by_a_trusted_ca(
    sshd_fleet, tmp_path_factory, tmp_path, monkeypatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    ca_dir = tmp_path_factory.mktemp("ca")
    ca = make_user_key(ca_dir / "ca", comment="test-ca")
    (ca_dir / "ca.pub").chmod(0o644)
    ca_dir.chmod(0o755)
    fleet = sshd_fleet(1, extra_config=f"TrustedUserCAKeys {ca_dir / 'ca.pub'}")
    h = fleet.hosts[0]
    user_key = make_user_key(tmp_path / "id_user")  # NOT in authorized_keys
    cert = tmp_path / "signed-cert.pub"
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "op", "-n", h.user, "-V", "+1h", str(user_key)],
        check=True,
        capture_output=True,
    )
    (tmp_path / "id_user-cert.pub").rename(cert)  # only CertificateFile names it
    conn = connector(
        tmp_path,
        fleet,
        block("web", h, IdentityFile=str(user_key), CertificateFile=str(cert)),
    )
    try:
        assert await echo(conn, "web") == f"ok-{h.user}"
    finally:
        await conn.close()
    assert f"Accepted publickey for {h.user}" in fleet.log_text()
    assert "ED25519-CERT" in fleet.log_text()


# -- config file structure -------------------------------------------------------------


async def test_include_and_match_host(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(2)
    a, b = fleet.hosts
    inc = tmp_path / "conf.d"
    inc.mkdir()
    (inc / "web.conf").write_text(
        f"Host web-a\n    HostName {a.addr}\n    Port {a.port}\n"
        f"Host web-b\n    HostName {b.addr}\n    Port {b.port}\n"
    )
    main = (
        f"Include {inc}/*.conf\n"
        f"Match host {a.addr}\n    User {a.user}\n"
        f"Match host {b.addr}\n    User {b.user}\n"
        f"Host *\n    IdentityFile {fleet.client_key}\n"
    )
    conn = connector(tmp_path, fleet, main)
    try:
        assert await echo(conn, "web-a") == f"ok-{a.user}"
        assert await echo(conn, "web-b") == f"ok-{b.user}"
    finally:
        await conn.close()


async def test_user_known_hosts_file_from_ssh_config(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(1)
    empty = tmp_path / "shipdeck_known_hosts"
    empty.write_text("")
    h = fleet.hosts[0]
    cfg = block(
        "web", h, IdentityFile=str(fleet.client_key), UserKnownHostsFile=str(fleet.known_hosts)
    )
    conn = connector(tmp_path, fleet, cfg, known_hosts=str(empty))
    try:
        assert (await echo(conn, "web")).startswith("ok-")  # strict, trusted by that file
    finally:
        await conn.close()
    assert empty.read_text() == ""


async def test_two_hop_proxyjump_chain(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(2, bastion_chain=True)
    b1, b2 = fleet.bastion, fleet.bastion2
    ident = {"IdentityFile": str(fleet.client_key)}
    cfg = block("gate1", b1, **ident) + block("gate2", b2, **ident)
    for i, h in enumerate(fleet.hosts):
        cfg += block(f"w{i}", h, ProxyJump="gate1,gate2", **ident)
    conn = connector(tmp_path, fleet, cfg)
    try:
        out = await asyncio.gather(echo(conn, "w0"), echo(conn, "w1"))
        assert out == [f"ok-{h.user}" for h in fleet.hosts]
    finally:
        await conn.close()
    # one connection to each hop, the second made through the first (which forwards
    # only to the second: targets could not have been reached through it directly)
    assert fleet.accepted_logins(b1.proc_index) == 1
    assert fleet.accepted_logins(b2.proc_index) == 1
    assert f"PermitOpen {b2.addr}:{b2.port}" in fleet.procs[b1.proc_index].config.read_text()


async def test_proxycommand(sshd_fleet, tmp_path) -> None:
    fleet = sshd_fleet(1)
    h = fleet.hosts[0]
    mark = tmp_path / "proxy-used"
    cfg = block(
        "web",
        h,
        IdentityFile=str(fleet.client_key),
        ProxyCommand=f"sh -c 'echo %h:%p >> {mark}; exec socat - TCP:%h:%p'",
    )
    conn = connector(tmp_path, fleet, cfg)
    try:
        assert (await echo(conn, "web")).startswith("ok-")
    finally:
        await conn.close()
    assert mark.read_text().split() == [f"{h.addr}:{h.port}"]


# -- host keys -------------------------------------------------------------------------


async def test_each_host_key_asked_once_jump_included_no_duplicate_lines(
    sshd_fleet, tmp_path
) -> None:
    fleet = sshd_fleet(2, bastion=True)
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    ident = {"IdentityFile": str(fleet.client_key)}
    cfg = block("gate", fleet.bastion, **ident)
    for i, h in enumerate(fleet.hosts):
        cfg += block(f"w{i}", h, ProxyJump="gate", **ident)
    asker = Asker()
    conn = connector(tmp_path, fleet, cfg, known_hosts=str(kh))
    conn.prompter = asker
    try:
        await asyncio.gather(echo(conn, "w0"), echo(conn, "w1"), echo(conn, "w0"))
    finally:
        await conn.close()
    assert sorted(asker.host_keys) == ["jump gate", "w0", "w1"]
    lines = kh.read_text().splitlines()
    assert len(lines) == 3 and len(set(lines)) == 3
    # a second deploy trusts them: nobody is asked
    again = connector(tmp_path, fleet, cfg, known_hosts=str(kh))
    again.prompter = Asker()
    try:
        await echo(again, "w1")
    finally:
        await again.close()
    assert again.prompter.host_keys == []
    assert kh.read_text().splitlines() == lines


async def test_unknown_host_key_without_a_terminal_says_how_to_accept_it(
    sshd_fleet, tmp_path
) -> None:
    from tui.cli.prompt import HeadlessPrompter as _HeadlessPrompter

    fleet = sshd_fleet(1)
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    h = fleet.hosts[0]
    conn = connector(
        tmp_path, fleet, block("web", h, IdentityFile=str(fleet.client_key)), known_hosts=str(kh)
    )
    conn.prompter = _HeadlessPrompter(False)  # what `deploy --headless` has off a terminal
    try:
        with pytest.raises(HostKeyError) as err:
            await echo(conn, "web")
    finally:
        await conn.close()
    msg = str(err.value)
    assert "unknown host key" in msg and "rejected" not in msg
    assert f"ssh-keyscan -p {h.port} {h.addr}" in msg and 'host_key_policy = "accept-new"' in msg
    assert kh.read_text() == ""


# -- config keys -----------------------------------------------------------------------


def _toml(tmp_path: Path, ssh: str) -> Path:
    p = tmp_path / "shipdeck.toml"
    p.write_text(
        '[project]\nname = "w"\nrepo = "."\n[deploy]\npath = "app"\n'
        f'[ssh]\n{ssh}\n[hosts]\nweb = ["h1"]\n'
    )
    return p


def test_ssh_keys_dead_after_max_handshakes_passphrase_env(tmp_path) -> None:
    c = load_config(_toml(tmp_path, ""))
    assert (c.ssh.dead_after, c.ssh.keepalive, c.ssh.max_handshakes) == (20, None, 256)
    c = load_config(_toml(tmp_path, 'dead_after = 8\nmax_handshakes = 3\npassphrase_env = "P"'))
    assert (c.ssh.dead_after, c.ssh.keepalive, c.ssh.max_handshakes) == (8, None, 3)
    assert c.ssh.passphrase_env == "P"
    c = load_config(_toml(tmp_path, "keepalive = 1"))  # the older key keeps its meaning
    assert (c.ssh.dead_after, c.ssh.keepalive) == (4, 1)
    for bad, key in (("dead_after = 0", "dead_after"), ("max_handshakes = 0", "max_handshakes")):
        with pytest.raises(ConfigError) as err:
            load_config(_toml(tmp_path, bad))
        assert f"ssh.{key}" in str(err.value) or key in str(err.value)


async def test_deploy_with_agent_key_through_ssh_config_and_two_hops(
    sshd_fleet, ssh_agent, encrypted_key, sample_repo, tmp_path
) -> None:
    """The operator's setup: an encrypted key in ssh-agent, hosts and a 2-hop
    ProxyJump in ~/.ssh/config, nothing about keys in shipdeck.toml."""
    from engine.deploy import Deployment
    from tests.engine.test_deploy_sshd import write_config
    from tests.helpers import current

    fleet = sshd_fleet(2, bastion_chain=True)
    fleet.authorize(encrypted_key.with_suffix(".pub"))
    ssh_agent.add(encrypted_key, PASS)
    ident = {"IdentityFile": str(encrypted_key), "IdentitiesOnly": "yes"}
    cfg = block("gate1", fleet.bastion, **ident) + block("gate2", fleet.bastion2, **ident)
    for i, h in enumerate(fleet.hosts):
        cfg += block(f"web{i}", h, ProxyJump="gate1,gate2", **ident)
    (tmp_path / "ssh_config").write_text(cfg)
    config = load_config(
        write_config(
            tmp_path / "d.toml",
            fleet,
            sample_repo,
            hosts=["web0", "web1"],
            ssh_identity='""',
            ssh_config=f'"{tmp_path / "ssh_config"}"',
        )
    )
    result = await Deployment(config).run()
    assert result.exit_code == 0, result.summary
    for h in fleet.hosts:
        assert current(h.home / "app") is not None
    assert fleet.accepted_logins(fleet.bastion.proc_index) == 1
    assert fleet.accepted_logins(fleet.bastion2.proc_index) == 1


async def test_deploy_through_a_jump_host_asks_each_host_key_once(
    sshd_fleet, sample_repo, tmp_path
) -> None:
    """One bastion named two ways (an alias and user@addr:port): two jump
    connections, one question about its key, one known_hosts line."""
    from engine.deploy import Deployment
    from tests.engine.test_deploy_sshd import write_config

    fleet = sshd_fleet(2, bastion=True)
    b = fleet.bastion
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    ident = {"IdentityFile": str(fleet.client_key)}
    cfg = block("gate", b, **ident)
    cfg += block("web0", fleet.hosts[0], ProxyJump="gate", **ident)
    cfg += block("web1", fleet.hosts[1], ProxyJump=b.spec, **ident)
    (tmp_path / "ssh_config").write_text(cfg)
    config = load_config(
        write_config(
            tmp_path / "d.toml",
            fleet,
            sample_repo,
            hosts=["web0", "web1"],
            ssh_known_hosts=f'"{kh}"',
            ssh_config=f'"{tmp_path / "ssh_config"}"',
        )
    )
    asker = Asker()
    result = await Deployment(config, prompter=asker).run()
    assert result.exit_code == 0, result.summary
    assert len(asker.host_keys) == 3, asker.host_keys
    assert {"web0", "web1"} <= set(asker.host_keys)
    lines = kh.read_text().splitlines()
    assert len(lines) == 3 and len(set(lines)) == 3


async def test_jump_host_does_not_inherit_the_targets_port(tmp_path) -> None:
    from engine.ssh import Target

    connector = Connector(SshConfig(port=2222, jump="bastion.example", config=None), tmp_path)
    seen: list[Target] = []

    async def fake_open(target: Target, tunnel: object) -> object:
        seen.append(target)
        raise asyncio.CancelledError

    connector._open_checked = fake_open  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await connector._jump("bastion.example")
    assert seen[0].host == "bastion.example"
    assert seen[0].port == 22


async def test_a_proxyjump_loop_is_a_jump_host_error_naming_the_hop(tmp_path) -> None:
    cfg = "Host a\n    ProxyJump b\nHost b\n    ProxyJump a\nHost web\n    ProxyJump a\n"
    conn = connector_for(tmp_path, cfg)
    with pytest.raises(JumpHostError, match="jump host a: ProxyJump loops through a"):
        await conn.connect(parse_host("web"))
    await conn.close()


async def test_an_unreachable_jump_host_is_a_jump_host_error(tmp_path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = f"Host gate\n    HostName 127.0.0.1\n    Port {port}\nHost web\n    ProxyJump gate\n"
    conn = connector_for(tmp_path, cfg)
    with pytest.raises(
        JumpHostError, match=f"jump host gate: connection refused by 127.0.0.1:{port}"
    ):
        await conn.connect(parse_host("web"))
    await conn.close()


def connector_for(tmp_path: Path, ssh_config: str) -> Connector:
    """A connector reading ``ssh_config`` (no sshd: for failures before any login)."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ssh_config)
    known = tmp_path / "known_hosts"
    known.write_text("")
    return Connector(
        SshConfig(config=str(cfg), known_hosts=str(known), connect_timeout=10), tmp_path
    )

"""A host resolved through a plain ssh_config text into a Target, as OpenSSH would:
what the host spec, [ssh] and the ssh config each contribute, and which wins."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest

from engine.config import SshConfig, parse_host
from engine.errors import SSHError
from engine.sshconfig import MAX_CONFIG_BYTES, Target, read_ssh_config, resolve_target

pytestmark = pytest.mark.timeout(30)

CONFIG = """\
Host web
    HostName 10.0.0.5
    User deploy
    Port 2201
    IdentityFile ~/.ssh/id_web
    IdentityFile keys/id_second
    CertificateFile ~/.ssh/id_web-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_web /etc/ssh/known_all
    IdentityAgent none

Host inner
    HostName 10.1.0.9
    ProxyJump gate,bastion
    ProxyCommand nc %h %p

Host piped
    ProxyCommand ssh -W %h:%p gate

Host agented
    IdentityAgent ~/agent.sock

Host envagent
    IdentityAgent SSH_AUTH_SOCK

Host *.internal
    User ops
"""


def resolve(tmp_path: Path, text: str, host: str, *, inherit: bool = True, **ssh) -> Target:
    path = tmp_path / "ssh_config"
    path.write_text(text)
    spec = parse_host(host)
    opts = read_ssh_config(str(path), spec.host)
    return resolve_target(spec, SshConfig(**ssh), tmp_path, opts, inherit=inherit)


def test_an_alias_takes_hostname_user_port_and_files_from_the_config(tmp_path) -> None:
    t = resolve(tmp_path, CONFIG, "web")
    home = os.path.expanduser("~")
    assert (t.name, t.host, t.user, t.port) == ("web", "10.0.0.5", "deploy", 2201)
    assert t.identities == (f"{home}/.ssh/id_web", "keys/id_second")
    assert t.certificates == (f"{home}/.ssh/id_web-cert.pub",)
    assert t.identities_only is True
    assert t.known_hosts == (f"{home}/.ssh/known_web", "/etc/ssh/known_all")
    assert t.agent == ""  # IdentityAgent none: no agent at all
    assert (t.jump, t.proxy_command) == (None, None)


def test_the_host_spec_wins_then_ssh_section_then_the_config(tmp_path) -> None:
    assert resolve(tmp_path, CONFIG, "root@web:22").user == "root"
    assert resolve(tmp_path, CONFIG, "root@web:22").port == 22
    fleet = resolve(tmp_path, CONFIG, "web", user="fleet", port=2022)
    assert (fleet.user, fleet.port) == ("fleet", 2022)


def test_a_host_the_config_does_not_name_is_itself(tmp_path) -> None:
    t = resolve(tmp_path, CONFIG, "db.example:2222")
    assert (t.host, t.port, t.user) == ("db.example", 2222, getpass.getuser())
    assert t.identities == () and t.agent is None and t.jump is None


def test_wildcard_host_blocks_apply(tmp_path) -> None:
    assert resolve(tmp_path, CONFIG, "db.internal").user == "ops"


def test_the_ssh_identity_comes_first_relative_to_the_config_dir_and_once(tmp_path) -> None:
    text = "Host web\n    IdentityFile " + str(tmp_path / "id_main") + "\n"
    t = resolve(tmp_path, text, "web", identity="id_main")
    assert t.identities == (str(tmp_path / "id_main"),)
    t = resolve(tmp_path, CONFIG, "web", identity="id_main")
    assert t.identities[0] == str(tmp_path / "id_main") and len(t.identities) == 3


def test_proxyjump_is_one_chain_and_wins_over_proxycommand(tmp_path) -> None:
    t = resolve(tmp_path, CONFIG, "inner")
    assert t.jump == "gate,bastion"
    assert t.proxy_command is None
    piped = resolve(tmp_path, CONFIG, "piped")
    assert piped.jump is None
    assert piped.proxy_command == "ssh -W piped:22 gate"


def test_ssh_jump_applies_to_the_fleet_but_not_to_a_jump_host(tmp_path) -> None:
    ssh = dict(jump="gate", user="fleet", port=2022)
    assert resolve(tmp_path, CONFIG, "db.example", **ssh).jump == "gate"
    hop = resolve(tmp_path, CONFIG, "bastion.example", inherit=False, **ssh)
    assert (hop.jump, hop.user, hop.port) == (None, getpass.getuser(), 22)


def test_identity_agent_path_or_the_environments(tmp_path) -> None:
    assert resolve(tmp_path, CONFIG, "agented").agent == os.path.expanduser("~/agent.sock")
    assert resolve(tmp_path, CONFIG, "envagent").agent is None


def test_a_jump_hop_has_its_own_name_and_no_jump(tmp_path) -> None:
    hop = resolve(tmp_path, CONFIG, "inner").as_jump("jump inner")
    assert (hop.name, hop.host, hop.jump) == ("jump inner", "10.1.0.9", None)


def test_no_config_means_no_options() -> None:
    assert read_ssh_config(None, "web") == {}


def test_an_unreadable_config_names_its_path(tmp_path) -> None:
    missing = tmp_path / "nope" / "ssh_config"
    with pytest.raises(SSHError, match=f"cannot read ssh config {missing}"):
        read_ssh_config(str(missing), "web")


def test_an_oversized_config_is_refused(tmp_path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(SSHError, match="larger than"):
        read_ssh_config(str(path), "web")

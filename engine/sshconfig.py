"""Where to connect: a host of shipdeck.toml resolved through the OpenSSH client
config into a :class:`Target`.

The config is read as OpenSSH reads it (asyncssh's parser: Host, Match, Include,
HostName, User, Port, IdentityFile, IdentitiesOnly, IdentityAgent, CertificateFile,
UserKnownHostsFile, ProxyJump, ProxyCommand). :func:`read_ssh_config` reads the file;
:func:`resolve_target` is pure: the host spec, ``[ssh]`` and the options read.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncssh

from engine.config import HostSpec, SshConfig
from engine.errors import SSHError

__all__ = ["MAX_CONFIG_BYTES", "Target", "expand_path", "read_ssh_config", "resolve_target"]

#: bytes of an ssh config file (and its includes) read at most
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Target:
    """Where to connect, after ssh config and shipdeck.toml are merged."""

    name: str
    host: str  # what we connect to (after HostName)
    port: int
    user: str
    identities: tuple[str, ...]
    jump: str | None
    certificates: tuple[str, ...] = ()  # CertificateFile
    identities_only: bool = False  # IdentitiesOnly: agent keys only if they match a file
    known_hosts: tuple[str, ...] = ()  # UserKnownHostsFile (first: where keys are added)
    proxy_command: str | None = None  # ProxyCommand (when no ProxyJump)
    agent: str | None = None  # IdentityAgent; "" = none

    def as_jump(self, name: str) -> Target:
        """This target as a hop of a jump chain: named ``name``, with no jump of its own
        (the chain says what comes before it)."""
        return replace(self, name=name, jump=None)


def expand_path(path: str | None, base: Path) -> str | None:
    """``path`` with ``~`` expanded, relative to ``base``; None for no path."""
    if not path:
        return None
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)


def read_ssh_config(path: str | None, host: str) -> dict[str, Any]:
    """The OpenSSH client config's options for ``host`` (as ssh -G would say), from the
    file at ``path`` (None: no config, no options).

    Raises SSHError when the file is too large or cannot be read or parsed."""
    if not path:
        return {}
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise SSHError(f"ssh config {path} is larger than {MAX_CONFIG_BYTES} bytes")
        cfg = asyncssh.config.SSHClientConfig.load(
            None, [path], False, False, False, getpass.getuser(), (), host, ()
        )
    except (OSError, asyncssh.Error, ValueError) as exc:
        raise SSHError(f"cannot read ssh config {path}: {exc}") from None
    return cfg.get_options(False)


def resolve_target(
    spec: HostSpec,
    ssh: SshConfig,
    base_dir: Path,
    opts: Mapping[str, Any],
    *,
    inherit: bool = True,
) -> Target:
    """Merge the host spec, ``[ssh]`` and the ssh config options ``opts`` for this host
    (:func:`read_ssh_config`): the spec wins, then ``[ssh]``, then the ssh config.

    ``inherit=False`` (a jump host): [ssh] user, port and jump, meant for the fleet, do
    not apply; only the spec and the ssh config do. Raises nothing."""
    fleet = ssh if inherit else None
    jump = _jump((fleet.jump if fleet else None) or opts.get("ProxyJump"))
    return Target(
        spec.name,
        str(opts.get("Hostname") or spec.host),
        int(spec.port or (fleet.port if fleet else None) or opts.get("Port") or 22),
        str(spec.user or (fleet.user if fleet else None) or opts.get("User") or getpass.getuser()),
        _identities(ssh, base_dir, opts),
        jump,
        certificates=tuple(_paths(opts.get("CertificateFile"))),
        identities_only=bool(opts.get("IdentitiesOnly")),
        known_hosts=tuple(_paths(opts.get("UserKnownHostsFile"))),
        proxy_command=None if jump else _proxy(opts.get("ProxyCommand")),
        agent=_agent(opts),
    )


def _identities(ssh: SshConfig, base_dir: Path, opts: Mapping[str, Any]) -> tuple[str, ...]:
    """``ssh.identity`` first, then the ssh config's IdentityFile entries, once each."""
    own = [expand_path(ssh.identity, base_dir) or ""] if ssh.identity else []
    return tuple(dict.fromkeys(i for i in own + list(_paths(opts.get("IdentityFile"))) if i))


def _paths(values: Iterable[Any] | None) -> Iterable[str]:
    """The paths of a list option, ``~`` expanded; ``none`` is no path."""
    for value in values or ():
        if str(value).lower() != "none":
            yield os.path.expanduser(str(value))


def _jump(value: Any) -> str | None:
    """ProxyJump (or ``ssh.jump``) as one comma-separated chain; None for no jump."""
    if isinstance(value, (list, tuple)):
        value = ",".join(value)
    return None if value in (None, "none", "") else str(value)


def _proxy(value: Any) -> str | None:
    """ProxyCommand as one command line; None for none."""
    if isinstance(value, (list, tuple)):
        value = " ".join(value)
    return None if not value or str(value).lower() == "none" else str(value)


def _agent(opts: Mapping[str, Any]) -> str | None:
    """IdentityAgent: a socket path, "" for none, None for SSH_AUTH_SOCK (the default).

    asyncssh's parser keeps ``IdentityAgent none`` as the option set to None."""
    if "IdentityAgent" not in opts:
        return None
    value = opts["IdentityAgent"]
    if value is None or str(value).lower() == "none":
        return ""
    path = os.path.expanduser(str(value))
    return None if path == "SSH_AUTH_SOCK" else path

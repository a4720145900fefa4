"""``[balancer]``'s keys: where a host is taken out of rotation and put back.

Declared apart from :mod:`engine.balancer` (which drives the balancer) so that
:mod:`engine.config` reads the section without importing the code that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.configschema import key
from engine.hosts import parse_host

LOCAL = "local"
KINDS = ("haproxy", "hooks")


def _balancer_host(value: str) -> str:
    if value != LOCAL:
        parse_host(value)
    return value


def _not_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _server_name(value: str) -> str:
    _not_empty(value)
    try:
        value.format(name="h", host="h")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"{value!r}: only {{name}} and {{host}} may be filled in ({exc})"
        ) from None
    return value


_HOST = '`host`, `user@host:port`, a [hosts] entry or an ssh-config alias; `"local"`: this machine'
_SERVER = "HAProxy server name per host; `{name}`: the host's entry, `{host}`: its address"
_KIND = "`hooks`: only `deploy.drain`/`deploy.undrain` (run on `host`)"


@dataclass(frozen=True, kw_only=True)
class BalancerConfig:
    """``[balancer]``: where a host is taken out of rotation and put back."""

    kind: str = key("haproxy", _KIND, choices=KINDS)
    host: str = key(
        LOCAL, "where the admin socket (and the hooks) are: " + _HOST, check=_balancer_host
    )
    socket: str = key(
        "/run/haproxy/admin.sock", "HAProxy's `stats socket ... level admin`", check=_not_empty
    )
    backend: str = key(..., "HAProxy backend of the hosts", check=_not_empty)
    server: str = key("{name}", _SERVER, check=_server_name)
    drain_timeout: float = key(
        30.0, "seconds a drained server has for its sessions to reach 0", min=0
    )
    drain_timeout_ok: bool = key(
        False, "`true`: a drain that times out goes on; else the host fails"
    )

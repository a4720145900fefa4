"""The fleet as the config writes it: ``[hosts]`` groups of hosts.

A host is ``host``, ``host:port``, ``user@host:port`` or an ssh-config alias
(:func:`parse_host`). :func:`read_hosts` reads the ``[hosts]`` table for
:mod:`engine.config`, raising :class:`~engine.errors.ConfigError` naming the group,
the entry and its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.configschema import Reader, Where

_HOST_RE = re.compile(
    r"""^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?
        (?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))
        (?::(?P<port>[0-9]{1,5}))?$""",
    re.X,
)


@dataclass(frozen=True)
class HostSpec:
    """One host as written in [hosts]: ``host``, ``host:port``, ``user@host:port``."""

    name: str  # as written; the node name in the tree
    host: str  # hostname, address or ssh-config alias
    port: int | None = None
    user: str | None = None
    groups: tuple[str, ...] = ()


def parse_host(text: str) -> HostSpec:
    """Parse ``host``, ``host:port`` or ``user@host:port``; raise ValueError if malformed."""
    m = _HOST_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a host (expected host, host:port or user@host:port)")
    port = m.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port {port} is out of range 1-65535")
    return HostSpec(
        name=text.strip(),
        host=m.group("v6") or m.group("host"),
        port=int(port) if port else None,
        user=m.group("user"),
    )


def read_hosts(r: Reader, at: Where, h: Any) -> dict[str, tuple[HostSpec, ...]]:
    """``[hosts]``: group name -> its hosts, each knowing every group it is in.
    Raises :class:`ConfigError` for a missing or empty table, group or host."""
    if h is None:
        example = 'groups of hosts, e.g. web = ["web1"]'
        raise ConfigError(r.path, f"missing section [hosts] ({example})", key="[hosts]")
    if not isinstance(h, dict) or not h:
        message = 'no host groups (expected e.g. web = ["web1.example.com"])'
        message = message if isinstance(h, dict) else "expected a table of groups"
        raise r.error(at, None, message)
    parsed = {group: _group(r, at, group, items) for group, items in h.items()}
    groups: dict[str, tuple[str, ...]] = {}
    for specs in parsed.values():
        for spec in specs:
            groups.setdefault(spec.name, ())
    for group, specs in parsed.items():
        for spec in specs:
            groups[spec.name] += (group,)
    return {
        group: tuple(replace(s, groups=groups[s.name]) for s in specs)
        for group, specs in parsed.items()
    }


def _group(r: Reader, at: Where, group: str, items: Any) -> list[HostSpec]:
    if not isinstance(items, list):
        kind = type(items).__name__
        raise r.error(at, group, f"expected a list of hosts, got {kind}")
    if not items:
        raise r.error(at, group, "empty host list (expected at least one host)")
    specs = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, str):
                raise ValueError(f"expected a string, got {type(item).__name__} {item!r}")
            specs.append(parse_host(item))
        except ValueError as exc:
            raise r.error(at, group, str(exc), i) from None
    return specs

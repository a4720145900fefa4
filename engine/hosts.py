"""The fleet as the config writes it, and which hosts a command works on.

``[hosts]`` holds groups of hosts. A host is ``host``, ``host:port``,
``user@host:port`` or an ssh-config alias (:func:`parse_host`), or a table with labels:
``{ host = "web1", labels = { role = "web", az = "a" } }``. :func:`read_hosts` reads
the table for :mod:`engine.config`, raising :class:`~engine.errors.ConfigError`
naming the group, the entry and its line.

:func:`select` is the one meaning of ``--hosts`` (deploy, rollback, status, exec,
logs, download): comma-separated terms, each a glob of a group, a host as written or
its address (``web*``), or a label selector (``role=web``, ``az!=b``, values may be
globs). A host is chosen when it matches one of the globs (if any are given) and
every label selector.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
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
    #: (name, value) pairs, sorted by name
    labels: tuple[tuple[str, str], ...] = ()

    def label(self, name: str) -> str | None:
        """The value of label ``name``, or None."""
        return dict(self.labels).get(name)


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
    labels: dict[str, dict[str, str]] = {}
    for group, specs in parsed.items():
        for i, spec in enumerate(specs):
            groups[spec.name] = groups.get(spec.name, ()) + (group,)
            mine = labels.setdefault(spec.name, {})
            for name, value in spec.labels:
                if mine.get(name, value) != value:
                    msg = f"{spec.name}: label {name}={value!r}, but {name}={mine[name]!r} in another group"
                    raise r.error(at, group, msg, i)
                mine[name] = value
    return {
        group: tuple(
            replace(s, groups=groups[s.name], labels=tuple(sorted(labels[s.name].items())))
            for s in specs
        )
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
            specs.append(_entry(item))
        except ValueError as exc:
            raise r.error(at, group, str(exc), i) from None
    return specs


_LABEL = re.compile(r"^[A-Za-z0-9_.-]+$")
_ENTRY_KEYS = ("host", "labels")


def _entry(item: Any) -> HostSpec:
    """One entry of a group: a string, or ``{ host = "...", labels = {...} }``.
    Raises ValueError with the message."""
    if isinstance(item, str):
        return parse_host(item)
    if not isinstance(item, dict):
        raise ValueError(
            f'expected a host or {{ host = "...", labels = {{ ... }} }}, got {type(item).__name__} {item!r}'
        )
    for name in item:
        if name not in _ENTRY_KEYS:
            near = difflib.get_close_matches(name, _ENTRY_KEYS, n=1)
            hint = f"did you mean {near[0]!r}?" if near else "expected host and labels"
            raise ValueError(f"unknown key {name!r} ({hint})")
    host = item.get("host")
    if not isinstance(host, str):
        raise ValueError(f"missing host (expected host = \"web1\"), got {host!r}")
    labels = item.get("labels", {})
    if not isinstance(labels, dict):
        raise ValueError(f"labels: expected a table like {{ role = \"web\" }}, got {labels!r}")
    for name, value in labels.items():
        if not _LABEL.match(name):
            raise ValueError(f"label {name!r}: expected letters, digits, '_', '.' or '-'")
        if not isinstance(value, str) or not value.strip() or "," in value:
            raise ValueError(f"label {name!r}: expected a non-empty string without ',', got {value!r}")
    return replace(parse_host(host), labels=tuple(sorted(labels.items())))


# -- which hosts: --hosts -------------------------------------------------------


class NoMatch(ValueError):
    """``--hosts`` chose no host; the message says what there is to choose from."""


@dataclass(frozen=True)
class Selector:
    """A parsed ``--hosts``: globs (any one matches) and label terms (all match)."""

    globs: tuple[str, ...] = ()
    #: (name, value glob, wanted): ``role=web`` is ("role", "web", True)
    labels: tuple[tuple[str, str, bool], ...] = ()

    def __call__(self, host: HostSpec) -> bool:
        if self.globs and not any(
            fnmatch.fnmatchcase(name, g) for g in self.globs for name in names(host)
        ):
            return False
        for name, value, wanted in self.labels:
            have = host.label(name)
            if (have is not None and fnmatch.fnmatchcase(have, value)) != wanted:
                return False
        return True


def parse_selector(pattern: str) -> Selector:
    """``web*,role=web,az!=b`` -> its globs and label terms. Raises ValueError for an
    empty term name (``=web``)."""
    globs: list[str] = []
    labels: list[tuple[str, str, bool]] = []
    for term in (t.strip() for t in pattern.split(",")):
        if not term:
            continue
        m = re.match(r"^([^=!]*?)\s*(!?=)\s*(.*)$", term)
        if m is None:
            globs.append(term)
            continue
        name, op, value = m.groups()
        if not name or not value:
            raise ValueError(f"{term!r} is not a label selector (expected name=value, e.g. role=web)")
        labels.append((name, value, op == "="))
    return Selector(tuple(globs), tuple(labels))


def names(h: HostSpec) -> tuple[str, ...]:
    """What ``--hosts`` globs match: the host as written, its address, its groups."""
    return (h.name, h.host, *h.groups)


def select(hosts: Sequence[HostSpec], pattern: str | None) -> list[HostSpec]:
    """The hosts ``--hosts pattern`` chooses, in config order (all when no pattern).

    Raises :class:`NoMatch` (a ValueError) when it chooses none, saying which groups
    and labels there are; ValueError for a malformed label selector."""
    if not pattern or not pattern.strip():
        return list(hosts)
    chosen = parse_selector(pattern)
    picked = [h for h in hosts if chosen(h)]
    if picked:
        return picked
    groups = sorted({g for h in hosts for g in h.groups})
    what = f"groups: {', '.join(groups) or 'none'}"
    known = _known_labels(hosts)
    if chosen.labels or known:
        shown = "; ".join(f"{n}={'|'.join(v)}" for n, v in known.items()) or "none"
        what += f"; labels: {shown}"
    nothing = "no host" if chosen.labels else "no group or host"
    raise NoMatch(f"--hosts {pattern!r} matches {nothing} ({what})")


def _known_labels(hosts: Iterable[HostSpec]) -> dict[str, list[str]]:
    known: dict[str, list[str]] = {}
    for h in hosts:
        for name, value in h.labels:
            if value not in known.setdefault(name, []):
                known[name].append(value)
    return dict(sorted(known.items()))

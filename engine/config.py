"""shipdeck.toml: read with tomllib, validated into typed objects.

Each key is declared once, as a dataclass field made by :func:`key`: its type is the
field's annotation, its default the field's default; bounds, checks and help ride in
the field's metadata. Validation, defaults and the README's config table
(``python -m engine.config --markdown``) all come from those fields; the sections are
:class:`Config`'s fields.

Every error is a :class:`ConfigError` that names the file, the line (where it can be
found), the key and what was expected, e.g.::

    shipdeck.toml:14: [deploy] batches[1]: "25" is not a count or a percentage (expected "3" or "25%")
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import math
import re
import sys
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from engine.errors import ConfigError

DEFAULT_CONFIG = "shipdeck.toml"

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


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def parse_size(value: str | int) -> tuple[float, bool]:
    """'25%' -> (25.0, True); '3' or 3 -> (3.0, False). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("expected a count or a percentage")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return float(value), False
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f'"{value}" is not a count or a percentage (expected "3" or "25%")')
    number, pct = float(m.group(1)), bool(m.group(2))
    if pct and number > 100:
        raise ValueError(f'"{value}" is more than 100%')
    if not pct and number != int(number):
        raise ValueError(f'"{value}" is not a whole number of hosts')
    return number, pct


def resolve_size(value: str | int, total: int) -> int:
    number, pct = parse_size(value)
    if pct:
        return math.ceil(total * number / 100)
    return int(number)


# -- checks a key's metadata names (each raises ValueError with the message) ----


def _rule(ok: Callable[[Any], Any], message: str) -> Callable[[Any], Any]:
    """A check: the value if ``ok(value)``, else ValueError(message.format(v=value))."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(message.format(v=value))
        return value

    return check


def _inside(value: str) -> bool:
    return not value.startswith("/") and ".." not in Path(value).parts


_not_empty = _rule(str.strip, "must not be empty")
_no_control = _rule(
    lambda v: not any(ord(ch) < 32 or ord(ch) == 127 for ch in v),
    "must not contain control characters (newline, tab, escape ...)",
)
_artifact = _rule(_inside, "expected a folder inside the build tree (relative, no '..')")
_shared_path = _rule(_inside, "{v!r} must be a relative path inside the release")
_waves = _rule(len, "expected at least one wave size")
_wave_size = _rule(
    lambda v: parse_size(v)[0] > 0, '"{v}" is an empty wave (expected at least 1 host)'
)
_wave_number = _rule(
    lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "expected a wave number >= 1, got {v!r}",
)
_port = _rule(lambda v: 0 < v < 65536, "expected a port 1-65535, got {v}")
_ws_url = _rule(lambda v: re.match(r"^wss?://", v), "expected a ws:// or wss:// URL, got {v!r}")
_size = _rule(parse_size, "")  # parse_size raises with its own message
_host = _rule(parse_host, "")


def _deploy_path(value: str) -> str:
    return _no_control(_not_empty(value))


def _none_if_empty(value: str) -> str | None:
    return value or None


def key(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    accepts: tuple[type, ...] = (),
    choices: tuple[str, ...] = (),
    check: Callable[[Any], Any] | None = None,
    each: Callable[[Any], None] | None = None,
    derive: Callable[[dict[str, Any]], Any] | None = None,
    shown: str | None = None,
) -> Any:
    """A config key: a dataclass field with its default (``...``: required) and its
    ``help`` for the README. ``min``: lowest value allowed; ``accepts``: TOML types
    taken besides the annotation's (``str()``-ed for a str key); ``choices``: the only
    strings allowed; ``check``: called with the value, returns it (possibly changed) or
    raises ValueError with the message; ``each``: called with each item of a list,
    raises ValueError; ``derive``: the value when the key is absent, from the keys given
    (None: the default); ``shown``: the default as the README shows it.
    """
    meta = {"help": help, "min": min, "accepts": accepts, "choices": choices, "check": check, "each": each, "derive": derive, "shown": shown}
    return field(metadata=meta) if default is ... else field(default=default, metadata=meta)


# -- typed config -------------------------------------------------------------


@dataclass(frozen=True)
class ProjectConfig:
    name: str = key(..., "name", check=_not_empty)
    repo: str = key(..., "git URL or local path (relative to the config)", check=_not_empty)
    ref: str = key("main", "branch, tag or sha; `--ref` overrides", check=_not_empty)


@dataclass(frozen=True)
class BuildConfig:
    commands: tuple[str, ...] = key((), "run locally in a clean `git archive` export")
    artifact: str | None = key(None, "folder to package", check=_artifact, shown="whole tree")
    timeout: float = key(1800.0, "seconds for each build command")


_PARALLEL = """hosts in flight at once (handshakes stay capped per sshd by `ssh.max_startups`); at
WAN latency the wall time is round trips, so more in flight is faster (`bench/wan_fanout.py`)"""
_BATCHES = "wave sizes: counts or % of selected hosts (rounded up); the last wave takes the rest"
_APPROVE = "`true`: wait for approval after every wave but the last; or a list of wave numbers"
_MAX_FAIL = "failed hosts allowed (count or %); one more stops the deploy"
_SHARED = "paths linked from `<path>/shared/` into each release"
_LOCK_WAIT = "seconds to wait for another deploy's host locks (0: stop at once, exit 3)"
_UNAVAILABLE = "hosts of the fleet drained or restarting at once (count or %); the rest wait"
_LOCK_TTL = """a host lock whose heartbeat (the host's clock, refreshed every ttl/4 by the
deploying client) is older than this is stale and is taken over, visibly"""


@dataclass(frozen=True)
class DeployConfig:
    path: str = key(..., "absolute, relative or `~/...` (under the login home)", check=_deploy_path)
    keep_releases: int = key(5, "releases kept per host", min=2)
    parallel: int = key(100, _PARALLEL, min=1)
    batches: tuple[str, ...] = key(("100%",), _BATCHES, check=_waves, each=_wave_size)
    max_fail: str = key("100%", _MAX_FAIL, accepts=(int,), check=_size)
    shared: tuple[str, ...] = key((), _SHARED, each=_shared_path)
    before_activate: tuple[str, ...] = key((), "hooks (cwd: the new release)")
    after_activate: tuple[str, ...] = key((), "hooks (cwd: `current`)")
    health: str | None = key(None, "health command (cwd: `current`)", check=_none_if_empty)
    health_timeout: float = key(30.0, "seconds the health command has to pass", min=0.1)
    health_interval: float = key(1.0, "seconds between health command runs", min=0.01)
    hook_timeout: float = key(300.0, "seconds per hook", min=0.1)
    rollback_on_failure: bool = key(True, "roll an unhealthy host back")
    approve: bool | tuple[int, ...] = key(False, _APPROVE, each=_wave_number)
    lock_wait: float = key(0.0, _LOCK_WAIT, min=0)
    lock_ttl: float = key(60.0, _LOCK_TTL, min=1)
    drain: tuple[str, ...] = key((), "hooks taking a host out of rotation (see [balancer])")
    undrain: tuple[str, ...] = key((), "hooks putting a healthy host back in rotation")
    maintenance_on: tuple[str, ...] = key((), "hooks `shipdeck maintenance on` runs (where drain hooks run)")
    maintenance_off: tuple[str, ...] = key((), "hooks `shipdeck maintenance off` runs")
    max_unavailable: str | None = key(None, _UNAVAILABLE, accepts=(int,), check=_size, shown="no limit")
    once: tuple[str, ...] = key((), "run on one host once every host is unpacked, before any is activated (cwd: the release)")
    once_host: str | None = key(None, "the host `once` runs on", shown="first of the first wave")
    confirm_exec: str = key("none", "`typed`: `shipdeck exec` asks to type the host count (or `--yes`)", choices=("none", "typed"))


_SSH = "ssh config"
_POLICIES = ("strict", "accept-new")
_PASSWORD = "env var holding the password; else a prompt (TUI modal / TTY)"
_MAX_SESSIONS = "commands in flight per connection (below sshd's MaxSessions 10)"
_STALL = 'seconds without a byte moving before an upload fails as "upload stalled"'
_JUMP = "ProxyJump host: one connection, every target tunnelled through it"
_SSH_CONFIG = """OpenSSH client config, read as OpenSSH reads it (see [ssh_config
options](#ssh_config-options-shipdeck-honours)); `""`: none"""
_DEAD_AFTER = """seconds a host may stay silent (keepalives unanswered) before its step
fails with "host stopped answering" (if only `keepalive` is set: 4 x keepalive)"""
_RELAY_WAIT = """seconds to reach the relay and hear its welcome; after that a deploy or
rollback stops (exit 3) unless `--without-relay`"""
_PASSPHRASE = """env var holding the passphrase of encrypted identity files (else the agent,
else a prompt)"""


@dataclass(frozen=True)
class SshConfig:
    user: str | None = key(None, "login user for every host", shown=_SSH)
    port: int | None = key(None, "port for every host", check=_port, shown=_SSH)
    identity: str | None = key(None, "identity file for every host", shown=_SSH)
    jump: str | None = key(None, _JUMP, check=_host)
    host_key_policy: str = key("strict", "a changed key is always refused", choices=_POLICIES)
    known_hosts: str = key("~/.ssh/known_hosts", "where host keys are trusted and added")
    config: str | None = key("~/.ssh/config", _SSH_CONFIG, check=_none_if_empty)
    password_env: str | None = key(None, _PASSWORD)
    max_startups: int = key(8, "handshakes in flight per sshd (below its MaxStartups 10)", min=1)
    max_sessions: int = key(8, _MAX_SESSIONS, min=1)
    connect_timeout: float = key(10.0, "seconds to connect and log in", min=0.1)
    command_timeout: float = key(600.0, "seconds a remote command may run")
    keepalive: float | None = key(None, "seconds between keepalives", min=0.1, shown="`dead_after`/4")
    dead_after: float = key(20.0, _DEAD_AFTER, min=0.4, derive=lambda given: 4 * given["keepalive"] if "keepalive" in given else None)
    max_handshakes: int = key(64, "handshakes in flight over the whole fleet", min=1)
    passphrase_env: str | None = key(None, _PASSPHRASE)
    upload_stall: float = key(30.0, _STALL, min=0.1)


@dataclass(frozen=True)
class RelayConfig:
    url: str = key(..., "the relay's `ws://` or `wss://` URL (see below)", check=_ws_url)
    room: str = key(..., "the shared room")
    token_env: str = key("SHIPDECK_TOKEN", "env var holding the relay token")
    connect_timeout: float = key(10.0, _RELAY_WAIT, min=0.1)


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole shipdeck.toml: a field per section, in the order the README lists them."""

    path: Path
    project: ProjectConfig
    build: BuildConfig = field(default_factory=BuildConfig)
    deploy: DeployConfig
    ssh: SshConfig = field(default_factory=SshConfig)
    hosts: dict[str, tuple[HostSpec, ...]] = key(
        ..., "`host`, `host:port`, `user@host:port` or an ssh-config alias"
    )
    relay: RelayConfig | None = None
    balancer: _balancer.BalancerConfig | None = None
    aliases: dict[str, str] | None = key(None, '`console = "exec --hosts web1 -- ./bin/console"`: `shipdeck console` runs it (see Aliases)')

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def all_hosts(self) -> list[HostSpec]:
        seen: dict[str, HostSpec] = {}
        for specs in self.hosts.values():
            for spec in specs:
                seen.setdefault(spec.name, spec)
        return list(seen.values())

    def select_hosts(self, pattern: str | None) -> list[HostSpec]:
        """Hosts whose group or name matches one of the comma-separated globs.

        Raises :class:`ConfigError` when the pattern matches nothing.
        """
        hosts = self.all_hosts()
        if not pattern:
            return hosts
        globs = [p.strip() for p in pattern.split(",") if p.strip()]
        chosen = [
            h for h in hosts if any(fnmatch.fnmatchcase(x, g) for g in globs for x in _names(h))
        ]
        if not chosen:
            known = ", ".join(sorted(self.hosts)) or "none"
            msg = f"--hosts {pattern!r} matches no group or host (groups: {known})"
            raise ConfigError(self.path, msg, key="hosts")
        return chosen


def _names(h: HostSpec) -> tuple[str, ...]:
    """What ``--hosts`` globs match: the host as written, its address, its groups."""
    return (h.name, h.host, *h.groups)


# -- what the fields say ------------------------------------------------------

#: TOML value types taken for a Python type (an int is a fine float)
_TOML: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float), bool: (bool,), tuple: (list,)}
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


class _Key(NamedTuple):
    """A field of a config dataclass (a key, or a section of :class:`Config`)."""

    name: str
    types: tuple[Any, ...]  # the annotation's types, None left out, generics by origin
    item: Any  # the item type of a tuple
    field: Field[Any]

    @property
    def required(self) -> bool:
        return self.field.default is MISSING and self.field.default_factory is MISSING

    @property
    def toml(self) -> tuple[type, ...]:
        taken = sum((_TOML.get(t, ()) for t in self.types), ())
        return taken + self.field.metadata.get("accepts", ())

    def meta(self, name: str) -> Any:
        return self.field.metadata.get(name)


@functools.cache
def _keys(cls: type) -> tuple[_Key, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        parts = tuple(p for p in parts if p is not type(None))
        item = next((typing.get_args(p)[0] for p in parts if typing.get_origin(p) is tuple), None)
        out.append(_Key(f.name, tuple(typing.get_origin(p) or p for p in parts), item, f))
    return tuple(out)


def _sections() -> tuple[_Key, ...]:
    """The sections of a shipdeck.toml: :class:`Config`'s fields but ``path``."""
    return _keys(Config)[1:]


def _type_name(toml: tuple[type, ...]) -> str:
    named = [t for t in toml if t is not int or float not in toml]
    return " or ".join(_NAMES.get(t, "a list" if t is list else t.__name__) for t in named)


# -- the validator ------------------------------------------------------------


class _Reader:
    """Checks one parsed TOML document; errors name the line of ``[section] key``
    (found in the text: tomllib gives no positions)."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def line(self, section: str, key: str | None = None) -> int | None:
        current = None
        header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
        for number, raw in enumerate(self.lines, start=1):
            m = header.match(raw)
            if m:
                current = m.group(1).strip().strip('"')
                if key is None and current == section:
                    return number
                continue
            if key is not None and current == section:
                if re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", raw):
                    return number
        return None

    def error(self, section: str, key: str | None, msg: str, i: int | None = None) -> ConfigError:
        name = f"[{section}]" + (f" {key}" if key else "") + (f"[{i}]" if i is not None else "")
        return ConfigError(self.path, msg, key=name, line=self.line(section, key))

    def check_keys(self, section: str, keys: tuple[_Key, ...], value: dict[str, Any]) -> None:
        """Unknown keys (with the nearest known one), missing required keys, wrong types."""
        names = [k.name for k in keys]
        for name in value:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(names)})"
                raise self.error(section, name, f"unknown key{hint}")
        for k in keys:
            v = value.get(k.name)
            if v is None and k.required:
                raise self.error(section, None, f"missing required key {k.name!r}")
            if v is not None and (
                not isinstance(v, k.toml) or (isinstance(v, bool) and bool not in k.toml)
            ):
                got = f"got {type(v).__name__} {v!r}"
                raise self.error(section, k.name, f"expected {_type_name(k.toml)}, {got}")

    def items(self, section: str, k: _Key, value: list[Any]) -> tuple[Any, ...]:
        for i, item in enumerate(value):
            try:
                if k.item is str and not isinstance(item, str):
                    raise ValueError(f"expected a string, got {type(item).__name__} {item!r}")
                if k.item is str and not item.strip():
                    raise ValueError("expected a non-empty string")
                if k.meta("each"):
                    k.meta("each")(item)
            except ValueError as exc:
                raise self.error(section, k.name, str(exc), i) from None
        return tuple(value)

    def value(self, section: str, k: _Key, value: Any) -> Any:
        """One given value, checked and converted to the field's type."""
        if isinstance(value, list):
            value = self.items(section, k, value)
        elif float in k.types and not isinstance(value, bool):
            value = float(value)
        try:
            if k.meta("choices") and value not in k.meta("choices"):
                wanted = " or ".join(f'"{c}"' for c in k.meta("choices"))
                raise ValueError(f"expected {wanted}, got {value!r}")
            if k.meta("check"):
                value = k.meta("check")(value)
        except ValueError as exc:
            raise self.error(section, k.name, str(exc)) from None
        if str in k.types and not isinstance(value, str | None):
            value = str(value)
        low = k.meta("min")
        if low is not None and value is not None and value < low:
            raise self.error(section, k.name, f"expected a number >= {low:g}, got {value!r}")
        return value

    def section(self, data: dict[str, Any], s: _Key) -> Any:
        """The section as its dataclass; an absent or empty one whose default is None
        ([relay]) is None. Raises for a missing required one."""
        given = data.get(s.name)
        if given is None and s.required:
            raise ConfigError(self.path, f"missing section [{s.name}]", key=f"[{s.name}]")
        if given is not None and not isinstance(given, dict):
            raise self.error(s.name, None, "expected a table")
        if not given and s.field.default is None:
            return None
        given = given or {}
        keys = _keys(s.types[0])
        self.check_keys(s.name, keys, given)
        values = {k.name: self.value(s.name, k, given[k.name]) for k in keys if k.name in given}
        for k in keys:
            if k.name not in values and k.meta("derive"):
                derived = k.meta("derive")(values)
                values |= {k.name: derived} if derived is not None else {}
        return s.types[0](**values)

    def hosts(self, data: dict[str, Any]) -> dict[str, tuple[HostSpec, ...]]:
        h = data.get("hosts")
        if h is None:
            example = 'groups of hosts, e.g. web = ["web1"]'
            raise ConfigError(self.path, f"missing section [hosts] ({example})", key="[hosts]")
        if not isinstance(h, dict) or not h:
            message = 'no host groups (expected e.g. web = ["web1.example.com"])'
            message = message if isinstance(h, dict) else "expected a table of groups"
            raise ConfigError(self.path, message, key="[hosts]", line=self.line("hosts"))
        parsed = {group: self.group(group, items) for group, items in h.items()}
        groups: dict[str, tuple[str, ...]] = {}
        for group, specs in parsed.items():
            for spec in specs:
                groups[spec.name] = groups.get(spec.name, ()) + (group,)
        return {
            group: tuple(HostSpec(s.name, s.host, s.port, s.user, groups[s.name]) for s in specs)
            for group, specs in parsed.items()
        }

    def group(self, group: str, items: Any) -> list[HostSpec]:
        if not isinstance(items, list):
            kind = type(items).__name__
            raise self.error("hosts", group, f"expected a list of hosts, got {kind}")
        if not items:
            raise self.error("hosts", group, "empty host list (expected at least one host)")
        specs = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, str):
                    raise ValueError(f"expected a string, got {type(item).__name__} {item!r}")
                specs.append(parse_host(item))
            except ValueError as exc:
                raise self.error("hosts", group, str(exc), i) from None
        return specs


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate a shipdeck.toml. Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "no such file (pass -c FILE or create shipdeck.toml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read: {exc}") from None
    return parse_config(text, path)


def parse_config(text: str, path: str | Path = DEFAULT_CONFIG) -> Config:
    """Validate TOML text as a shipdeck config. Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        raise ConfigError(path, f"invalid TOML: {exc}", line=line) from None
    r = _Reader(path, text)
    known = sorted(s.name for s in _sections())
    for section in data:
        if section not in known:
            near = difflib.get_close_matches(section, known, n=1)
            hint = f" (did you mean [{near[0]}]?)" if near else f" (valid: {', '.join(known)})"
            line = r.line(section)
            raise ConfigError(path, f"unknown section{hint}", key=f"[{section}]", line=line)
    parts = {s.name: r.hosts(data) if s.name == "hosts" else data.get(s.name) if dict in s.types else r.section(data, s) for s in _sections()}
    return Config(path=path, **parts)


def split_waves(hosts: list[HostSpec], batches: tuple[str, ...] | list[str]) -> list[list[HostSpec]]:
    """Split hosts into waves: each entry a count or a % of all hosts (rounded up),
    in config order; the last wave takes every host left. Empty waves are dropped."""
    total = len(hosts)
    waves: list[list[HostSpec]] = []
    start = 0
    for i, size in enumerate(batches):
        if start >= total:
            break
        n = total - start if i == len(batches) - 1 else max(1, resolve_size(size, total))
        waves.append(hosts[start : start + n])
        start += n
    if start < total:
        waves.append(hosts[start:])
    return waves


# -- the README's config table --------------------------------------------------


def _shown(k: _Key, section: _Key) -> str:
    """The default as the README shows it."""
    value = k.field.default
    if k.meta("shown") or k.required:
        where = "" if section.required else f" in [{section.name}]"
        return k.meta("shown") or f"required{where}"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int | float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    return f"`{value}`"


def markdown_table() -> str:
    """The README's config reference: one row per key, from the fields above."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for s in _sections():
        keys = (
            [(".<group>" if s.name == "hosts" else ".<name>", s)] if dict in s.types else [(f".{k.name}", k) for k in _keys(s.types[0])]
        )
        for name, k in keys:
            meaning = " ".join(k.meta("help").split())
            if k.meta("choices"):
                meaning = " or ".join(f"`{c}`" for c in k.meta("choices")) + "; " + meaning
            rows.append(f"| `{s.name}{name}` | {_shown(k, s)} | {meaning} |")
    return "\n".join(rows) + "\n"


from engine import balancer as _balancer  # noqa: E402  [balancer]'s keys, declared with key()

if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m engine.config --markdown  (prints the README's config table)")
    sys.stdout.write(markdown_table())

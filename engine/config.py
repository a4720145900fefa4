"""shipdeck.toml: read with tomllib, validated into typed objects.

Every error is a :class:`ConfigError` that names the file, the line (where it can be
found), the key and what was expected, e.g.::

    shipdeck.toml:14: [deploy] batches[1]: "25" is not a count or a percentage (expected "3" or "25%")
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

DEFAULT_CONFIG = "shipdeck.toml"


# -- typed config -------------------------------------------------------------


@dataclass(frozen=True)
class HostSpec:
    """One host as written in [hosts]: ``host``, ``host:port``, ``user@host:port``."""

    name: str  # as written; the node name in the tree
    host: str  # hostname, address or ssh-config alias
    port: int | None = None
    user: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectConfig:
    name: str
    repo: str
    ref: str = "main"


@dataclass(frozen=True)
class BuildConfig:
    commands: tuple[str, ...] = ()
    artifact: str | None = None
    timeout: float = 1800.0


@dataclass(frozen=True)
class DeployConfig:
    path: str
    keep_releases: int = 5
    parallel: int = 100  # hosts in flight; at WAN latency round trips, not CPU, are the limit
    batches: tuple[str, ...] = ("100%",)
    max_fail: str = "100%"
    shared: tuple[str, ...] = ()
    before_activate: tuple[str, ...] = ()
    after_activate: tuple[str, ...] = ()
    health: str | None = None
    health_timeout: float = 30.0
    health_interval: float = 1.0
    hook_timeout: float = 300.0
    rollback_on_failure: bool = True
    approve: bool | tuple[int, ...] = False  # True: after every wave but the last
    lock_wait: float = 0.0  # seconds to wait for another deploy's host locks (0: stop at once)
    lock_ttl: float = 60.0  # a host lock whose heartbeat is older than this is stale


@dataclass(frozen=True)
class SshConfig:
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    jump: str | None = None
    host_key_policy: str = "strict"
    known_hosts: str = "~/.ssh/known_hosts"
    config: str | None = "~/.ssh/config"
    password_env: str | None = None
    max_startups: int = 8
    max_sessions: int = 8
    connect_timeout: float = 10.0
    command_timeout: float = 600.0
    keepalive: float | None = None  # seconds between keepalives (None: dead_after / 4)
    dead_after: float = 20.0  # a host silent this long (keepalives unanswered) is dead
    max_handshakes: int = 64  # handshakes in flight over the whole fleet
    passphrase_env: str | None = None  # passphrase of encrypted identity files
    upload_stall: float = 30.0  # an upload that moves no byte this long fails


@dataclass(frozen=True)
class RelayConfig:
    url: str
    room: str
    token_env: str = "SHIPDECK_TOKEN"


@dataclass(frozen=True)
class Config:
    path: Path
    project: ProjectConfig
    deploy: DeployConfig
    build: BuildConfig = field(default_factory=BuildConfig)
    ssh: SshConfig = field(default_factory=SshConfig)
    hosts: dict[str, tuple[HostSpec, ...]] = field(default_factory=dict)
    relay: RelayConfig | None = None

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
            h
            for h in hosts
            if any(
                fnmatch.fnmatchcase(h.name, g)
                or fnmatch.fnmatchcase(h.host, g)
                or any(fnmatch.fnmatchcase(grp, g) for grp in h.groups)
                for g in globs
            )
        ]
        if not chosen:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise ConfigError(
                self.path,
                f"--hosts {pattern!r} matches no group or host (groups: {known})",
                key="hosts",
            )
        return chosen


# -- parsing helpers ----------------------------------------------------------

_HOST_RE = re.compile(
    r"""^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?
        (?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_][A-Za-z0-9._-]*))
        (?::(?P<port>[0-9]{1,5}))?$""",
    re.X,
)


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


# -- the validator ------------------------------------------------------------

_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    # key: (type(s), required)
    "project": {"name": (str, True), "repo": (str, True), "ref": (str, False)},
    "build": {
        "commands": (list, False),
        "artifact": (str, False),
        "timeout": ((int, float), False),
    },
    "deploy": {
        "path": (str, True),
        "keep_releases": (int, False),
        "parallel": (int, False),
        "batches": (list, False),
        "max_fail": ((str, int), False),
        "shared": (list, False),
        "before_activate": (list, False),
        "after_activate": (list, False),
        "health": (str, False),
        "health_timeout": ((int, float), False),
        "health_interval": ((int, float), False),
        "hook_timeout": ((int, float), False),
        "rollback_on_failure": (bool, False),
        "approve": ((bool, list), False),
        "lock_wait": ((int, float), False),
        "lock_ttl": ((int, float), False),
    },
    "ssh": {
        "user": (str, False),
        "port": (int, False),
        "identity": (str, False),
        "jump": (str, False),
        "host_key_policy": (str, False),
        "known_hosts": (str, False),
        "config": (str, False),
        "password_env": (str, False),
        "max_startups": (int, False),
        "max_sessions": (int, False),
        "connect_timeout": ((int, float), False),
        "command_timeout": ((int, float), False),
        "keepalive": ((int, float), False),
        "dead_after": ((int, float), False),
        "max_handshakes": (int, False),
        "passphrase_env": (str, False),
        "upload_stall": ((int, float), False),
    },
    "relay": {"url": (str, True), "room": (str, True), "token_env": (str, False)},
}
_SECTIONS_REQUIRED = ("project", "deploy", "hosts")
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
}


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return " or ".join(
            _TYPE_NAMES.get(x, x.__name__) for x in t if x is not float or int not in t
        )
    return _TYPE_NAMES.get(t, t.__name__)


class _Locator:
    """Finds the line of ``[section] key`` in the TOML text (tomllib gives no positions)."""

    def __init__(self, text: str):
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


class _Reader:
    def __init__(self, path: Path, text: str):
        self.path = path
        self.loc = _Locator(text)

    def error(
        self, section: str, key: str | None, message: str, index: int | None = None
    ) -> ConfigError:
        name = (
            f"[{section}]"
            + (f" {key}" if key else "")
            + (f"[{index}]" if index is not None else "")
        )
        return ConfigError(self.path, message, key=name, line=self.loc.line(section, key))

    def table(self, data: dict[str, Any], section: str, required: bool) -> dict[str, Any]:
        value = data.get(section)
        if value is None:
            if required:
                raise ConfigError(self.path, f"missing section [{section}]", key=f"[{section}]")
            return {}
        if not isinstance(value, dict):
            raise self.error(section, None, "expected a table")
        schema = _SCHEMA.get(section)
        if schema is not None:
            for key in value:
                if key not in schema:
                    near = difflib.get_close_matches(key, list(schema), n=1)
                    hint = (
                        f" (did you mean {near[0]!r}?)"
                        if near
                        else f" (valid: {', '.join(schema)})"
                    )
                    raise self.error(section, key, f"unknown key{hint}")
            for key, (typ, req) in schema.items():
                if key not in value:
                    if req:
                        raise self.error(section, None, f"missing required key {key!r}")
                    continue
                v = value[key]
                ok = isinstance(v, typ) and not (
                    isinstance(v, bool) and typ in (int, (int, float), (str, int))
                )
                if not ok:
                    raise self.error(
                        section, key, f"expected {_type_name(typ)}, got {type(v).__name__} {v!r}"
                    )
        return value

    def str_list(
        self, section: str, key: str, value: list[Any], *, nonempty_items: bool = True
    ) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(
                    section, key, f"expected a string, got {type(item).__name__} {item!r}", i
                )
            if nonempty_items and not item.strip():
                raise self.error(section, key, "expected a non-empty string", i)
            out.append(item)
        return tuple(out)

    def positive(self, section: str, key: str, value: float, minimum: float = 1) -> None:
        if value < minimum:
            raise self.error(section, key, f"expected a number >= {minimum:g}, got {value!r}")


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
        msg = str(exc)
        m = re.search(r"at line (\d+)", msg)
        raise ConfigError(
            path, f"invalid TOML: {msg}", line=int(m.group(1)) if m else None
        ) from None
    r = _Reader(path, text)

    known = set(_SCHEMA) | {"hosts"}
    for section in data:
        if section not in known:
            near = difflib.get_close_matches(section, sorted(known), n=1)
            hint = (
                f" (did you mean [{near[0]}]?)" if near else f" (valid: {', '.join(sorted(known))})"
            )
            raise ConfigError(
                path, f"unknown section{hint}", key=f"[{section}]", line=r.loc.line(section)
            )

    p = r.table(data, "project", True)
    project = ProjectConfig(name=p["name"], repo=p["repo"], ref=p.get("ref", "main"))
    for key in ("name", "repo", "ref"):
        if not getattr(project, key).strip():
            raise r.error("project", key, "must not be empty")

    b = r.table(data, "build", False)
    build = BuildConfig(
        commands=r.str_list("build", "commands", b.get("commands", [])),
        artifact=b.get("artifact"),
        timeout=float(b.get("timeout", 1800)),
    )
    if build.artifact is not None and (
        build.artifact.startswith("/") or ".." in Path(build.artifact).parts
    ):
        raise r.error(
            "build", "artifact", "expected a folder inside the build tree (relative, no '..')"
        )

    d = r.table(data, "deploy", True)
    if not d["path"].strip():
        raise r.error("deploy", "path", "must not be empty")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in d["path"]):
        raise r.error(
            "deploy", "path", "must not contain control characters (newline, tab, escape ...)"
        )
    batches = (
        r.str_list("deploy", "batches", d.get("batches", ["100%"])) if "batches" in d else ("100%",)
    )
    if not batches:
        raise r.error("deploy", "batches", "expected at least one wave size")
    for i, size in enumerate(batches):
        try:
            number, _ = parse_size(size)
        except ValueError as exc:
            raise r.error("deploy", "batches", str(exc), i) from None
        if number <= 0:
            raise r.error(
                "deploy", "batches", f'"{size}" is an empty wave (expected at least 1 host)', i
            )
    max_fail = d.get("max_fail", "100%")
    try:
        parse_size(max_fail)
    except ValueError as exc:
        raise r.error("deploy", "max_fail", str(exc)) from None
    approve = d.get("approve", False)
    if isinstance(approve, list):
        for i, item in enumerate(approve):
            if not isinstance(item, int) or isinstance(item, bool) or item < 1:
                raise r.error("deploy", "approve", f"expected a wave number >= 1, got {item!r}", i)
        approve = tuple(approve)
    shared = r.str_list("deploy", "shared", d.get("shared", []))
    for i, item in enumerate(shared):
        if item.startswith("/") or ".." in Path(item).parts:
            raise r.error(
                "deploy", "shared", f"{item!r} must be a relative path inside the release", i
            )
    deploy = DeployConfig(
        path=d["path"],
        keep_releases=d.get("keep_releases", 5),
        parallel=d.get("parallel", 100),
        batches=batches,
        max_fail=str(max_fail),
        shared=shared,
        before_activate=r.str_list("deploy", "before_activate", d.get("before_activate", [])),
        after_activate=r.str_list("deploy", "after_activate", d.get("after_activate", [])),
        health=d.get("health") or None,
        health_timeout=float(d.get("health_timeout", 30)),
        health_interval=float(d.get("health_interval", 1.0)),
        hook_timeout=float(d.get("hook_timeout", 300)),
        rollback_on_failure=d.get("rollback_on_failure", True),
        approve=approve,
        lock_wait=float(d.get("lock_wait", 0)),
        lock_ttl=float(d.get("lock_ttl", 60)),
    )
    r.positive("deploy", "keep_releases", deploy.keep_releases, 2)
    r.positive("deploy", "parallel", deploy.parallel)
    for key in ("health_timeout", "hook_timeout"):
        r.positive("deploy", key, getattr(deploy, key), 0.1)
    r.positive("deploy", "health_interval", deploy.health_interval, 0.01)
    r.positive("deploy", "lock_wait", deploy.lock_wait, 0)
    r.positive("deploy", "lock_ttl", deploy.lock_ttl, 1)

    s = r.table(data, "ssh", False)
    policy = s.get("host_key_policy", "strict")
    if policy not in ("strict", "accept-new"):
        raise r.error(
            "ssh", "host_key_policy", f'expected "strict" or "accept-new", got {policy!r}'
        )
    ssh = SshConfig(
        user=s.get("user"),
        port=s.get("port"),
        identity=s.get("identity"),
        jump=s.get("jump"),
        host_key_policy=policy,
        known_hosts=s.get("known_hosts", "~/.ssh/known_hosts"),
        config=s.get("config", "~/.ssh/config") or None,
        password_env=s.get("password_env"),
        max_startups=s.get("max_startups", 8),
        max_sessions=s.get("max_sessions", 8),
        connect_timeout=float(s.get("connect_timeout", 10)),
        command_timeout=float(s.get("command_timeout", 600)),
        # dead_after (seconds without an answer) sets the keepalive cadence: 3 unanswered
        # keepalives, one every dead_after/4 s. A config that sets only the older
        # `keepalive` key keeps its meaning (dead after 4 x keepalive).
        keepalive=float(s["keepalive"]) if "keepalive" in s else None,
        dead_after=float(s.get("dead_after", 4 * float(s.get("keepalive", 5)))),
        max_handshakes=s.get("max_handshakes", 64),
        passphrase_env=s.get("passphrase_env"),
        upload_stall=float(s.get("upload_stall", 30)),
    )
    if ssh.port is not None and not 0 < ssh.port < 65536:
        raise r.error("ssh", "port", f"expected a port 1-65535, got {ssh.port}")
    r.positive("ssh", "max_startups", ssh.max_startups)
    r.positive("ssh", "upload_stall", ssh.upload_stall, 0.1)
    r.positive("ssh", "max_sessions", ssh.max_sessions)
    r.positive("ssh", "connect_timeout", ssh.connect_timeout, 0.1)
    r.positive("ssh", "max_handshakes", ssh.max_handshakes)
    r.positive("ssh", "dead_after", ssh.dead_after, 0.4)
    if ssh.keepalive is not None:
        r.positive("ssh", "keepalive", ssh.keepalive, 0.1)
    if ssh.jump is not None:
        try:
            parse_host(ssh.jump)
        except ValueError as exc:
            raise r.error("ssh", "jump", str(exc)) from None

    h = data.get("hosts")
    if h is None:
        raise ConfigError(
            path, 'missing section [hosts] (groups of hosts, e.g. web = ["web1"])', key="[hosts]"
        )
    if not isinstance(h, dict):
        raise ConfigError(
            path, "expected a table of groups", key="[hosts]", line=r.loc.line("hosts")
        )
    if not h:
        raise ConfigError(
            path,
            'no host groups (expected e.g. web = ["web1.example.com"])',
            key="[hosts]",
            line=r.loc.line("hosts"),
        )
    hosts: dict[str, tuple[HostSpec, ...]] = {}
    memberships: dict[str, list[str]] = {}
    for group, items in h.items():
        if not isinstance(items, list):
            raise r.error("hosts", group, f"expected a list of hosts, got {type(items).__name__}")
        if not items:
            raise r.error("hosts", group, "empty host list (expected at least one host)")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise r.error(
                    "hosts", group, f"expected a string, got {type(item).__name__} {item!r}", i
                )
            try:
                spec = parse_host(item)
            except ValueError as exc:
                raise r.error("hosts", group, str(exc), i) from None
            memberships.setdefault(spec.name, []).append(group)
    for group, items in h.items():
        specs = []
        for item in items:
            spec = parse_host(item)
            specs.append(
                HostSpec(spec.name, spec.host, spec.port, spec.user, tuple(memberships[spec.name]))
            )
        hosts[group] = tuple(specs)

    relay = None
    rl = r.table(data, "relay", False)
    if rl:
        if not re.match(r"^wss?://", rl["url"]):
            raise r.error("relay", "url", f"expected a ws:// or wss:// URL, got {rl['url']!r}")
        relay = RelayConfig(
            url=rl["url"], room=rl["room"], token_env=rl.get("token_env", "SHIPDECK_TOKEN")
        )

    return Config(
        path=path, project=project, build=build, deploy=deploy, ssh=ssh, hosts=hosts, relay=relay
    )


def split_waves(
    hosts: list[HostSpec], batches: tuple[str, ...] | list[str]
) -> list[list[HostSpec]]:
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

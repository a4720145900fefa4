"""shipdeck.toml: read with tomllib, validated into typed objects.

Each key is declared once, as a dataclass field made by :func:`key` (the machinery is
:mod:`engine.configschema`): its type is the field's annotation, its default the
field's default; bounds, checks and help ride in the field's metadata. Validation,
defaults and the README's config table (``python -m engine.config --markdown``) all
come from those fields. The sections are :class:`Config`'s fields: a new section is
one dataclass (a table, like ``[deploy]``) or a tuple of one (an array of tables, like
``[[freeze]]``) declared there, its keys made with :func:`key`. Hosts are
:mod:`engine.hosts`.

Every error is a :class:`ConfigError` that names the file, the line (where it can be
found), the key and what was expected, e.g.::

    shipdeck.toml:14: [deploy] batches[1]: "25" is not a count or a percentage (expected "3" or "25%")
"""

from __future__ import annotations

import math
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import environments
from engine.appsecrets import SecretsConfig
from engine.balancerconfig import BalancerConfig
from engine.configschema import Reader, key, keys, rule, table_rows
from engine.errors import ConfigError
from engine.freeze import FreezeWindow
from engine.hosts import HostSpec, parse_host, read_hosts, select
from engine.notify import NotifyEntry

__all__ = [
    "DEFAULT_CONFIG",
    "BuildConfig",
    "Config",
    "ConfigError",
    "DeployConfig",
    "HostSpec",
    "ProjectConfig",
    "RelayConfig",
    "SshConfig",
    "key",
    "load_config",
    "markdown_table",
    "parse_config",
    "parse_host",
    "parse_size",
    "resolve_size",
    "split_waves",
]

DEFAULT_CONFIG = "shipdeck.toml"

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


def _inside(value: str) -> bool:
    return not value.startswith("/") and ".." not in Path(value).parts


_not_empty = rule(str.strip, "must not be empty")
_no_control = rule(
    lambda v: not any(ord(ch) < 32 or ord(ch) == 127 for ch in v),
    "must not contain control characters (newline, tab, escape ...)",
)
_artifact = rule(_inside, "expected a folder inside the build tree (relative, no '..')")
_shared_path = rule(_inside, "{v!r} must be a relative path inside the release")
_waves = rule(len, "expected at least one wave size")
_wave_size = rule(
    lambda v: parse_size(v)[0] > 0, '"{v}" is an empty wave (expected at least 1 host)'
)
_wave_number = rule(
    lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "expected a wave number >= 1, got {v!r}",
)
_at_most_100 = rule(lambda v: v <= 100, "expected at most 100 approvers, got {v}")
_port = rule(lambda v: 0 < v < 65536, "expected a port 1-65535, got {v}")
_ws_url = rule(lambda v: re.match(r"^wss?://", v), "expected a ws:// or wss:// URL, got {v!r}")
_size = rule(parse_size, "")  # parse_size raises with its own message
_host = rule(parse_host, "")


def _deploy_path(value: str) -> str:
    return _no_control(_not_empty(value))


def _none_if_empty(value: str) -> str | None:
    return value or None


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
_APPROVERS = """distinct operators whose approvals open a gate; 2 or more: none of them the
deploying operator (four eyes; approvals come through the relay, see Four eyes)"""
_DISTINCT = "`true`: a gate needs an approver who is not the deploying operator (see Four eyes)"
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
    approvers: int = key(1, _APPROVERS, min=1, check=_at_most_100)
    require_distinct_approver: bool = key(False, _DISTINCT)
    lock_wait: float = key(0.0, _LOCK_WAIT, min=0)
    lock_ttl: float = key(60.0, _LOCK_TTL, min=1)
    peer_fanout: int = key(
        3,
        "hosts one host of a site copies the artifact to (see Large artifacts); 0: every"
        " host gets it from shipdeck",
        min=0,
    )
    drain: tuple[str, ...] = key((), "hooks taking a host out of rotation (see [balancer])")
    undrain: tuple[str, ...] = key((), "hooks putting a healthy host back in rotation")
    maintenance_on: tuple[str, ...] = key(
        (), "hooks `shipdeck maintenance on` runs (where drain hooks run)"
    )
    maintenance_off: tuple[str, ...] = key((), "hooks `shipdeck maintenance off` runs")
    max_unavailable: str | None = key(
        None, _UNAVAILABLE, accepts=(int,), check=_size, shown="no limit"
    )
    once: tuple[str, ...] = key(
        (),
        "run on one host once every host is unpacked, before any is activated (cwd: the release)",
    )
    once_host: str | None = key(None, "the host `once` runs on", shown="first of the first wave")
    confirm_exec: str = key(
        "none",
        "`typed`: `shipdeck exec` asks to type the host count (or `--yes`)",
        choices=("none", "typed"),
    )


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
    keepalive: float | None = key(
        None, "seconds between keepalives", min=0.1, shown="`dead_after`/4"
    )
    dead_after: float = key(
        20.0,
        _DEAD_AFTER,
        min=0.4,
        derive=lambda given: 4 * given["keepalive"] if "keepalive" in given else None,
    )
    max_handshakes: int = key(
        256, "handshakes in flight over the whole fleet (the client's own ceiling)", min=1
    )
    passphrase_env: str | None = key(None, _PASSPHRASE)
    upload_stall: float = key(30.0, _STALL, min=0.1)


@dataclass(frozen=True)
class RelayConfig:
    url: str = key(..., "the relay's `ws://` or `wss://` URL (see below)", check=_ws_url)
    room: str = key(..., "the shared room")
    token_env: str = key("SHIPDECK_TOKEN", "env var holding the relay token")
    connect_timeout: float = key(10.0, _RELAY_WAIT, min=0.1)


def read_sites(r: Reader, at: Any, value: Any) -> dict[str, tuple[str, ...]] | None:
    """``[sites]``: site name -> the hosts in it (names, groups or globs)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise r.error(at, None, 'expected a table of sites, e.g. eu = ["web-eu-*"]')
    out: dict[str, tuple[str, ...]] = {}
    for name, hosts in value.items():
        if (
            not isinstance(hosts, list)
            or not hosts
            or not all(isinstance(h, str) and h.strip() for h in hosts)
        ):
            raise r.error(at, name, "expected a non-empty list of host names, groups or globs")
        out[name] = tuple(h.strip() for h in hosts)
    return out


@dataclass(frozen=True, kw_only=True)
class Config:
    """A whole shipdeck.toml: a field per section, in the order the README lists them."""

    path: Path
    #: the environment read (``[env.<name>]`` laid over the top level); None: the file has none
    env: str | None = None
    project: ProjectConfig
    build: BuildConfig = field(default_factory=BuildConfig)
    deploy: DeployConfig
    ssh: SshConfig = field(default_factory=SshConfig)
    hosts: dict[str, tuple[HostSpec, ...]] = key(
        ..., "`host`, `host:port`, `user@host:port` or an ssh-config alias", read=read_hosts
    )
    relay: RelayConfig | None = None
    balancer: BalancerConfig | None = None
    freeze: tuple[FreezeWindow, ...] = key((), "deploy freeze windows (see Freeze windows)")
    notify: tuple[NotifyEntry, ...] = key((), "commands run on events (see Notifications)")
    secrets: SecretsConfig | None = None
    sites: dict[str, tuple[str, ...]] | None = key(
        None,
        '`eu = ["web-eu-*"]`: hosts (names, groups or globs) on one network; the artifact'
        " crosses the link to a site once and its hosts copy it from each other (see Large"
        " artifacts). Without it, the hosts behind one `ssh.jump` are one site",
        read=read_sites,
    )
    aliases: dict[str, str] | None = key(
        None,
        '`console = "exec --hosts web1 -- ./bin/console"`: `shipdeck console` runs it (see Aliases)',
    )

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
        """The hosts ``--hosts pattern`` chooses (:func:`engine.hosts.select`: globs of
        groups or hosts, label selectors like ``role=web,az=a``), in config order.

        Raises :class:`ConfigError` when the pattern chooses nothing or is malformed.
        """
        try:
            return select(self.all_hosts(), pattern)
        except ValueError as exc:
            env = f" (environment {self.env!r})" if self.env else ""
            raise ConfigError(self.path, f"{exc}{env}", key="hosts") from None


def load_config(
    path: str | Path = DEFAULT_CONFIG, env: str | None = None, *, env_source: str = "-e"
) -> Config:
    """Read and validate a shipdeck.toml, in environment ``env`` (see
    :func:`parse_config`). Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "no such file (pass -c FILE or create shipdeck.toml)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read: {exc}") from None
    return parse_config(text, path, env, env_source=env_source)


def parse_config(
    text: str, path: str | Path = DEFAULT_CONFIG, env: str | None = None, *, env_source: str = "-e"
) -> Config:
    """Validate TOML text as a shipdeck config, in environment ``env`` (named by
    ``env_source``, ``-e`` or ``SHIPDECK_ENV``, in errors): its ``[env.<name>]`` table
    laid over the top level (:mod:`engine.environments`); without ``env``, the default
    one, else the only one. Raises :class:`ConfigError`; one about a top-level value
    read for an environment says which environment."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        raise ConfigError(path, f"invalid TOML: {exc}", line=line) from None
    sections = _sections()
    names = sorted(s.name for s in sections)
    r = Reader(path, text)
    r.unknown((), data, sorted([*names, environments.TABLE]), "[{}]")
    envs = environments.environments(r, data, names)
    chosen = environments.choose(r, envs, env, env_source)
    if chosen is not None:
        kinds = {
            s.name: "tables" if s.tables else "whole" if s.meta("read") else "table"
            for s in sections
        }
        data, moved = environments.overlay(data, envs[chosen], chosen, kinds)
        r = Reader(path, text, moved)
    try:
        parts = {s.attr: r.section(data, s) for s in sections}
    except ConfigError as exc:
        if chosen is None or exc.key.lstrip("[").startswith(f"{environments.TABLE}."):
            raise
        raise ConfigError(
            exc.path, f"{exc.message} (environment {chosen!r})", key=exc.key, line=exc.line
        ) from None
    return Config(path=path, env=chosen, **parts)


def _sections() -> tuple[Any, ...]:
    """The sections of a shipdeck.toml: :class:`Config`'s fields but ``path`` and ``env``."""
    return keys(Config)[2:]


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


# -- the README's config table --------------------------------------------------


_ENV_ROWS = [
    "| `env.<name>.default` | `false` | read this environment when none is chosen (`-e NAME`, `SHIPDECK_ENV`); without one, the only environment is read, and several are an error |",
    "| `env.<name>.<section>` | none | overrides of any section above for `-e <name>` (see Environments): tables key by key, `hosts` whole, `[[...]]` entries added |",
]


def markdown_table() -> str:
    """The README's config reference: one row per key, from the fields above."""
    rows = ["| key | default | meaning |", "|---|---|---|", *table_rows(_sections()), *_ENV_ROWS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m engine.config --markdown  (prints the README's config table)")
    sys.stdout.write(markdown_table())

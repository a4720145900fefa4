"""The app's secrets: ``[secrets]`` makes its env file, shipdeck writes it to each host
and keeps its values out of everything it prints, stores, publishes or sends.

``command`` (``pass show web/env``) runs on this machine and its standard output is
the env file; or ``env`` names variables taken from the operator's environment, written
as ``NAME=value`` lines. :func:`produce` makes the file (:class:`EnvFile`: its bytes,
its sha256 and the values to hide); the deploy writes it over each host's session
(:mod:`engine.remote.envfile`: from stdin, never on a command line) to
``<deploy.path>/<secrets.path>``, mode 0600, before the release is staged (so
before ``before_activate``), only when the host's copy differs.

:class:`Redactor` replaces every secret value (of at least :data:`MIN_CHARS`
characters) with :data:`MASK` in any string an event carries, before anyone sees the
event: the run applies it in ``emit``, so the terminal, the JSON lines, the
transcript, the history, the relay room, the TUI and ``[[notify]]`` commands only
ever get redacted events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.configschema import key
from engine.errors import ShipdeckError
from engine.events import Event

__all__ = ["MASK", "MIN_CHARS", "EnvFile", "Redactor", "SecretsConfig", "SecretsError", "produce", "redactor_for"]

#: what a secret value is replaced with
MASK = "[secret]"
#: values shorter than this are not hidden (a "1" or "on" would mangle every line)
MIN_CHARS = 4
#: the largest env file a command may produce
MAX_BYTES = 1024 * 1024

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretsError(ShipdeckError):
    """The env file could not be made (the command failed, timed out or printed too
    much; a variable of ``secrets.env`` is not set). The message never holds a value."""


def _env_name(value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not an environment variable name")


def _inside(value: str) -> str:
    if not value.strip() or value.startswith("/") or ".." in Path(value).parts:
        raise ValueError(f"{value!r} must be a relative path inside the deploy path (no '..')")
    if value.endswith("/"):
        raise ValueError(f"{value!r} names a folder; expected a file (shared/.env)")
    return value


_COMMAND = "run on this machine; its standard output is the env file (`pass show web/env`)"
_ENV = (
    'variables taken from the operator\'s environment, written as `NAME=value` (`["DATABASE_URL"]`)'
)
_PATH = "where the env file goes on each host, relative to `deploy.path` (mode 0600)"


@dataclass(frozen=True, kw_only=True)
class SecretsConfig:
    """``[secrets]``: the app's env file and where it goes."""

    command: str | None = key(None, _COMMAND, shown="none (or `env`)")
    env: tuple[str, ...] = key((), _ENV, each=_env_name)
    path: str = key("shared/.env", _PATH, check=_inside)
    timeout: float = key(30.0, "seconds `command` may run", min=0.1)

    def __post_init__(self) -> None:
        """Raises ValueError unless exactly one of ``command`` and ``env`` is given."""
        if self.command is not None and not self.command.strip():
            raise ValueError("command: must not be empty")
        if (self.command is None) == (not self.env):
            raise ValueError(
                "expected either command (its output is the env file) or env (variable names)"
            )


@dataclass(frozen=True)
class EnvFile:
    """The env file: its bytes, their sha256 and the values to hide."""

    content: bytes
    sha256: str
    values: tuple[str, ...]

    @classmethod
    def of(cls, content: bytes) -> EnvFile:
        text = content.decode("utf-8", errors="replace")
        return cls(content, hashlib.sha256(content).hexdigest(), secret_values(text))


def secret_values(text: str) -> tuple[str, ...]:
    """The values an env file holds: each ``NAME=value`` line's value (quotes and an
    ``export`` taken off; a quoted value also as written), and any other line whole,
    longest first; comments and blank lines are not secrets."""
    found: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.removeprefix("export ").partition("=")
        if not eq or not _NAME.match(name.strip()):
            found.add(line)
            continue
        value = value.strip()
        found.add(value)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            found.add(value[1:-1])
    return tuple(sorted((v for v in found if len(v) >= MIN_CHARS), key=len, reverse=True))


async def produce(
    config: SecretsConfig, cwd: Path, environ: Mapping[str, str] | None = None
) -> EnvFile:
    """Make the env file: ``config.command``'s standard output (run with ``sh -c`` in
    ``cwd``, stdin closed, within ``config.timeout``), or ``config.env``'s variables
    from ``environ`` (default: this process's). Raises :class:`SecretsError`."""
    if config.command is None:
        return _from_env(config.env, os.environ if environ is None else environ)
    proc = await asyncio.create_subprocess_shell(
        config.command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), config.timeout)
    except BaseException:
        _kill(proc)
        await proc.wait()
        raise SecretsError(
            f"secrets.command timed out after {config.timeout:g}s (killed)"
        ) from None
    if proc.returncode != 0:
        redact = Redactor(EnvFile.of(out).values)
        tail = redact.text(err.decode(errors="replace").strip()[-300:])
        raise SecretsError(
            f"secrets.command failed (exit {proc.returncode})" + (f": {tail}" if tail else "")
        )
    if len(out) > MAX_BYTES:
        raise SecretsError(f"secrets.command printed {len(out)} bytes; at most {MAX_BYTES}")
    if not out.strip():
        raise SecretsError("secrets.command printed nothing: an empty env file is not written")
    if not out.endswith(b"\n"):
        out += b"\n"
    return EnvFile.of(out)


def _from_env(names: tuple[str, ...], environ: Mapping[str, str]) -> EnvFile:
    lines = []
    for name in names:
        value = environ.get(name)
        if value is None:
            raise SecretsError(f"secrets.env: {name} is not set in this environment")
        if "\n" in value or "\r" in value:
            raise SecretsError(f"secrets.env: {name} holds a line break; an env file line cannot")
        lines.append(f"{name}={value}\n")
    content = "".join(lines).encode()
    values = {environ[n] for n in names if len(environ[n]) >= MIN_CHARS}
    env_file = EnvFile.of(content)
    hidden = sorted(values | set(env_file.values), key=len, reverse=True)
    return dataclasses.replace(env_file, values=tuple(hidden))


async def redactor_for(config: Any) -> Redactor:
    """What ``shipdeck exec`` and ``logs`` mask in the hosts' output: the values of
    the env file ``config``'s ``[secrets]`` makes (an empty redactor without one).
    Raises :class:`SecretsError`."""
    if getattr(config, "secrets", None) is None:
        return Redactor()
    return Redactor((await produce(config.secrets, config.base_dir)).values)


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Redactor:
    """Replaces secret values with :data:`MASK` in strings and in every string an
    event carries (nested dicts and lists too). Without values it changes nothing."""

    def __init__(self, values: tuple[str, ...] | list[str] = ()) -> None:
        self.values = tuple(
            sorted({v for v in values if len(v) >= MIN_CHARS}, key=len, reverse=True)
        )

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text: str) -> str:
        """``text`` with every secret value masked."""
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def event(self, event: Event) -> Event:
        """``event``, or a copy of it whose strings are masked (the same object when
        it holds no secret)."""
        if not self.values:
            return event
        changes = {}
        for f in dataclasses.fields(event):
            value = getattr(event, f.name)
            masked = self.data(value)
            if masked is not value:
                changes[f.name] = masked
        return dataclasses.replace(event, **changes) if changes else event

    def data(self, value: Any) -> Any:
        """A JSON-like value with its strings (keys too) masked; the same object when
        nothing changed."""
        if isinstance(value, str):
            masked = self.text(value)
            return value if masked == value else masked
        if isinstance(value, dict):
            out, changed = {}, False
            for k, v in value.items():
                k2, v2 = self.data(k), self.data(v)
                changed = changed or k2 is not k or v2 is not v
                out[k2] = v2
            return out if changed else value
        if isinstance(value, (list, tuple)):
            items = [self.data(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=False)):
                return value
            return type(value)(items) if isinstance(value, tuple) else items
        return value

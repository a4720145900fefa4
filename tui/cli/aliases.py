"""``[aliases]``: saved command lines. ``console = "exec --hosts web1 -- ./bin/console"``
makes ``shipdeck console`` run ``shipdeck exec --hosts web1 -- ./bin/console`` (words
given after the alias are appended: ``shipdeck console --env=prod``).

An alias expands to a built-in command, never to another alias, and never shadows
a built-in: a config that tries is an error naming the file, the line and the alias.
The config is the one ``-c FILE`` names (default ``./shipdeck.toml``); the expansion
uses that same file. Standard library only at import time.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path

from engine.errors import ConfigError

__all__ = ["AliasError", "config_path", "expand", "help_text", "read_aliases"]


class AliasError(ConfigError):
    """An ``[aliases]`` entry that cannot be used (shadows a built-in, is empty, does
    not start with a command)."""


def commands(parser: argparse.ArgumentParser) -> tuple[str, ...]:
    """The built-in command names of the ``shipdeck`` parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return tuple(action.choices)
    return ()


def config_path(argv: list[str]) -> str:
    """The file ``-c FILE`` / ``--config FILE`` / ``--config=FILE`` names in ``argv``
    (before any ``--``), else ``shipdeck.toml``."""
    for i, word in enumerate(argv):
        if word == "--":
            break
        if word in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--config="):
            return word.split("=", 1)[1]
        if word.startswith("-c") and len(word) > 2 and not word.startswith("--"):
            return word[2:]
    return "shipdeck.toml"


def env_name(argv: list[str]) -> str | None:
    """The environment ``-e NAME`` / ``--env NAME`` / ``--env=NAME`` names in ``argv``
    (before any ``--``), else ``$SHIPDECK_ENV``, else None."""
    for i, word in enumerate(argv):
        if word == "--":
            break
        if word in ("-e", "--env") and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--env="):
            return word.split("=", 1)[1]
    return os.environ.get("SHIPDECK_ENV") or None


def _line(text: str, name: str) -> int | None:
    """The line of ``name = ...`` in the ``[aliases]`` table."""
    section = None
    for number, raw in enumerate(text.splitlines(), start=1):
        m = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", raw)
        if m:
            section = m.group(1).strip().strip('"')
        elif section == "aliases" and re.match(rf"^\s*\"?{re.escape(name)}\"?\s*=", raw):
            return number
    return None


def read_aliases(
    path: str | Path, builtins: tuple[str, ...], env: str | None = None
) -> dict[str, list[str]]:
    """alias -> the words it expands to, from the config at ``path`` ({} when it has
    none). Raises :class:`AliasError` for an unusable alias, ``ConfigError`` for a
    config that cannot be read."""
    from engine.config import load_config

    config = load_config(path, env)
    given = config.aliases or {}
    if not isinstance(given, dict):
        raise AliasError(config.path, "expected a table of aliases", key="[aliases]")
    text = Path(config.path).read_text(encoding="utf-8", errors="replace")
    out: dict[str, list[str]] = {}
    for name, value in given.items():
        where = {"key": f"[aliases] {name}", "line": _line(text, name)}
        if name in builtins:
            msg = f"alias {name!r} shadows the built-in command `shipdeck {name}`; rename it"
            raise AliasError(config.path, msg, **where)
        try:
            words = shlex.split(value) if isinstance(value, str) else []
        except ValueError as exc:
            raise AliasError(config.path, f"alias {name!r}: {exc}", **where) from None
        if not words:
            msg = 'expected a command line, e.g. "exec --hosts web1 -- ./bin/console"'
            raise AliasError(config.path, f"alias {name!r}: {msg}, got {value!r}", **where)
        if words[0] not in builtins:
            msg = f"alias {name!r} runs {words[0]!r}, which is not a shipdeck command"
            raise AliasError(config.path, f"{msg} (commands: {', '.join(builtins)})", **where)
        out[name] = words
    return out


def expand(argv: list[str], builtins: tuple[str, ...]) -> list[str]:
    """``argv`` with a leading alias replaced by its words (and ``-c FILE`` kept for
    the command it runs); ``argv`` unchanged when it names no alias. Raises
    :class:`AliasError` when the config's aliases cannot be used."""
    if not argv or argv[0].startswith("-"):
        return argv
    path = config_path(argv)
    if argv[0] in builtins:  # a built-in runs as it is, but a config shadowing it is refused
        if Path(path).is_file():
            try:
                read_aliases(path, builtins, env_name(argv))
            except AliasError:
                raise
            except ConfigError:
                pass  # the command itself says what is wrong with the config
        return argv
    try:
        found = read_aliases(path, builtins, env_name(argv))
    except AliasError:
        raise
    except ConfigError:
        return argv  # the parser says what the word is not
    words = found.get(argv[0])
    if words is None:
        return argv
    rest = argv[1:]
    if path != "shipdeck.toml" and config_path(words) == "shipdeck.toml":
        words = [words[0], "-c", path, *words[1:]]
        rest = _without_config(rest)
    return words + rest


def _without_config(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word == "--":
            return out + argv[i:]
        if word in ("-c", "--config"):
            skip = True
            continue
        if word.startswith("--config=") or (word.startswith("-c") and not word.startswith("--")):
            continue
        out.append(word)
    return out


def help_text(argv: list[str], builtins: tuple[str, ...]) -> str:
    """The aliases section of ``shipdeck --help`` ("" when there are none), or the
    reason they cannot be used."""
    path = config_path(argv)
    if not Path(path).is_file():
        return ""
    try:
        found = read_aliases(path, builtins, env_name(argv))
    except ConfigError as exc:
        return f"aliases: {exc}"
    if not found:
        return ""
    width = max(len(n) for n in found)
    lines = [f"aliases (from {path}):"]
    lines += [f"  {n:<{width}}  {shlex.join(w)}" for n, w in sorted(found.items())]
    return "\n".join(lines)

"""``[env.<name>]``: several environments (staging, production) in one shipdeck.toml.

An environment's table overrides any section over the shared top level:

- a table section (``[env.production.deploy]``, ``[env.production.relay]``, ...) key by
  key: what the environment sets wins, the rest is the top level's;
- ``[env.production.hosts]`` replaces the top level's ``[hosts]`` whole (an
  environment's fleet is its own);
- an array of tables (``[[env.production.freeze]]``) is added after the top level's
  entries (a top-level freeze holds for every environment);
- ``[env.production.aliases]`` adds or replaces aliases by name.

Which environment: the one asked for (``-e NAME``, ``SHIPDECK_ENV``), else the one
marked ``default = true``, else the only one; several and none chosen is an error.
Errors are :class:`~engine.errors.ConfigError` naming the file, the line, the table and
the environment (``[env.production.deploy] path``), and "did you mean" for a name not
in the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from engine.configschema import Reader, Where
from engine.errors import ConfigError

#: the top-level table holding the environments
TABLE = "env"
#: the key of an environment's table marking it as the one used when none is asked for
DEFAULT = "default"


def environments(
    r: Reader, data: Mapping[str, Any], sections: list[str]
) -> dict[str, dict[str, Any]]:
    """The ``[env.<name>]`` tables of ``data``, checked: each a table of known sections
    (or ``default = true|false``). Raises :class:`ConfigError` naming the table and line."""
    envs = data.get(TABLE)
    if envs is None:
        return {}
    if not isinstance(envs, dict) or not all(isinstance(v, dict) for v in envs.values()):
        raise r.error((TABLE,), None, "expected [env.<name>] tables, e.g. [env.production.deploy]")
    for name, table in envs.items():
        r.unknown(
            (TABLE, name),
            {k: v for k, v in table.items() if k != DEFAULT},
            sections,
            f"[{TABLE}.{name}.{{}}]",
        )
        if DEFAULT in table and not isinstance(table[DEFAULT], bool):
            got = f"got {type(table[DEFAULT]).__name__} {table[DEFAULT]!r}"
            raise r.error((TABLE, name), DEFAULT, f"expected true or false, {got}")
    return envs


def choose(
    r: Reader, envs: Mapping[str, Mapping[str, Any]], asked: str | None, source: str = "-e"
) -> str | None:
    """The environment to read: ``asked`` (named by ``source``: ``-e`` or
    ``SHIPDECK_ENV``), else the default one, else the only one; None when the file has
    none. Raises :class:`ConfigError` for a name the file does not have (with the
    nearest one), for two defaults, or for several environments and none chosen."""
    names = list(envs)
    if asked:
        if asked in envs:
            return asked
        if not names:
            msg = f"environment {asked!r} asked for, but the file has no [env.<name>] tables"
            raise ConfigError(r.path, msg, key=f"{source} {asked}")
        near = difflib.get_close_matches(asked, names, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        msg = f"no environment {asked!r} ({hint}environments: {', '.join(names)})"
        raise ConfigError(r.path, msg, key=f"{source} {asked}")
    defaults = [n for n in names if envs[n].get(DEFAULT) is True]
    if len(defaults) > 1:
        msg = (
            f"environments {', '.join(map(repr, defaults))} are all marked default = true; mark one"
        )
        raise r.error((TABLE, defaults[1]), DEFAULT, msg)
    if defaults:
        return defaults[0]
    if len(names) == 1:
        return names[0]
    if names:
        msg = (
            f"{len(names)} environments ({', '.join(names)}) and none chosen: pass -e NAME,"
            " set SHIPDECK_ENV, or mark one with default = true"
        )
        raise ConfigError(r.path, msg, key=f"[{TABLE}]", line=r.line((TABLE, names[0])))
    return None


def overlay(
    data: Mapping[str, Any], env: Mapping[str, Any], name: str, kinds: Mapping[str, str]
) -> tuple[dict[str, Any], dict[Where, Where]]:
    """``data`` (the top level, without ``[env]``) with the environment ``name``'s
    table ``env`` laid over it, and where each overriding value was written (for
    :class:`~engine.configschema.Reader`'s ``moved``). ``kinds``: each section's kind,
    ``"table"``, ``"tables"`` or ``"whole"`` (replaced as a whole)."""
    out = {k: v for k, v in data.items() if k != TABLE}
    moved: dict[Where, Where] = {}
    for section, value in env.items():
        if section != DEFAULT:
            _lay(out, moved, section, value, (TABLE, name, section), kinds.get(section, "whole"))
    return out, moved


def _lay(
    out: dict[str, Any],
    moved: dict[Where, Where],
    section: str,
    value: Any,
    here: Where,
    kind: str,
) -> None:
    """One section of an environment laid over the top level's (``out``): entries of
    an array of tables added, a table's keys overridden, anything else replaced."""
    top = out.get(section)
    if kind == "tables" and isinstance(value, list):
        start = len(top) if isinstance(top, list) else 0
        out[section] = [*(top if isinstance(top, list) else []), *value]
        moved.update({(section, start + i): (*here, i) for i in range(len(value))})
    elif kind == "table" and isinstance(value, dict) and isinstance(top, dict | None):
        out[section] = {**(top or {}), **value}
        moved[(section,)] = here  # a missing key: named in the environment's table
        moved.update({(section, k): (section, k) for k in top or {}})
        moved.update({(section, k): (*here, k) for k in value})
    else:
        out[section] = value
        moved[(section,)] = here

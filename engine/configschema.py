"""How a config key is declared, read and documented (the machinery behind
:mod:`engine.config`; the sections themselves are dataclasses declared with :func:`key`).

A section is a frozen dataclass whose fields are made by :func:`key`: the field's
annotation is the key's type, its default the key's default, and the field's metadata
carries bounds, checks and help. :class:`Reader` checks one parsed TOML document
against those fields; :func:`table_rows` writes the README's rows from them. A
section of the config is one field of ``engine.config.Config``:

- a dataclass (``[deploy]``): one table, each key checked and converted;
- a tuple of a dataclass (``[[freeze]]``): an array of tables, each entry checked the
  same way;
- anything else read by its ``read=`` function (``[hosts]``) or taken as it is.

Every error is a :class:`~engine.errors.ConfigError` naming the file, the line (found
in the text: tomllib gives no positions), the table and key, and what was expected.
Where a value sits in the file is a *path*: ``("deploy", "path")``,
``("freeze", 1, "reason")``, ``("env", "production", "deploy", "path")``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from engine.errors import ConfigError

#: where a value is in the file: table names, array indexes, then the key
Where = tuple[str | int, ...]


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
    name: str | None = None,
    read: Callable[[Reader, Where, Any], Any] | None = None,
) -> Any:
    """A config key: a dataclass field with its default (``...``: required) and its
    ``help`` for the README. ``min``: lowest value allowed; ``accepts``: TOML types
    taken besides the annotation's (``str()``-ed for a str key); ``choices``: the only
    strings allowed; ``check``: called with the value, returns it (possibly changed) or
    raises ValueError with the message; ``each``: called with each item of a list,
    raises ValueError; ``derive``: the value when the key is absent, from the keys given
    (None: the default); ``shown``: the default as the README shows it; ``name``: the
    key's name in the file when it is not the field's (``from``, a Python keyword);
    ``read``: reads a whole section ``(reader, where, value) -> value``, raising
    :class:`~engine.errors.ConfigError` through ``reader.error``.
    """
    meta = {
        "help": help,
        "min": min,
        "accepts": accepts,
        "choices": choices,
        "check": check,
        "each": each,
        "derive": derive,
        "shown": shown,
        "name": name,
        "read": read,
    }
    return field(metadata=meta) if default is ... else field(default=default, metadata=meta)


def rule(ok: Callable[[Any], Any], message: str) -> Callable[[Any], Any]:
    """A check: the value if ``ok(value)``, else ValueError(message.format(v=value))."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(message.format(v=value))
        return value

    return check


# -- what the fields say ------------------------------------------------------

#: TOML value types taken for a Python type (an int is a fine float)
_TOML: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    tuple: (list,),
    dt.datetime: (dt.datetime,),
    dt.date: (dt.date,),
}
_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dt.datetime: "a date-time (2026-12-24T18:00:00+01:00)",
    dt.date: "a date (2026-12-24)",
}


class _Key(NamedTuple):
    """A field of a config dataclass (a key, or a section of ``Config``)."""

    name: str  # as written in the file
    types: tuple[Any, ...]  # the annotation's types, None left out, generics by origin
    item: Any  # the item type of a tuple
    field: Field[Any]

    @property
    def attr(self) -> str:
        """The dataclass field's name (``from_`` for the key ``from``)."""
        return self.field.name

    @property
    def required(self) -> bool:
        return self.field.default is MISSING and self.field.default_factory is MISSING

    @property
    def toml(self) -> tuple[type, ...]:
        taken = sum((_TOML.get(t, ()) for t in self.types), ())
        return taken + self.field.metadata.get("accepts", ())

    @property
    def table(self) -> type | None:
        """The dataclass of a section read as one table."""
        return next((t for t in self.types if dataclasses.is_dataclass(t)), None)

    @property
    def tables(self) -> type | None:
        """The dataclass of each entry of an array of tables (``[[freeze]]``)."""
        return self.item if dataclasses.is_dataclass(self.item) else None

    def meta(self, name: str) -> Any:
        return self.field.metadata.get(name)


@functools.cache
def keys(cls: type) -> tuple[_Key, ...]:
    """The keys of a section's dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        hint = hints[f.name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        parts = tuple(p for p in parts if p is not type(None))
        item = next((typing.get_args(p)[0] for p in parts if typing.get_origin(p) is tuple), None)
        name = f.metadata.get("name") or f.name
        out.append(_Key(name, tuple(typing.get_origin(p) or p for p in parts), item, f))
    return tuple(out)


def type_name(toml: tuple[type, ...]) -> str:
    named = [t for t in toml if t is not int or float not in toml]
    named = [t for t in named if t is not dt.date or dt.datetime not in toml] + (
        [dt.date] if dt.date in toml and dt.datetime in toml else []
    )
    return " or ".join(_NAMES.get(t, "a list" if t is list else t.__name__) for t in named)


# -- where things are in the file -----------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*((?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+))*)\s*=(.*)$")
_INNER = re.compile(r"[{,]\s*(\"[^\"]*\"|[A-Za-z0-9_-]+)\s*=")


def _dotted(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in re.split(r"\.(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", text))


def line_index(text: str) -> dict[Where, int]:
    """Where each table header and key is: its path to its (first) line number.

    ``[[a]]`` headers count: the second ``[[freeze]]`` is ``("freeze", 1)``. The keys
    of an inline table on one line are found too (``{ host = "web1" }``)."""
    index: dict[Where, int] = {}
    counts: dict[tuple[str, ...], int] = {}
    current: Where = ()
    for number, raw in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(raw)
        if m and not _ASSIGN.match(raw):
            names = _dotted(m.group(2))
            if m.group(1) == "[[":
                n = counts.get(names, 0)
                counts[names] = n + 1
                current = (*names, n)
            else:
                current = names
            index.setdefault(current, number)
            continue
        m = _ASSIGN.match(raw)
        if m:
            at = (*current, *_dotted(m.group(1)))
            index.setdefault(at, number)
            for inner in _INNER.finditer(m.group(2)):
                index.setdefault((*at, inner.group(1).strip('"')), number)
    return index


def label(at: Where) -> str:
    """``("deploy",)`` -> ``[deploy]``; ``("freeze", 1)`` -> ``[[freeze]][1]``."""
    if at and isinstance(at[-1], int):
        return f"[[{'.'.join(map(str, at[:-1]))}]][{at[-1]}]"
    return f"[{'.'.join(map(str, at))}]"


# -- the validator ------------------------------------------------------------


class Reader:
    """Checks one parsed TOML document against the sections' fields.

    ``moved`` maps where a value is in the document being checked to where it was
    written, for values merged in from elsewhere in the file (an environment's
    overrides); errors name the place it was written."""

    def __init__(self, path: Path, text: str, moved: Mapping[Where, Where] | None = None):
        self.path = path
        self.text = text
        self.moved = dict(moved or {})
        self._index: dict[Where, int] | None = None

    # where --------------------------------------------------------------------

    def written(self, at: Where) -> Where:
        """Where the value at ``at`` was written (the longest moved prefix replaced)."""
        for n in range(len(at), 0, -1):
            if at[:n] in self.moved:
                return self.moved[at[:n]] + at[n:]
        return at

    def line(self, section: str | Where, key: str | None = None) -> int | None:
        """The line of ``section`` (a path, or a table's name) and ``key``; else of the
        nearest enclosing thing written (the table, an inline table's key)."""
        if self._index is None:
            self._index = line_index(self.text)
        at = (section,) if isinstance(section, str) else tuple(section)
        at = self.written(at + ((key,) if key else ()))
        for n in range(len(at), 0, -1):
            if at[:n] in self._index:
                return self._index[at[:n]]
        return None

    def error(
        self, section: str | Where, key: str | None, msg: str, i: int | None = None
    ) -> ConfigError:
        """A ConfigError at ``[section] key[i]``, with its line."""
        at = (section,) if isinstance(section, str) else tuple(section)
        written = self.written(at + ((key,) if key else ()))
        table = written[:-1] if key else written
        name = label(table) + (f" {written[-1]}" if key else "") + (f"[{i}]" if i is not None else "")
        return ConfigError(self.path, msg, key=name, line=self.line(at, key))

    # checks -------------------------------------------------------------------

    def check_keys(self, section: str | Where, keys: tuple[_Key, ...], value: dict[str, Any]) -> None:
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
                raise self.error(section, k.name, f"expected {type_name(k.toml)}, {got}")

    def items(self, section: str | Where, k: _Key, value: list[Any]) -> tuple[Any, ...]:
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

    def value(self, section: str | Where, k: _Key, value: Any) -> Any:
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

    def table(self, at: Where, cls: type, given: dict[str, Any]) -> Any:
        """One table as its dataclass; raises for unknown, missing or invalid keys, or
        for what the dataclass's ``__post_init__`` refuses (a ValueError, named at the
        table)."""
        ks = keys(cls)
        self.check_keys(at, ks, given)
        values = {k.attr: self.value(at, k, given[k.name]) for k in ks if k.name in given}
        for k in ks:
            if k.attr not in values and k.meta("derive"):
                derived = k.meta("derive")(values)
                values |= {k.attr: derived} if derived is not None else {}
        try:
            return cls(**values)
        except ValueError as exc:
            raise self.error(at, None, str(exc)) from None

    def section(self, data: dict[str, Any], s: _Key) -> Any:
        """The section ``s`` of ``data``, read as its field says: one table (an absent
        or empty one whose default is None, like [relay], is None), an array of tables,
        its ``read`` function, or as it is. Raises for a missing required one."""
        given = data.get(s.name)
        at: Where = (s.name,)
        if s.meta("read"):
            return s.meta("read")(self, at, given)
        if given is None and s.required:
            raise ConfigError(self.path, f"missing section [{s.name}]", key=f"[{s.name}]")
        if s.tables:
            return self._tables(at, s, given)
        if not s.table:
            return given if given is not None else s.field.default
        if given is not None and not isinstance(given, dict):
            raise self.error(at, None, "expected a table")
        if not given and s.field.default is None:
            return None
        return self.table(at, s.table, given or {})

    def _tables(self, at: Where, s: _Key, given: Any) -> Any:
        """An array of tables (``[[freeze]]``): each entry read as one table."""
        if given is None:
            return s.field.default
        if not isinstance(given, list) or not all(isinstance(g, dict) for g in given):
            raise self.error(at, None, f"expected [[{s.name}]] tables")
        return tuple(self.table((s.name, i), s.tables, g) for i, g in enumerate(given))

    def unknown(self, at: Where, given: Mapping[str, Any], known: list[str], what: str) -> None:
        """Raise for the first name of ``given`` not in ``known`` (a table, an
        environment's section), with the nearest known one."""
        for name in given:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {what.format(near[0])}?)" if near else f" (valid: {', '.join(known)})"
                table = label((*at, name)) if at else f"[{name}]"
                raise ConfigError(self.path, f"unknown section{hint}", key=table, line=self.line((*at, name)))


# -- the README's config table --------------------------------------------------


def shown(k: _Key, section: _Key) -> str:
    """The default as the README shows it."""
    value = k.field.default
    if k.meta("shown") or k.required:
        where = "" if section.required or section.tables else f" in [{section.name}]"
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


def table_rows(sections: tuple[_Key, ...]) -> list[str]:
    """One README row per key of every section: ``| `deploy.path` | default | help |``."""
    rows = []
    for s in sections:
        cls = s.table or s.tables
        if cls is None:
            entries = [(".<group>" if s.name == "hosts" else ".<name>", s)]
        else:
            entries = [(f".{k.name}", k) for k in keys(cls)]
        prefix = f"[[{s.name}]]" if s.tables else s.name
        for name, k in entries:
            meaning = " ".join(k.meta("help").split())
            if k.meta("choices"):
                meaning = " or ".join(f"`{c}`" for c in k.meta("choices")) + "; " + meaning
            rows.append(f"| `{prefix}{name}` | {shown(k, s)} | {meaning} |")
    return rows

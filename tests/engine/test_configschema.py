"""The key machinery on its own: an array of tables declared once, keys named apart from
their field, errors naming [[table]][n], key and line; where things are in the text."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.configschema import Reader, key, keys, line_index, table_rows
from engine.errors import ConfigError


@dataclass(frozen=True)
class Window:
    from_: str = key(..., "start", name="from")
    reason: str = key("", "why")
    days: tuple[str, ...] = key((), "days", each=lambda d: None)


@dataclass(frozen=True, kw_only=True)
class Doc:
    window: tuple[Window, ...] = key((), "windows")


TEXT = """
[[window]]
from = "a"

[[window]]
from = "b"
reasno = "typo"
"""


def read(text: str) -> tuple[Window, ...]:
    r = Reader(Path("x.toml"), text)
    return r.section(tomllib.loads(text), keys(Doc)[0])


def test_an_array_of_tables_is_read_entry_by_entry_and_a_bad_key_names_its_entry_and_line() -> None:
    good = TEXT.replace('reasno = "typo"', 'reason = "why"')
    assert read(good) == (Window(from_="a"), Window(from_="b", reason="why"))
    assert read("") == ()
    with pytest.raises(ConfigError) as e:
        read(TEXT)
    line = TEXT.splitlines().index('reasno = "typo"') + 1
    assert str(e.value) == f"x.toml:{line}: [[window]][1] reasno: unknown key (did you mean 'reason'?)"


def test_a_missing_key_of_an_entry_names_the_entry_header_line() -> None:
    text = '[[window]]\nfrom = "a"\n[[window]]\nreason = "r"\n'
    with pytest.raises(ConfigError) as e:
        read(text)
    assert str(e.value) == "x.toml:3: [[window]][1]: missing required key 'from'"


def test_a_table_where_an_array_of_tables_belongs_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[window\]: expected \[\[window\]\] tables"):
        read('[window]\nfrom = "a"\n')


def test_line_index_knows_headers_dotted_keys_and_inline_tables() -> None:
    text = '[env.production]\ndefault = true\ndeploy.path = "/p"\nhosts = { web = ["w1"] }\n[[env.production.freeze]]\nreason = "x"\n'
    index = line_index(text)
    assert index[("env", "production")] == 1
    assert index[("env", "production", "deploy", "path")] == 3
    assert index[("env", "production", "hosts", "web")] == 4
    assert index[("env", "production", "freeze", 0, "reason")] == 6


def test_errors_about_a_moved_value_name_where_it_was_written() -> None:
    text = '[deploy]\npath = "/a"\n[env.prod.deploy]\nkeep = 1\n'
    r = Reader(Path("x.toml"), text, moved={("deploy", "keep"): ("env", "prod", "deploy", "keep")})
    err = r.error(("deploy",), "keep", "bad")
    assert str(err) == "x.toml:4: [env.prod.deploy] keep: bad"


def test_readme_rows_of_an_array_of_tables() -> None:
    rows = table_rows(keys(Doc))
    assert rows[0] == "| `[[window]].from` | required | start |"

"""The README's key table is the one list of actions (tui/actions.py)."""

from __future__ import annotations

from pathlib import Path

from tui import actions

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_key_table_is_the_action_list() -> None:
    text = README.read_text()
    section = text[text.index("## The TUI") :]
    rows = []
    for line in section.splitlines()[2:]:
        if not line.startswith("| "):
            if rows:
                break
            continue
        keys, what = (cell.strip() for cell in line.strip("|").split("|"))
        if keys in ("key", "---"):
            continue
        rows.append((" ".join(k.strip("`") for k in keys.split()), what))
    expected = [(" ".join(k.split()), what) for k, what in actions.key_table(actions.OPERATOR)]
    assert rows == expected

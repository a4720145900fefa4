"""The command's parser and its headless commands never import textual: `shipdeck relay`,
`say`, `tail`, `history`, `show`, `download` and `deploy --headless` start fast and run
on servers with no terminal."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import tui.cli

pytestmark = pytest.mark.timeout(60)

MODULES = sorted(info.name for info in pkgutil.iter_modules(tui.cli.__path__, "tui.cli."))


def _loaded_after(code: str, package: str = "textual") -> list[str]:
    """The modules of ``package`` loaded by a fresh interpreter after running ``code``."""
    check = code + (
        "\nimport sys"
        f"\nprint('loaded:', ','.join(sorted(m for m in sys.modules if m.split('.')[0] == {package!r})))"
    )
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    loaded = r.stdout.strip().splitlines()[-1].removeprefix("loaded:").strip()
    return [m for m in loaded.split(",") if m]


def test_every_command_module_and_the_parser_load_without_textual() -> None:
    assert {"tui.cli.deploy", "tui.cli.relay", "tui.cli.watch", "tui.cli.demo"} <= set(MODULES)
    imports = "".join(f"import {m}\n" for m in MODULES if m != "tui.cli.__main__")
    code = imports + "from tui.cli import build_parser\nbuild_parser().parse_args(['history'])"
    assert _loaded_after(code) == []


def test_headless_commands_never_import_textual() -> None:
    code = (
        "from tui.cli import build_parser; build_parser()\n"
        "import engine.deploy, engine.preflight, engine.localfleet\n"
        "import relay.client, relay.publish, relay.server\n"
    )
    assert _loaded_after(code) == []


def test_history_runs_without_textual() -> None:
    """A real command, end to end: `shipdeck history` (the test's own empty history)."""
    code = "from tui.cli import main\nassert main(['history']) == 0"
    assert _loaded_after(code) == []


def test_history_and_help_do_not_load_asyncio() -> None:
    """`shipdeck history`, `show` and `--help` start without the event loop machinery
    (asyncio and ssl are a third of a bare start-up); the commands that talk to hosts or
    the relay load it when they run."""
    code = "from tui.cli import main\nassert main(['history']) == 0"
    assert _loaded_after(code, "asyncio") == []
    assert _loaded_after("from tui.cli import build_parser\nbuild_parser()", "ssl") == []

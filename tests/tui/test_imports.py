"""engine/ and relay/ never import textual; neither do the CLI's parser and its command modules."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

CHECK = """
import importlib, pkgutil, sys
for pkg in ("engine", "relay"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        importlib.import_module(info.name)
import tui.cli.deploy, tui.cli.watch, tui.cli.demo, tui.model, tui.backend, tui.chat, tui.labels, tui.render, tui.headless
from tui.cli import build_parser
build_parser()
bad = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
print(",".join(bad))
"""


def test_engine_relay_and_launch_do_not_import_textual() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"textual imported: {out.stdout.strip()[:200]}"

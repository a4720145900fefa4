"""The engine and the relay run without the UI: importing every one of their modules
loads no textual (pyproject.toml's import contracts check the same statically)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import engine, relay
imported = []
for package in (engine, relay):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
ui = sorted(name for name in sys.modules if name.partition(".")[0] in ("textual", "tui"))
print(json.dumps({"imported": imported, "ui": ui}))
"""


def test_engine_and_relay_import_no_textual() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # every module was imported, so nothing slipped past
    assert {"engine.deploy", "engine.ssh", "relay.server", "relay.client"} <= set(
        result["imported"]
    )
    assert result["ui"] == [], f"engine or relay loads the UI: {result['ui'][:5]}"

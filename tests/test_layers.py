"""The engine and the relay run without the UI: importing every one of their modules
loads no textual (pyproject.toml's import contracts check the same statically); and
no module imports itself back while Python loads it."""

from __future__ import annotations

import ast
import graphlib
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


def _module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports when it is loaded: module-level imports
    (inside ``if``/``try`` too), not those under ``if TYPE_CHECKING`` nor inside
    functions. ``from pkg import sub`` depends on ``pkg.sub`` alone when that is a
    module (``pkg`` itself is loaded first, but only its ``__init__``)."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                found.update(subs)
                if len(subs) < len(node.names):
                    found.add(node.module)

    visit(ast.parse(path.read_text()).body)
    return {dep for dep in found if dep in modules and dep != name}


def test_no_module_imports_itself_back_at_load_time() -> None:
    """No import cycle among engine, relay and tui modules as Python loads them (a
    type-only back reference under ``if TYPE_CHECKING`` is no cycle)."""
    modules: dict[str, Path] = {}
    for package in ("engine", "relay", "tui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph = {name: _module_imports(name, path, modules) for name, path in modules.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None

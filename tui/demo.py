"""``shipdeck demo``: a sample repo, an in-process SSH fleet and the TUI ready for d.

Before the TUI opens, release 1.0.0 of the sample app is deployed headless (quietly)
so there is a release to roll back to; the repo then moves to 1.1.0, which is what
``d`` deploys. ``--with-failure`` makes one host's health check fail for 1.1.0 only,
so the failure and that host's automatic rollback show.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


def run_demo(
    *,
    hosts: int = 8,
    directory: str | None = None,
    with_failure: bool = False,
    mouse: bool = True,
    simulate: bool = False,
) -> int:
    if simulate:
        return _run_simulated(hosts, with_failure, mouse)
    from engine.localfleet import temp_root

    keep = directory is not None
    root = Path(directory).resolve() if keep else temp_root()
    root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_demo(hosts, root, keep, with_failure, mouse))


def _run_simulated(hosts: int, with_failure: bool, mouse: bool) -> int:
    from tui.app import ShipdeckApp
    from tui.fake import FakeBackend

    names = [f"host{i}" for i in range(1, hosts + 1)]
    failing = {names[min(2, len(names) - 1)]} if with_failure else set()
    backend = FakeBackend(names, delay=0.15, failing=failing, project="demo")
    app = ShipdeckApp(backend, start_message="simulated deploy: no SSH, scripted events")
    return int(app.run(mouse=mouse) or 0)


async def _demo(n: int, root: Path, keep: bool, with_failure: bool, mouse: bool) -> int:
    from engine.config import load_config
    from engine.deploy import Deployment
    from engine.history import History
    from engine.localfleet import (
        LocalFleet,
        commit_version,
        make_sample_repo,
        remove_tree,
    )

    say = sys.stderr.write
    try:
        repo = root / "sample-app"
        if not (repo / ".git").exists():
            make_sample_repo(repo, version="1.0.0")
        async with LocalFleet(root / "fleet", n=n) as fleet:
            config_path = fleet.write_config(root / "shipdeck.toml", repo=repo)
            config = load_config(config_path)
            history = History(root / "state" / "history.db")
            if not history.releases(config.project.name):
                say(f"shipdeck demo: {n} local SSH hosts in {root}\n")
                say("  deploying sample app 1.0.0 first, so there is a release to roll back to…\n")
                first = Deployment(
                    config, operator="demo-setup", history=history, auto_approve=True
                )
                result = await first.run()
                if result.exit_code not in (0, 1):
                    say(f"  warning: the first deploy ended {result.status}\n")
                commit_version(repo, "1.1.0")
            failing = ""
            if with_failure:
                failing = fleet.hosts[min(2, len(fleet.hosts) - 1)].name
                fleet.fail_health(failing, version="1.1.0")
            from tui.app import ShipdeckApp
            from tui.backend import EngineBackend

            backend = EngineBackend(config, history_path=root / "state" / "history.db")
            note = (
                f"demo: {n} in-process SSH hosts, sample app 1.1.0 ready to deploy — press d, then Enter."
                + (f" {failing} will fail its health check." if failing else "")
            )
            app = ShipdeckApp(backend, operator=backend.operator, start_message=note)
            code = await app.run_async(mouse=mouse)
    finally:
        if keep:
            say(f"shipdeck demo: host directories kept in {root}\n")
        else:
            remove_tree(root)
    return int(code or 0)

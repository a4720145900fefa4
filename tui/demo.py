"""``shipdeck demo``: a sample repo, an in-process SSH fleet and the TUI ready for d.

Before the TUI opens, release 1.0.0 of the sample app is deployed headless (quietly)
so there is a release to roll back to; the repo then moves to 1.1.0, which is what
``d`` deploys. ``--with-failure`` makes one host's health check fail for 1.1.0 only,
so the failure and that host's automatic rollback show.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any


def run_demo(
    *,
    hosts: int = 8,
    directory: str | None = None,
    with_failure: bool = False,
    mouse: bool = True,
    simulate: bool = False,
    batches: tuple[str, ...] | None = None,
) -> int:
    """Run the demo. ``simulate`` (``--simulate``) is accepted for old scripts and
    changes nothing: the demo always is the real engine over the in-process fleet."""
    from engine.localfleet import temp_root

    keep = directory is not None
    root = Path(directory).resolve() if keep else temp_root()
    root.mkdir(parents=True, exist_ok=True)
    with own_state(root):
        return asyncio.run(_demo(hosts, root, keep, with_failure, mouse, batches=batches))


@contextlib.contextmanager
def own_state(root: Path) -> Iterator[None]:
    """Everything a demo writes (history, transcripts, git mirrors, packages) goes
    under its own directory, never into the operator's state and caches."""
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "XDG_CACHE_HOME")}
    os.environ["XDG_STATE_HOME"] = str(root / "state")
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _demo(
    n: int,
    root: Path,
    keep: bool,
    with_failure: bool,
    mouse: bool,
    drive: Callable[[Any, Any], Awaitable[None]] | None = None,
    *,
    batches: tuple[str, ...] | None = None,
) -> int:
    """The demo; ``drive(app, pilot)``, if given, plays the operator (tests);
    ``batches``: the waves of a deploy (deploy.batches)."""
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
        # the operator is the one the relay confirms for the demo's token (the rule
        # every command follows: SHIPDECK_OPERATOR, else the relay's, else user@host)
        relay, watch_cmd, token, me = await _start_relay(root)
        async with LocalFleet(root / "fleet", n=n) as fleet:
            waves = {"batches": list(batches)} if batches else {}
            config_path = fleet.write_config(
                root / "shipdeck.toml", repo=repo, relay_url=relay_url(relay), relay_room="demo",
                **waves,
            )  # fmt: skip
            config = load_config(config_path)
            os.environ["SHIPDECK_TOKEN"] = token
            say(
                f"shipdeck demo: a local relay at {relay_url(relay)}, room demo; from another terminal:\n"
            )
            say(f"  {watch_cmd}\n")
            history = History(root / "state" / "shipdeck" / "history.db")
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

            backend = EngineBackend(config, history_path=history.path, operator=me)
            note = (
                f"demo: {n} in-process SSH hosts, sample app 1.1.0 ready to deploy — press d, then Enter."
                + (f" {failing} will fail its health check." if failing else "")
            )
            from relay.publish import tui_chat_backend

            chat = tui_chat_backend(
                relay_url(relay), "demo", token=token, operator=backend.operator
            )
            note += f" Watch from another terminal: {watch_cmd}"
            app = ShipdeckApp(backend, chat=chat, operator=backend.operator, start_message=note)
            try:
                if drive is None:
                    code = await app.run_async(mouse=mouse)
                else:
                    async with app.run_test(size=(120, 40)) as pilot:
                        await drive(app, pilot)
                    code = app.return_code
            finally:
                await relay.shutdown()
    finally:
        if keep:
            say(f"shipdeck demo: host directories kept in {root}\n")
        else:
            remove_tree(root)
    return int(code or 0)


def relay_url(relay: Any) -> str:
    return f"ws://127.0.0.1:{relay.port}"


async def _start_relay(root: Path) -> tuple[Any, str, str, str]:
    """A relay in this process for the demo room; the watcher's token goes to a file
    (never printed), and the command to watch from another terminal is returned."""
    from engine.operator import default_operator
    from relay.server import Relay
    from relay.store import SQLiteStore
    from relay.tokens import TokenTable

    # the demo's token is named by the one operator rule (SHIPDECK_OPERATOR, else the
    # login name), cut to what a token name may hold
    me = default_operator().split("@", 1)[0]
    me = "".join(c for c in me if c.isalnum() or c in "._-") or "operator"
    mine, theirs = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    relay = Relay(SQLiteStore(root / "relay.db"), TokenTable({me: mine, "watcher": theirs}))
    await relay.start("127.0.0.1", 0)
    env = root / "watch.env"
    env.write_text(f"SHIPDECK_TOKEN={theirs}\n")
    env.chmod(0o600)
    cmd = (
        f"env $(cat {shlex.quote(str(env))}) shipdeck watch --relay {relay_url(relay)} --room demo"
    )
    return relay, cmd, mine, me

"""How long an abort takes to stop a deploy on real sshd hosts.

Three waits an abort must reach: a 60 s ``before_activate`` hook, a 60 s
``after_activate`` hook (the host is switched: it is rolled back), and a health check
that keeps failing with ``health_timeout = 60``. For each, the time from ``abort()``
to the end of the deploy (rollback included), against the time the wait itself would
have taken.

    python bench/abort_latency.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import load_config  # noqa: E402
from engine.deploy import Deployment  # noqa: E402
from engine.localfleet import commit_version, make_sample_repo  # noqa: E402
from tests.engine.test_deploy_sshd import write_config  # noqa: E402
from tests.sshd import SshdFleet  # noqa: E402

LONG = 60


async def scenario(name: str, fleet: SshdFleet, root: Path) -> tuple[str, float, str]:
    repo = make_sample_repo(root / f"repo-{name}")
    h = fleet.hosts[0]
    for p in (h.home / "app", h.home / "FAIL_HEALTH"):
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    base = load_config(write_config(root / f"{name}-a.toml", fleet, repo))
    await Deployment(base, operator="bench").run()
    over: dict[str, str] = {}
    if name == "before hook":
        over["before_activate"] = f'["sleep {LONG}"]'
        trigger = ("log", "/before", f"sleep {LONG}")
    elif name == "restart hook":
        over["after_activate"] = f'["./bin/restart", "[ $(cat VERSION) != 2.0.0 ] || sleep {LONG}"]'
        trigger = ("log", "/restart", f"sleep {LONG}")
    else:
        over["health_timeout"] = str(LONG)
        (h.home / "FAIL_HEALTH").write_text("2.0.0")
        trigger = ("log", "/health", "unhealthy")
    commit_version(repo, "2.0.0")
    config = load_config(write_config(root / f"{name}-b.toml", fleet, repo, **over))
    d = Deployment(config, operator="bench")
    asked: list[float] = []

    def watch(e) -> None:
        if (
            not asked
            and e.type == trigger[0]
            and e.key.endswith(trigger[1])
            and trigger[2] in e.text
        ):
            asked.append(time.monotonic())
            d.abort(by="bench", reason="bench")

    d.subscribe(watch)
    await d.run()
    took = time.monotonic() - asked[0]
    return name, took, d.plan.hosts()[0].detail


async def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="shipdeck-bench-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("XDG_STATE_HOME", str(root / "state"))
        os.environ.setdefault("XDG_CACHE_HOME", str(root / "cache"))
        with SshdFleet(root / "fleet", 1) as fleet:
            for name in ("before hook", "restart hook", "failing health"):
                rows.append(await scenario(name, fleet, root))
    print(f"\nabort -> deploy finished, one real sshd host (the wait alone: {LONG} s)\n")
    print(f"| {'abort during':<16} | seconds | the host ends |")
    print(f"|{'-' * 18}|--------:|---------------|")
    for name, took, detail in rows:
        print(f"| {name:<16} | {took:7.2f} | {detail[:90]} |")


if __name__ == "__main__":
    asyncio.run(main())

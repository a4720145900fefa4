"""``shipdeck status``: the fleet's version map (which release runs where, who put
it there, how many releases each host keeps, its lock), drift flagged. Read-only:
no lock is taken. No textual."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.errors import ExitCode
from tui.cli.common import add_config, add_hosts, err, load
from tui.cli.prompt import prompter


def add_parsers(sub: Any) -> None:
    """Register ``status``."""
    p = sub.add_parser(
        "status",
        help="which release runs where: the fleet's version map, drift flagged",
        description="Connect to every selected host (read-only, no lock taken) and print its"
        " current release, commit, who deployed it and when (revisions.log), the releases it"
        " keeps and its lock. Hosts not on the majority release are flagged as drifted."
        " Exit 1 if a host could not be read.",
    )
    add_config(p)
    add_hosts(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio

    from engine.config import ConfigError
    from engine.fleetstatus import fleet_status

    try:
        config = load(args)
        specs = config.select_hosts(args.hosts)
    except ConfigError as exc:
        err(str(exc))
        return ExitCode.USAGE
    status = asyncio.run(fleet_status(config, specs, prompter()))
    if args.json:
        print(json.dumps(status.to_json(), indent=2))
    else:
        for line in status_lines(status):
            print(line)
    return ExitCode.FAILED if status.unreachable else ExitCode.OK


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())  # one line, whatever the host printed
    return text if len(text) <= n else text[: n - 1] + "…"


def _lock(h: Any) -> str:
    return h.lock if h.lock in ("free", "unknown") else f"{h.lock} by {h.lock_holder}"


def status_lines(status: Any) -> list[str]:
    """The table ``shipdeck status`` prints: a header, a line per host, then what
    drifted and what could not be read."""
    hosts = status.hosts
    width = max([4, *(len(_cut(h.host, 40)) for h in hosts)])
    out = [
        f"{len(hosts)} host(s), majority release {status.majority or '(none)'}",
        f"  {'HOST':<{width}} {'RELEASE':<26} {'SHA':<12} {'DEPLOYED':<20} {'BY':<16} "
        f"{'KEPT':>4}  LOCK / SUBJECT",
    ]
    for h in hosts:
        name = _cut(h.host, 40)
        if h.error:
            out.append(f"✗ {name:<{width}} unreachable: {_cut(h.error, 200)}")
            continue
        mark = "!" if h.drift else "✓"
        out.append(
            f"{mark} {name:<{width}} {_cut(h.current or '(none)', 26):<26} {h.sha[:12]:<12} "
            f"{_cut(h.deployed_at, 20):<20} {_cut(h.deployed_by, 16):<16} {h.releases_kept:>4}  "
            f"{_cut(_lock(h), 120)}" + (f"  {_cut(h.subject, 72)}" if h.subject else "")
        )
    for h in status.drifted:
        out.append(
            f"drift: {_cut(h.host, 40)} runs {h.current or '(no release)'}, "
            f"not the majority's {status.majority}"
        )
    if status.unreachable:
        out.append(f"unreachable: {len(status.unreachable)} of {len(hosts)} host(s)")
    return out

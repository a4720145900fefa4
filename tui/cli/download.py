"""``shipdeck download``: fetch one file (a log) from every selected host into
``DEST/<host>/``. No textual."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.errors import ExitCode
from tui.cli.common import (
    add_config,
    add_hosts,
    err,
    load,
)
from tui.cli.prompt import prompter


def add_parsers(sub: Any) -> None:
    """Register ``download``."""
    p = sub.add_parser(
        "download",
        help="fetch a file (a log) from every host into DEST/<host>/",
        description="Fetch REMOTE_PATH from every selected host into DEST/<host>/. A relative"
        " path is under deploy.path (shared/log/app.log), ~/... under the login home;"
        " absolute paths are taken as they are.",
    )
    add_config(p)
    p.add_argument(
        "remote_path",
        metavar="REMOTE_PATH",
        help="relative to deploy.path (e.g. shared/log/app.log), ~/..., or absolute",
    )
    p.add_argument("--dest", default=".")
    add_hosts(p)
    p.set_defaults(func=cmd_download)


def cmd_download(args: argparse.Namespace) -> int:
    import asyncio

    from engine.config import ConfigError

    try:
        config = load(args)
        hosts = config.select_hosts(args.hosts)
    except ConfigError as exc:
        err(str(exc))
        return ExitCode.USAGE
    from engine.preflight import download, remote_path, shown_path

    try:
        where = shown_path(remote_path(config.deploy.path, args.remote_path))
    except ValueError as exc:
        err(str(exc))
        return ExitCode.USAGE
    # first, so that `| head -1` and a slow fleet both show what is being fetched from where
    print(
        f"download {where} from {len(hosts)} host(s) into {Path(args.dest) / '<host>'}/",
        flush=True,
    )
    results = asyncio.run(
        download(config, hosts, args.remote_path, Path(args.dest), prompter=prompter())
    )
    failed = 0
    for name, (ok, text) in results.items():
        print(f"{'✓' if ok else '✗'} {name}: {text}")
        failed += not ok
    if not failed:
        return ExitCode.OK
    return ExitCode.FAILED if failed < len(results) else ExitCode.STOPPED

"""``shipdeck history`` and ``shipdeck show``: the local record of past deploys and
rollbacks (SQLite, plus each run's JSON-lines transcript). No textual, no SSH."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from engine.errors import ExitCode
from tui.cli.common import err


def add_parsers(sub: Any) -> None:
    """Register ``history`` and ``show``."""
    p = sub.add_parser("history", help="list past deploys and rollbacks")
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser(
        "show",
        help="one deploy with per-host results",
        description="One deploy or rollback: what, by whom, and each host's outcome. ID is"
        " a deploy id, a release id (the deploy that made it) or a unique prefix of either.",
    )
    p.add_argument("deploy_id", metavar="ID", help="deploy id, release id, or a unique prefix")
    p.add_argument("--transcript", action="store_true", help="then every event of the run, as text")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def cmd_history(args: argparse.Namespace) -> int:
    from engine.history import History

    rows = History().list(args.n)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return ExitCode.OK
    if not rows:
        print("no deploys yet")
        return ExitCode.OK
    print(
        f"{'ID':<26} {'KIND':<11} {'PROJECT':<12} {'REF':<12} {'RELEASE':<26} {'STATUS':<11} {'HOSTS':<9} {'OPERATOR':<20} STARTED"
    )
    for r in rows:
        dur = f"{r['ended'] - r['started']:.1f}s" if r.get("ended") else ""
        hosts = f"{r['hosts_ok']}✓ {r['hosts_failed']}✗"
        print(
            f"{r['id']:<26} {r['kind']:<11} {r['project'][:12]:<12} {(r.get('ref') or '')[:12]:<12} "
            f"{(r.get('release_id') or '-')[:26]:<26} {r['status']:<11} {hosts:<9} {(r.get('operator') or '')[:20]:<20} "
            f"{_when(r['started'])} {dur}"
        )
    return ExitCode.OK


def cmd_show(args: argparse.Namespace) -> int:
    from engine.history import AmbiguousId, History

    h = History()
    try:
        r = h.find(args.deploy_id)
    except AmbiguousId as exc:
        _ambiguous(args.deploy_id, exc.candidates)
        return ExitCode.USAGE
    if r is None:
        err(f"show: no deploy or release {args.deploy_id!r} in {h.path} (see `shipdeck history`)")
        return ExitCode.USAGE
    if args.json:
        print(json.dumps(r, indent=2, default=str))
        return ExitCode.OK
    _print_run(r)
    _print_transcript(h.transcript(r["id"]), args.transcript)
    return ExitCode.OK


def _ambiguous(wanted: str, candidates: list[dict[str, Any]]) -> None:
    """Say on stderr which deploys a prefix matches (the first ten)."""
    shown = candidates[:10]
    more = len(candidates) - len(shown)
    err(
        f"show: {wanted!r} matches {len(candidates)} deploys; give more of"
        " the deploy or release id:\n"
        + "\n".join(
            f"  {c['id']:<26} {c['kind']:<8} release {c.get('release_id') or '-':<26}"
            f" {c['status']:<11} {_when(c['started'])}"
            for c in shown
        )
        + (f"\n  … and {more} more" if more else "")
    )


def _print_run(r: dict[str, Any]) -> None:
    """What, by whom, when, how it ended, and each host's outcome."""
    print(f"{r['kind']} {r['id']}")
    print(f"  project   {r['project']}" + (f"  env {r['env']}" if r.get("env") else ""))
    print(f"  ref       {r.get('ref') or '-'}  sha {(r.get('sha') or '-')[:12]}")
    print(f"  release   {r.get('release_id') or '-'}")
    print(f"  operator  {r.get('operator')}")
    print(f"  started   {_when(r['started'])}   ended {_when(r.get('ended'))}")
    print(f"  status    {r['status']} (exit {r.get('exit_code')})")
    summary = r.get("summary") or {}
    for line in _why_and_who(summary, r.get("freeze_override")):
        print(line)
    from tui.render import glyph

    print("  hosts:")
    for host in r["hosts"]:
        print(
            f"    {glyph(host['status'])} {host['host']:<24} {host['status']:<10} {host.get('detail') or ''}"
        )


def _why_and_who(summary: dict[str, Any], override: dict[str, Any] | None) -> list[str]:
    """The reason it stopped, the relay, a freeze override and the gates' approvals."""
    lines = []
    if summary.get("reason"):
        lines.append(f"  reason    {summary['reason']}")
    if summary.get("relay"):
        lines.append(f"  relay     {summary['relay']}")
    if override:
        role = f" ({override['role']})" if override.get("role") else ""
        lines.append(
            f"  freeze    {override.get('window')!r} overridden by {override.get('by')}{role}:"
            f" {override.get('override_reason')}"
        )
    for gate, given in (summary.get("approvals") or {}).items():
        if isinstance(given, list):
            who = ", ".join(
                f"{a.get('by')} at {_when(a.get('at'))}" for a in given if isinstance(a, dict)
            )
            lines.append(f"  approved  {gate} by {who}")
    return lines


def _print_transcript(path: Any, full: bool) -> None:
    """Where the run's transcript is; with ``full`` (``--transcript``), every event."""
    if not path:
        if full:
            print("  transcript (none recorded)")
        return
    print(f"  transcript {path}")
    if not full:
        return
    from tui.render import transcript_lines

    print()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            for line in transcript_lines(raw):
                print(line)

"""Events to text: the one place a deploy's events become words for a person.

One glyph table (:data:`GLYPH`), durations and sizes (:func:`fmt_duration`,
:func:`fmt_bytes`), one line per event (:func:`event_text`), a finished run's summary
(:func:`summary_lines`), maintenance mode (:func:`maintenance_text`), what goes out
(:func:`outgoing_card`), the plan as a tree (:func:`render_tree`), a transcript line
(:func:`transcript_lines`) and the headless printer's column line
(:func:`status_line`). Used by ``deploy --headless``, ``shipdeck tail``,
``shipdeck show --transcript``, the TUI's history screen and its tree labels.

Plain strings only: no textual, no rich (the headless commands never import them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from engine.events import (
    CANCELLED,
    FAILED,
    OK,
    PENDING,
    RUNNING,
    SKIPPED,
    WAITING,
    ChangesOutgoing,
    Control,
    DeployFinished,
    DeployMeta,
    Event,
    EventDecodeError,
    GateWaiting,
    LogLine,
    MaintenanceChanged,
    NodeStatus,
    PlanReady,
    Progress,
    Summary,
    Transfer,
    event_from_json,
)
from engine.outgoing import (
    AHEAD,
    BEHIND,
    DIVERGED,
    NONE,
    SAME,
    UNKNOWN,
    UNREAD,
    Commit,
    Group,
    Outgoing,
)
from engine.plan import Plan

#: Every status has a glyph, so it reads without colour.
GLYPH: dict[str, str] = {
    PENDING: "○",
    RUNNING: "●",
    WAITING: "⏸",
    OK: "✓",
    FAILED: "✗",
    SKIPPED: "–",
    CANCELLED: "–",
}


def glyph(status: str) -> str:
    """The glyph of a status ("?" for one we do not know)."""
    return GLYPH.get(status, "?")


def fmt_duration(seconds: float | None) -> str:
    """``4.2s``, ``42s``, ``3m05s``, ``1h02m``; "" for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_bytes(n: int) -> str:
    """``512B``, ``1.5KB``, ``3.2MB``, ``1.0GB``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{n}B"


def fmt_time(at: Any) -> str:
    """A local ``HH:MM:SS`` for an event time, or 8 spaces when there is none."""
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        return time.strftime("%H:%M:%S", time.localtime(at))
    return " " * 8


# -- summaries ----------------------------------------------------------------------


def summary_lines(summary: Summary | dict[str, Any]) -> list[str]:
    """A finished run's summary as text: the counts, then why it stopped and each
    failed host's reason, e.g. ``2/3 hosts ok, 1 failed in 4.2s (exit 1)`` and
    ``  ✗ web2: unhealthy after 30s``. Missing fields are left out, never guessed."""
    s = summary if isinstance(summary, Summary) else Summary.from_json(summary)
    parts = [f"{s.ok}/{s.hosts} hosts ok"]
    for name in ("failed", "skipped", "cancelled"):
        if getattr(s, name):
            parts.append(f"{getattr(s, name)} {name}")
    head = ", ".join(parts)
    if s.duration is not None:
        head += f" in {s.duration:.1f}s"
    if s.exit_code is not None:
        head += f" (exit {s.exit_code})"
    lines = [head]
    if s.reason:
        lines.append(f"  stopped: {s.reason}")
    if s.relay:
        lines.append(f"  relay: {s.relay}")
    lines.extend(f"  {GLYPH[FAILED]} {host}: {why}" for host, why in s.failures.items())
    t = s.extra.get("transfer")
    if isinstance(t, dict):
        lines.append(f"  {transfer_totals_text(t)}")
    if s.wire:  # a debug counter: last
        lines.append(f"  wire: {wire_text(s.wire)}")
    return lines


def wire_text(wire: dict[str, Any]) -> str:
    """A summary's wire counter as words: ``13 round trips per host (median; max 15,
    handshake 8), 1.2 MiB out, 84.0 KiB in``. Fields that are missing or not numbers
    are left out."""

    def num(key: str) -> float | None:
        v = wire.get(key)
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    parts = []
    median, most, shake = (
        num("round_trips_median"),
        num("round_trips_max"),
        num("handshake_round_trips_median"),
    )
    if median is not None:
        extra = [f"max {most:g}"] if most is not None else []
        extra += [f"handshake {shake:g}"] if shake is not None else []
        parts.append(
            f"{median:g} round trips per host" + (f" (median; {', '.join(extra)})" if extra else "")
        )
    for key, way in (("bytes_out", "out"), ("bytes_in", "in")):
        n = num(key)
        if n is not None:
            parts.append(f"{fmt_bytes(int(n))} {way}")
    return ", ".join(parts)


# -- one line per event ---------------------------------------------------------------


def _what(meta: dict[str, Any]) -> str:
    target = meta.get("ref") or meta.get("release_id") or ""
    return f"{meta.get('kind', 'deploy')} {meta.get('project', '')}@{target}"


def _status_words(event: NodeStatus) -> list[str]:
    detail = f"  {event.detail}" if event.detail else ""
    return [f"{glyph(event.status)} {event.key} {event.status}{detail}"]


def _log_words(event: LogLine) -> list[str]:
    return [f"  {event.key} │ {event.text}"]


def _plan_words(event: PlanReady) -> list[str]:
    meta = event.meta if isinstance(event.meta, dict) else {}
    hosts = f" to {meta['hosts']} host(s)" if meta.get("hosts") is not None else ""
    who = f" by {meta['operator']}" if meta.get("operator") else ""
    return [f"plan: {_what(meta)}{hosts}{who} ({len(event.nodes or [])} nodes)"]


def _meta_words(event: DeployMeta) -> list[str]:
    meta = event.meta if isinstance(event.meta, dict) else {}
    if meta.get("release_id"):
        sha = str(meta.get("sha") or "")[:12]
        subject = f"  {meta['subject']}" if meta.get("subject") else ""
        return [f"release {meta['release_id']}  sha {sha}{subject}"]
    return ["  ".join(f"{k} {v}" for k, v in meta.items())]


def _finished_words(event: DeployFinished) -> list[str]:
    head, *rest = summary_lines(event.report)
    return [f"finished: {event.status} — {head}", *rest]


def _control_words(event: Control) -> list[str]:
    return [f"{event.action} by {event.by} {event.key or ''}".rstrip()]


def _progress_words(event: Progress) -> list[str]:
    return [f"  {event.key} {event.done}/{event.total} bytes"]


def _mib(n: Any) -> str:
    """``100.0 MiB``; below 1 MiB in KiB (``14.2 KiB``)."""
    n = n if isinstance(n, (int, float)) and not isinstance(n, bool) else 0
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{n / 1024:.1f} KiB"


def transfer_text(event: Transfer) -> str:
    """``delta 1.0 MiB of 100.0 MiB in 0.41s (2.6 MB/s) via the jump host``, ``peer
    from web1 ...``: how the artifact reached one host."""
    how = f"{event.mode} from {event.source}" if event.source else event.mode
    rate = f" ({event.sent / event.seconds / 1e6:.1f} MB/s)" if event.seconds > 0 else ""
    via = " via the jump host" if event.jump else ""
    return f"{how} {_mib(event.sent)} of {_mib(event.total)} in {event.seconds:.2f}s{rate}{via}"


def transfer_totals_text(t: dict[str, Any]) -> str:
    """``artifact 100.0 MiB to 20 hosts: 101.2 MiB sent, 100.0 MiB across the jump
    link, 19 copied from peers`` (the summary's ``transfer``)."""
    peers = t.get("peer") or 0
    return (
        f"artifact {_mib(t.get('artifact'))} to {t.get('hosts', 0)} host(s): "
        f"{_mib(t.get('sent'))} sent"
        + (f", {_mib(t.get('jump'))} across the jump link" if t.get("jump") else "")
        + (f", {peers} copied from peers" if peers else "")
    )


def _transfer_words(event: Transfer) -> list[str]:
    return [f"  {event.key} {transfer_text(event)}"]


def _gate_words(event: GateWaiting) -> list[str]:
    return [f"{GLYPH[WAITING]} {event.key} waiting for approval"]


#: Maintenance mode's mark (the header, the headless line).
MAINTENANCE_MARK = "⚠"


def maintenance_text(event: MaintenanceChanged) -> str:
    """``maintenance on since 12:01:05 by alice: db upgrade (web: 3/3 servers in
    MAINT)``, or ``maintenance off since ... by bob``."""
    when = f" since {fmt_time(event.at)}" if event.at else ""
    who = f" by {event.by}" if event.by else ""
    why = f": {event.message}" if event.message else ""
    where = f" ({event.where})" if event.where else ""
    return f"maintenance {'on' if event.on is True else 'off'}{when}{who}{why}{where}"


def _maintenance_words(event: MaintenanceChanged) -> list[str]:
    return [
        f"{MAINTENANCE_MARK} {maintenance_text(event)}"
        if event.on is True
        else maintenance_text(event)
    ]


def _outgoing_words(event: ChangesOutgoing) -> list[str]:
    return outgoing_lines(event.changes, event.key)


#: An event's words, by event type (:func:`event_lines`).
_WORDS: dict[type[Event], Callable[[Any], list[str]]] = {
    NodeStatus: _status_words,
    LogLine: _log_words,
    PlanReady: _plan_words,
    DeployMeta: _meta_words,
    DeployFinished: _finished_words,
    Control: _control_words,
    Progress: _progress_words,
    Transfer: _transfer_words,
    GateWaiting: _gate_words,
    MaintenanceChanged: _maintenance_words,
    ChangesOutgoing: _outgoing_words,
}


def event_lines(event: Event) -> list[str]:
    """An event in words: one line (a finished event adds its summary's detail lines).

    ``✓ release/wave-1/web1/upload ok  1.2MB``, ``  web1/upload │ a log line``,
    ``⏸ release/gate-1 waiting for approval``, ``finished: failed — 2/3 hosts ok``;
    an event type without words here is its type name."""
    words = _WORDS.get(type(event))
    return words(event) if words is not None else [event.type]


def control_note(event: Control) -> str:
    """An operator's action as a chat notice: ``approved release/gate-1``,
    ``aborted the deploy``."""
    what = {"abort": "aborted", "approve": "approved"}.get(event.action, event.action)
    return f"{what} {event.key or 'the deploy'}"


def event_text(event: Event) -> str:
    """:func:`event_lines` as one line (a summary's detail lines joined with ``;``)."""
    head, *rest = event_lines(event)
    return "; ".join([head, *(line.strip() for line in rest)])


def transcript_lines(raw: str) -> list[str]:
    """One transcript line (an event as JSON) as text for a person: a time, a glyph and
    words; a plan or a summary never shows as a raw dict. Unreadable lines are shown as
    they are."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return [raw.rstrip("\n")]
    if not isinstance(data, dict):
        return [raw.rstrip("\n")]
    stamp = fmt_time(data.get("at"))
    try:
        event = event_from_json(data)
    except EventDecodeError:
        rest = "  ".join(
            f"{k} {v}" for k, v in data.items() if k not in ("type", "v", "at", "deploy_id")
        )
        return [f"{stamp} {data.get('type')} {rest}".rstrip()]
    head, *rest = event_lines(event)
    return [f"{stamp} {head}", *rest]


# -- what goes out ----------------------------------------------------------------------

#: The roles of a card's lines (:func:`outgoing_card`), for a UI that styles them.
CARD_ROLES = ("title", "warn", "group", "hosts", "commit", "back", "file", "more", "note")


def plural(n: int, word: str) -> str:
    """``1 wave``, ``2 waves``: a count and its word."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _hosts_text(g: Group) -> str:
    names = ", ".join(g.hosts)
    more = g.host_count - len(g.hosts)
    return names + (f", … +{more}" if more > 0 else "")


def _commit_text(c: Commit) -> str:
    return f"{c.sha[:7]}  {c.date[:10]}  {c.author}  {c.subject}".rstrip()


def _counts(n: int | None) -> str:
    return "bin" if n is None else str(n)


def _group_head(g: Group, target: str) -> str:
    hosts = plural(g.host_count, "host")
    runs = g.release or g.base[:7]
    if g.state == SAME:
        return f"{hosts} already on {target[:7]}: nothing new"
    if g.state == NONE:
        return (
            f"{hosts} with no release yet: the first release, {plural(g.commits_total, 'commit')}"
        )
    if g.state == UNREAD:
        return f"{hosts} could not be read: {g.note}"
    if g.state == UNKNOWN:
        return f"{hosts} on {runs}: {g.note or 'not in the git mirror'}"
    parts = []
    if g.commits_total:
        parts.append(plural(g.commits_total, "commit") + " going out")
    if g.back_total:
        parts.append(plural(g.back_total, "commit") + " taken back")
    parts.append(f"{plural(g.files_total, 'file')} +{g.added} −{g.removed}")
    named = g.release and g.base and not g.release.endswith(g.base[:7])
    base = f" ({g.base[:7]})" if named else ""  # a release id already ends with its sha
    return f"{hosts} on {runs}{base}: " + ", ".join(parts) + (f"  [{g.note}]" if g.note else "")


def _card_head(card: Outgoing, key: str) -> list[tuple[str, str]]:
    """The card's title, then why it cannot tell or the no-op warning."""
    where = "" if key in ("", "release") else f" at {key.rsplit('/', 1)[-1]}"
    target = f"{card.target[:7]} {card.subject}".strip() or "?"
    out = [("title", f"what goes out{where} to {plural(card.hosts, 'host')}: {target}")]
    if card.error:
        out.append(("warn", f"⚠ cannot tell what goes out: {card.error}"))
    elif card.noop:
        every = (
            "the host already runs" if card.hosts == 1 else f"all {card.hosts} hosts already run"
        )
        out.append(("warn", f"⚠ no-op: {every} {card.target[:7]}; nothing new goes out"))
    return out


def _more(shown: int, total: int, what: str) -> list[tuple[str, str]]:
    """``… and 18 more commits`` when the card left some out."""
    return [("more", f"   … and {total - shown} more {what}")] if total > shown else []


def _group_changes(g: Group) -> list[tuple[str, str]]:
    """A group's commits going out, those taken back and its files (+/−)."""
    out = [("commit", f"   {_commit_text(c)}") for c in g.commits]
    out += _more(len(g.commits), g.commits_total, "commits")
    if g.back:
        out.append(("back", "   taken back:"))
        out += [("back", f"   ↩ {_commit_text(c)}") for c in g.back]
    out += _more(len(g.back), g.back_total, "taken back")
    counts = [f"+{_counts(f.added)} −{_counts(f.removed)}" for f in g.files]
    width = max(map(len, counts), default=0)
    out += [("file", f"   {c:>{width}}  {f.path}") for c, f in zip(counts, g.files, strict=True)]
    out += _more(len(g.files), g.files_total, "files")
    return out


def outgoing_card(
    changes: Outgoing | dict[str, Any], key: str = "release"
) -> list[tuple[str, str]]:
    """What goes out as (role, line) pairs (roles: :data:`CARD_ROLES`): a title, the
    no-op warning when every host already runs the target, then per group of hosts
    (by the commit they run) its hosts, the commits going out (short sha, date,
    author, subject), those taken back, and the files with lines added and removed;
    what the card left out is counted ("… and 18 more commits")."""
    card = changes if isinstance(changes, Outgoing) else Outgoing.from_json(changes)
    out = _card_head(card, key)
    if card.error:
        return out
    shown = sum(1 for g in card.groups if g.state != SAME) > 1 or card.noop
    for g in card.groups:
        if card.noop and g.state == SAME:
            continue
        out.append(("group", f"── {_group_head(g, card.target)}"))
        if len(card.groups) > 1 or shown or g.host_count > 1:
            out.append(("hosts", f"   {_hosts_text(g)}"))
        if g.state in (AHEAD, DIVERGED, NONE, BEHIND):
            out += _group_changes(g)
    if card.more_groups:
        others = f"({plural(card.more_hosts, 'host')}) on other commits"
        out.append(("more", f"── … and {plural(card.more_groups, 'more group')} {others}"))
    return out


def outgoing_lines(changes: Outgoing | dict[str, Any], key: str = "release") -> list[str]:
    """:func:`outgoing_card` as plain lines (the headless printer, tail, dry run)."""
    return [line for _, line in outgoing_card(changes, key)]


# -- the plan, and the headless printer's columns -------------------------------------


def plan_title(meta: dict[str, Any]) -> str:
    """``deploy web@main (sha 3f2a9c1)``."""
    head = f"{meta.get('kind', 'deploy')} {meta.get('project', '')}@{meta.get('ref', '')}"
    if meta.get("sha"):
        head += f" (sha {str(meta['sha'])[:7]})"
    return head


def render_tree(plan: Plan, *, collapse_steps: bool = False) -> list[str]:
    """The plan as box-drawing lines, e.g. for ``--dry-run``."""
    lines = [plan_title(plan.meta)]

    def walk(key: str | None, prefix: str) -> None:
        kids = plan.kids(key)
        for i, node in enumerate(kids):
            last = i == len(kids) - 1
            branch = "└── " if last else "├── "
            label = node.label
            if node.kind == "host" and collapse_steps:
                label += f"  ({', '.join(k.label for k in plan.kids(node.key))})"
            extra = f"  {node.detail}" if node.detail else ""
            lines.append(f"{prefix}{branch}{label}{extra}")
            if not (node.kind == "host" and collapse_steps):
                walk(node.key, prefix + ("    " if last else "│   "))

    walk(None, "")
    return lines


def start_line(event: PlanReady) -> str:
    """The headless printer's first line: what runs, where, as whom."""
    meta = event.meta
    return (
        f"{meta.get('kind', 'deploy')} {meta.get('project')}@{meta.get('ref') or meta.get('release_id')} "
        f"to {meta.get('hosts')} host(s) as {meta.get('operator')}  [{event.deploy_id}]"
    )


def status_line(event: NodeStatus, duration: float | None = None) -> str:
    """A status change in columns (the headless printer): glyph, status, where (a
    host's step as ``web1  upload``), duration, detail."""
    parts = event.key.split("/")
    if parts[0] == "release" and len(parts) >= 3:
        where = "  ".join(parts[2:]) if not parts[1].startswith("gate") else parts[1]
    else:
        where = event.key
    dur = f"{duration:.2f}s" if duration is not None else ""
    detail = f"  {event.detail}" if event.detail else ""
    return f"{glyph(event.status)} {event.status:<9} {where:<40} {dur:>7}{detail}"


def headless_lines(event: Event, *, duration: float | None = None) -> list[str]:
    """An event as the headless printer shows it (what to show is the printer's
    choice; this is only the words): a status in columns (:func:`status_line`), a log
    line indented under its node, a gate, an operator's action, the final summary."""
    if isinstance(event, PlanReady):
        return [start_line(event)]
    if isinstance(event, DeployMeta):
        if "release_id" not in event.meta:
            return []
        meta = event.meta
        return [
            f"release {meta['release_id']}  sha {str(meta.get('sha', ''))[:12]}  {meta.get('subject', '')}"
        ]
    if isinstance(event, NodeStatus):
        return [status_line(event, duration)]
    if isinstance(event, LogLine):
        return [f"    {event.key}: {event.text}"]
    if isinstance(event, GateWaiting):
        return [f"gate {event.key}: waiting for approval"]
    if isinstance(event, Control):
        return [f"{event.action} by {event.by}" + (f" ({event.key})" if event.key else "")]
    if isinstance(event, ChangesOutgoing):
        return outgoing_lines(event.changes, event.key)
    if isinstance(event, DeployFinished):
        head, *rest = summary_lines(event.report)
        return [f"{event.status.upper()}: {head}", *rest]
    if isinstance(event, MaintenanceChanged):
        return _maintenance_words(event)
    return []

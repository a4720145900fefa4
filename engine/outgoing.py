"""What's going out: the commits and files between what each host runs now and the
target, as the deploy confirm, every gate, ``deploy --dry-run`` and the headless
printer show it.

:func:`compute` reads the local git mirror (never the network): hosts are grouped by
the commit they run; each group gets the commits between that commit and the target
(short sha, subject, author, date), the files changed with lines added and removed,
and, when the target is older than what the hosts run, the commits taken back. Every
list is bounded (:class:`Limits`); what is left out is counted, so a card can say
"and N more". :attr:`Outgoing.noop` is true when every selected host already runs
the target.

The result travels as the ``changes`` of one event,
:class:`engine.events.ChangesOutgoing`; :meth:`Outgoing.to_json` and
:meth:`Outgoing.from_json` are its wire form. This module imports GitPython only when
it computes (reading a card back needs nothing but the standard library).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.events import (  # how a group of hosts stands against the target
    AHEAD,
    BEHIND,
    DIVERGED,
    NONE,
    SAME,
    UNKNOWN,
    UNREAD,
)
from engine.events import OUTGOING_STATES as STATES

log = logging.getLogger("shipdeck.engine")


@dataclass(frozen=True, slots=True)
class Limits:
    """How much a card holds: commits and files per group, groups, host names per
    group, and characters of a subject, author or path."""

    commits: int = 20
    files: int = 30
    groups: int = 8
    host_names: int = 12
    chars: int = 200


@dataclass(frozen=True, slots=True)
class Running:
    """What one host runs now: its current release id and commit ("" for none), or
    why it could not be read."""

    host: str
    release: str = ""
    sha: str = ""
    error: str = ""

    @classmethod
    def of_release(cls, host: str, release: str, sha: str = "", error: str = "") -> Running:
        """From a release id (``<UTC stamp>-<short sha>``): its sha is the id's tail
        unless ``sha`` (from revisions.log) is given."""
        return cls(host, release, sha or release_sha(release), error)


def release_sha(release_id: str) -> str:
    """The short sha a release id ends with (``20261124T153500Z-3f2a9c1``), or ""."""
    _, sep, tail = release_id.rpartition("-")
    if sep and 4 <= len(tail) <= 40 and all(c in "0123456789abcdef" for c in tail):
        return tail
    return ""


@dataclass(slots=True)
class Commit:
    sha: str
    subject: str = ""
    author: str = ""
    date: str = ""  # ISO 8601, the author's date

    def to_json(self) -> dict[str, Any]:
        return {"sha": self.sha, "subject": self.subject, "author": self.author, "date": self.date}


@dataclass(slots=True)
class FileChange:
    path: str
    added: int | None = 0  # None: a binary file
    removed: int | None = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "added": self.added, "removed": self.removed}


@dataclass(slots=True)
class Group:
    """Hosts that run the same commit, and what the target changes for them."""

    state: str
    base: str = ""  # the commit they run (full sha when the mirror knows it)
    release: str = ""  # the release id the first of them runs
    hosts: list[str] = field(default_factory=list)  # the first names (Limits.host_names)
    host_count: int = 0
    commits: list[Commit] = field(default_factory=list)  # going out, newest first
    commits_total: int = 0
    back: list[Commit] = field(default_factory=list)  # taken back (target older)
    back_total: int = 0
    files: list[FileChange] = field(default_factory=list)
    files_total: int = 0
    added: int = 0  # lines, over every changed file
    removed: int = 0
    note: str = ""  # why nothing more is known (unreadable host, sha not in the mirror)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "base": self.base,
            "release": self.release,
            "hosts": list(self.hosts),
            "host_count": self.host_count,
            "commits": [c.to_json() for c in self.commits],
            "commits_total": self.commits_total,
            "back": [c.to_json() for c in self.back],
            "back_total": self.back_total,
            "files": [f.to_json() for f in self.files],
            "files_total": self.files_total,
            "added": self.added,
            "removed": self.removed,
            "note": self.note,
        }


@dataclass(slots=True)
class Outgoing:
    """What a deploy (or a gate's next hosts) would change, grouped by what hosts run."""

    target: str = ""
    subject: str = ""
    hosts: int = 0  # hosts this card is about
    groups: list[Group] = field(default_factory=list)
    more_groups: int = 0  # groups left out (Limits.groups)
    more_hosts: int = 0  # hosts in those groups
    error: str = ""  # nothing could be computed, and why

    @property
    def noop(self) -> bool:
        """Every host of the card already runs the target (nothing goes out)."""
        return (
            self.hosts > 0
            and not self.error
            and not self.more_groups
            and all(g.state == SAME for g in self.groups)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "subject": self.subject,
            "hosts": self.hosts,
            "noop": self.noop,
            "groups": [g.to_json() for g in self.groups],
            "more_groups": self.more_groups,
            "more_hosts": self.more_hosts,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, data: Any) -> Outgoing:
        """Read a card back; a field that is missing or not what it should be is left
        at its default. Never raises."""
        if not isinstance(data, dict):
            return cls(error="no changes to show")
        out = cls(
            target=_str(data.get("target")),
            subject=_str(data.get("subject")),
            hosts=_int(data.get("hosts")),
            more_groups=_int(data.get("more_groups")),
            more_hosts=_int(data.get("more_hosts")),
            error=_str(data.get("error")),
        )
        for g in _list(data.get("groups")):
            if not isinstance(g, dict):
                continue
            state = _str(g.get("state"))
            out.groups.append(
                Group(
                    state=state if state in STATES else UNKNOWN,
                    base=_str(g.get("base")),
                    release=_str(g.get("release")),
                    hosts=[h for h in _list(g.get("hosts")) if isinstance(h, str)],
                    host_count=_int(g.get("host_count")),
                    commits=_commits(g.get("commits")),
                    commits_total=_int(g.get("commits_total")),
                    back=_commits(g.get("back")),
                    back_total=_int(g.get("back_total")),
                    files=[
                        FileChange(
                            _str(f.get("path")), _count(f.get("added")), _count(f.get("removed"))
                        )
                        for f in _list(g.get("files"))
                        if isinstance(f, dict)
                    ],
                    files_total=_int(g.get("files_total")),
                    added=_int(g.get("added")),
                    removed=_int(g.get("removed")),
                    note=_str(g.get("note")),
                )
            )
        return out


def _str(v: Any) -> str:
    return v if isinstance(v, str) else ""


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _count(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _commits(v: Any) -> list[Commit]:
    return [
        Commit(
            _str(c.get("sha")), _str(c.get("subject")), _str(c.get("author")), _str(c.get("date"))
        )
        for c in _list(v)
        if isinstance(c, dict)
    ]


def fit_card(changes: Any, budget: int) -> dict[str, Any]:
    """A card's dict (as :meth:`Outgoing.to_json` writes it) read back and made to fit
    ``budget`` bytes of JSON: each group's lists of commits and files are halved
    (their totals stay, so "and N more" stays true), then the last groups are folded
    into ``more_groups``. Never raises."""
    card = Outgoing.from_json(changes)

    def size() -> int:
        text = json.dumps(card.to_json(), separators=(",", ":"), ensure_ascii=False)
        return len(text.encode("utf-8", "surrogatepass"))

    while size() > budget:
        longest = (
            max((len(g.commits), len(g.back), len(g.files), len(g.hosts)) for g in card.groups)
            if card.groups
            else (0,)
        )
        if max(longest) > 1:
            for g in card.groups:
                g.commits = g.commits[: len(g.commits) // 2]
                g.back = g.back[: len(g.back) // 2]
                g.files = g.files[: len(g.files) // 2]
                g.hosts = g.hosts[: max(1, len(g.hosts) // 2)]
        elif len(card.groups) > 1:
            last = card.groups.pop()
            card.more_groups += 1
            card.more_hosts += last.host_count
        else:
            card = Outgoing(target=card.target[:40], hosts=card.hosts, error="too large to show")
            break
    return card.to_json()


def waves_after_gate(plan: Any, gate: str) -> list[Any]:
    """The wave nodes that approving ``gate`` (``release/gate-N``) lets run: wave N+1
    and the waves after it up to the next gate. [] for a key that is not a gate."""
    _, _, number = gate.rpartition("-")
    if not gate.startswith("release/gate-") or not number.isdigit():
        return []
    out = []
    for index, wave in enumerate(plan.waves(), start=1):
        if index <= int(number):
            continue
        out.append(wave)
        if f"release/gate-{index}" in plan.nodes:
            break
    return out


# -- computing it from the mirror ------------------------------------------------------


def compute(
    mirror: Path, target: str, running: Sequence[Running], limits: Limits = Limits()
) -> Outgoing:
    """What going to ``target`` changes on each host of ``running`` (in their order),
    read from the git mirror at ``mirror``. Blocking (GitPython): see :func:`outgoing`.
    Never raises: a mirror or a target git cannot read gives a card with ``error``."""
    from engine import git as gitmod

    out = Outgoing(target=target, hosts=len(running))
    try:
        repo = gitmod.open_repo(mirror)
    except gitmod.GitError as exc:
        out.error = str(exc)
        return out
    with repo:
        full = gitmod.verify_commit(repo, target)
        if full is None:
            out.error = f"{target[:12] or 'the target'} is not in the git mirror"
            return out
        out.target = full
        try:
            out.subject = _cut(repo.commit(full).summary, limits.chars)
        except (ValueError, gitmod.git.GitCommandError):
            pass
        order = _group_hosts(repo, full, running, limits)
        for g in order[: limits.groups]:
            try:
                _fill(repo, g, full, limits)
            except (gitmod.GitError, gitmod.git.GitCommandError, ValueError) as exc:
                g.note = _cut(str(exc), limits.chars)
            out.groups.append(g)
        hidden = order[limits.groups :]
        out.more_groups = len(hidden)
        out.more_hosts = sum(g.host_count for g in hidden)
    return out


def _state(r: Running, base: str, target: str) -> str:
    """How a host stands against ``target``, from the commit it runs (``base``: that
    commit as the mirror knows it, "" when it does not)."""
    if r.error:
        return UNREAD
    if not r.sha:
        return NONE
    if not base:
        return UNKNOWN
    return SAME if base == target else AHEAD


def _group_hosts(repo: Any, target: str, running: Sequence[Running], limits: Limits) -> list[Group]:
    """The hosts grouped by how they stand and the commit they run: what changes
    first, the most hosts first; hosts already on the target last."""
    from engine import git as gitmod

    groups: dict[tuple[str, str], Group] = {}
    resolved: dict[str, str] = {}  # one git call per distinct commit, not per host
    for r in running:
        base = ""
        if r.sha and not r.error:
            if r.sha not in resolved:
                resolved[r.sha] = gitmod.verify_commit(repo, r.sha) or ""
            base = resolved[r.sha]
        state = _state(r, base, target)
        key = (state, base or (r.sha if state == UNKNOWN else ""))
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(state=state, base=key[1], release=r.release)
            if state == UNREAD:
                g.note = _cut(r.error, limits.chars)
            elif state == UNKNOWN:
                g.note = f"{r.sha[:12]} is not in the git mirror"
        g.host_count += 1
        if len(g.hosts) < limits.host_names:
            g.hosts.append(r.host)
    return sorted(groups.values(), key=lambda g: (g.state == SAME, -g.host_count))


def _fill(repo: Any, g: Group, target: str, limits: Limits) -> None:
    """The commits and files of one group (its state says which ranges)."""
    from engine import git as gitmod

    if g.state in (SAME, UNKNOWN, UNREAD):
        return
    if g.state == NONE:  # a first release: its whole history goes out
        g.commits_total = int(repo.git.rev_list("--count", target, "--").strip() or 0)
        g.commits = _rows(gitmod.log_range(repo, target, limits.commits), limits)
        return
    g.commits_total = gitmod.count_commits(repo, g.base, target)
    g.back_total = gitmod.count_commits(repo, target, g.base)
    g.state = (
        DIVERGED
        if g.commits_total and g.back_total
        else BEHIND
        if g.back_total
        else AHEAD
        if g.commits_total
        else SAME
    )
    if g.commits_total:
        g.commits = _rows(gitmod.log_range(repo, f"{g.base}..{target}", limits.commits), limits)
    if g.back_total:
        g.back = _rows(gitmod.log_range(repo, f"{target}..{g.base}", limits.commits), limits)
    files = gitmod.diff_numstat(repo, g.base, target)
    g.files_total = len(files)
    g.added = sum(a or 0 for _, a, _ in files)
    g.removed = sum(r or 0 for _, _, r in files)
    g.files = [FileChange(_cut(p, limits.chars * 2), a, r) for p, a, r in files[: limits.files]]


def _rows(rows: list[tuple[str, str, str, str]], limits: Limits) -> list[Commit]:
    return [
        Commit(sha, _cut(subject, limits.chars), _cut(author, 100), date)
        for sha, author, date, subject in rows
    ]


def _cut(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def outgoing(
    mirror: Path, target: str, running: Sequence[Running], limits: Limits = Limits()
) -> Outgoing:
    """:func:`compute` off the event loop (git runs in a thread)."""
    return await asyncio.to_thread(compute, mirror, target, running, limits)


async def announce(run: Any, key: str, states: Sequence[Any]) -> None:
    """Emit what goes out to the hosts of ``states`` (the run's
    :class:`engine.hostlock.HostState`, whose ``current`` the lock probe read) as
    ``run``'s :class:`~engine.events.ChangesOutgoing` for ``key``. The target is the
    run's commit (a deploy's sha, else the tail of the release it goes to). Nothing
    is emitted when there is no target or no host; never raises (a card is never a
    reason to stop a release)."""
    from engine import git as gitmod
    from engine.events import ChangesOutgoing, now

    target = getattr(run, "sha", "") or release_sha(getattr(run, "release_id", "") or "")
    running = [Running.of_release(st.name, st.current) for st in states]
    if not target or not running:
        return
    try:
        config = run.config
        mirror = gitmod.mirror_path(gitmod.normalise_repo(config.project.repo, config.base_dir))
        card = await outgoing(mirror, target, running)
    except Exception as exc:  # the release goes on without its card
        log.warning("cannot tell what goes out: %s", exc)
        return
    run.emit(ChangesOutgoing(run.deploy_id, key=key, changes=card.to_json(), at=now()))


async def preview(config: Any, specs: Sequence[Any], ref: str, prompter: Any = None) -> Outgoing:
    """What deploying ``ref`` to ``specs`` would change, before anything runs: the
    mirror is fetched, each host is read like ``shipdeck status`` does (read-only,
    no lock) and :func:`compute` does the rest. Never raises for a host or a git
    error (the card says what could not be read)."""
    from engine import git as gitmod
    from engine.fleetstatus import fleet_status

    try:
        repo = gitmod.normalise_repo(config.project.repo, config.base_dir)
        mirror, target, _ = await gitmod.fetch(repo, ref)
    except gitmod.GitError as exc:
        return Outgoing(hosts=len(specs), error=str(exc))
    status = await fleet_status(config, list(specs), prompter)
    running = [Running.of_release(h.host, h.current, h.sha, h.error) for h in status.hosts]
    return await outgoing(mirror, target, running)


__all__ = [
    "AHEAD",
    "announce",
    "BEHIND",
    "DIVERGED",
    "NONE",
    "SAME",
    "STATES",
    "UNKNOWN",
    "UNREAD",
    "Commit",
    "FileChange",
    "Group",
    "Limits",
    "Outgoing",
    "Running",
    "compute",
    "fit_card",
    "outgoing",
    "preview",
    "release_sha",
    "waves_after_gate",
]

"""The host's deploy lock: the probe that takes it, its takeover, heartbeat and fence.

``<path>/.shipdeck.lock`` is made with an atomic ``mkdir``; its ``owner`` file holds
a JSON owner record and ``hb`` the host clock of the owner's last heartbeat. The
probe prints ``key=value`` lines (:func:`parse_kv`); a lock held by someone else is
judged from them (:func:`held_lock`). A fenced script changes nothing unless the lock
still names its deploy (:func:`fenced`, :func:`refused_line`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from engine.localproc import boot_id, pid_alive, pid_space
from engine.remote.shell import SHA256_SH, iso, q, resolve_path_sh

LOCK_DIR = ".shipdeck.lock"

#: commands every host needs (POSIX, or BusyBox applets)
REQUIRED_TOOLS = ("tar", "gzip", "mkdir", "mv", "ln", "rm", "cat", "wc", "readlink", "df")


def lock_owner(operator: str, deploy_id: str, ttl: float = 60.0) -> dict[str, object]:
    """The owner record written into a host's lock. ``pid`` and ``host`` are for people
    reading it; liveness is the heartbeat (``ttl``: the owner refreshes it well within),
    and ``boot`` and ``pidns`` with ``pid`` let a later run on the same machine see at once that the
    owner's process has ended (a killed client), without waiting for the TTL."""
    owner: dict[str, object] = {
        "operator": operator,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": iso(),
        "deploy_id": deploy_id,
        "ttl": ttl,
    }
    boot, space = boot_id(), pid_space()
    if boot and space:
        owner["boot"], owner["pidns"] = boot, space
    return owner


def _lock_state_sh(lock: str) -> str:
    """Shell printing a held lock: its owner line (bounded) and the age in seconds of
    its heartbeat on the host's clock (``hb`` holds the host's ``date +%s``; without
    one, the owner file's or the directory's time counts)."""
    return (
        f"echo lock=held; printf 'owner='; head -c 2000 {lock}/owner 2>/dev/null | head -n 1 | tr -d '\\n'; echo; "
        f"now=$(date +%s); hb=; IFS= read -r hb < {lock}/hb 2>/dev/null; "
        f'case "$hb" in ""|*[!0-9]*) hb=$(date -r {lock}/owner +%s 2>/dev/null || date -r {lock} +%s 2>/dev/null || echo "$now") ;; esac; '
        'echo "lock_age=$((now - hb))"; '
    )


def _write_owner_sh(lock: str, owner: dict[str, object]) -> str:
    """Shell writing the owner record and a fresh heartbeat; the owner file is
    replaced in one rename, so a reader sees the old owner or the new, never half."""
    return (
        f"printf '%s\\n' {q(json.dumps(owner))} > {lock}/owner.new && date +%s > {lock}/hb "
        f"&& mv -f {lock}/owner.new {lock}/owner"
    )


def artifact_probe_sh(artifact_sha: str) -> str:
    """Shell that reports what the host has towards ``artifact_sha``: the artifact's
    own sha256 (``artifact_sha=``, when there); a broken upload of it (``part_size=``
    and, where the host can hash, ``part_sha=``: what a resume continues); its newest
    other artifact (``base=``, what a delta is made against) and ``delta=zstd`` when
    it can apply a zstd patch and check the result."""
    a = f'"$P/artifacts/"{q(artifact_sha + ".tar")}'
    return "\n".join(
        [
            SHA256_SH,
            "h=; sd_can_hash && h=1",
            f'if [ -f {a} ] && [ -n "$h" ]; then sd_sha256 {a} && echo "artifact_sha=$SD_SUM"; fi',
            f'if [ -f {a}.part ]; then echo "part_size=$(($(wc -c < {a}.part)))"; '
            f'[ -n "$h" ] && sd_sha256 {a}.part && echo "part_sha=$SD_SUM"; fi',
            # the newest other artifact, by the shell alone (``-nt``: every sh shipdeck
            # meets has it; where one did not, the first found would do)
            f'b=; for f in "$P"/artifacts/*.tar; do [ -f "$f" ] || continue; case "$f" in *{q(artifact_sha)}*) continue ;; esac; '
            '{ [ -z "$b" ] || [ "$f" -nt "$b" ]; } && b=$f; done; '
            'b=${b##*/}; [ -n "$b" ] && echo "base=${b%.tar}"',
            '[ -n "$h" ] && command -v zstd >/dev/null 2>&1 && echo delta=zstd',
            ":",
        ]
    )


def probe_script(path: str, artifact_sha: str | None, owner: dict[str, object] | None) -> str:
    """Resolve the path, create the layout, report current/artifact/disk and take the lock.

    Prints ``lock=acquired``; or ``lock=held`` with ``owner=`` and ``lock_age=`` (the
    seconds since its owner's last heartbeat, host clock); or ``lock_error=`` with the
    OS's reason when the lock cannot be created at all (permissions, read-only): that
    is no lock. With ``owner=None`` nothing is created or locked (the dry-run)."""
    lines = ["export LC_ALL=C", resolve_path_sh(path), "printf 'path=%s\\n' \"$P\""]
    # the tools a deploy needs on the host: say which are missing, never hang on them
    lines.append(
        f'm=; for t in {" ".join(REQUIRED_TOOLS)}; do command -v $t >/dev/null 2>&1 || m="$m $t"; done; '
        'if [ -n "$m" ]; then echo "missing=${m# }"; '
        + (
            'echo "this host lacks:$m (needed to unpack and switch releases)" >&2; exit 1; '
            if owner is not None
            else ""
        )
        + "fi"
    )
    if owner is not None:
        lines.append(
            '[ -d "$P" ] || { e=$(mkdir -p "$P" 2>&1) || '
            '{ echo "lock_error=cannot create $P: ${e##*: }"; exit 0; }; }'
        )
    lines += [
        'c=$(readlink "$P/current" 2>/dev/null || true); echo "current=${c##*/}"',
        'd="$P"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done',
        # df alone (no awk): the second line's 4th field is the free KiB
        'df -Pk "$d" 2>/dev/null | { read -r _; read -r _ _ _ f _; echo "free_kb=$f"; }',
        'if [ -w "$d" ]; then echo writable=yes; else echo writable=no; fi',
        # the last outcome recorded on the host (the truth after a lost connection)
        'l=$(tail -n 1 "$P/revisions.log" 2>/dev/null | cut -c1-500); echo "last_revision=$l"',
    ]
    if artifact_sha:
        lines.append(artifact_probe_sh(artifact_sha))
    lock = f'"$P/"{LOCK_DIR}'
    held = _lock_state_sh(lock)
    if owner is None:
        lines.append(f"if [ -d {lock} ]; then {held}else echo lock=free; fi")
    else:
        # the layout is made under the lock
        layout = (
            '[ -d "$P/releases" ] && [ -d "$P/shared" ] && [ -d "$P/artifacts" ] || '
            '{ e=$(mkdir -p "$P/releases" "$P/shared" "$P/artifacts" 2>&1) || '
            'echo "layout_error=cannot create the layout in $P: ${e##*: }"; }; '
        )
        # "File exists" with no lock to see: its holder released it just now; again
        lines.append(
            "n=0; while :; do "
            f"if e=$(mkdir {lock} 2>&1); then "
            f"if {_write_owner_sh(lock, owner)}; then echo lock=acquired; {layout}"
            f"else rm -rf {lock}; echo 'cannot write the lock owner (disk full?)' >&2; exit 1; fi; "
            f"elif [ -d {lock} ]; then {held}"
            'else case "$e" in *"File exists"*) n=$((n+1)); [ $n -lt 20 ] && continue ;; esac; '
            'echo "lock_error=cannot create $P/.shipdeck.lock: ${e##*: }"; fi; break; done'
        )
    return "\n".join(lines)


def _tag(deploy_id: str) -> str:
    """A file-name-safe form of an owner's deploy id (ids are ``[0-9A-Za-z-]``)."""
    safe = "".join(c for c in deploy_id if c.isalnum() or c == "-")[:80]
    return safe or "unowned"


def takeover_script(
    path: str,
    owner: dict[str, object],
    old_deploy_id: str,
    ttl: float,
    *,
    force: bool = False,
    old_line: str = "",
) -> str:
    """Replace exactly the lock judged stale: compare-and-swap on its owner record.

    Contenders for the same stale owner race on ``mkdir <lock>.takeover.<old id>``,
    which only one creates; the winner checks again (same owner, heartbeat still older
    than ``ttl`` unless ``force``) and swaps the owner record in one rename. Prints
    ``lock=acquired``, or ``takeover=lost`` / ``takeover=changed`` / ``takeover=alive``."""
    lock = f"{q(path)}/{LOCK_DIR}"
    tag = old_deploy_id or hashlib.sha256(old_line.encode()).hexdigest()[:16]
    guard = f"{lock}.takeover.{_tag(tag)}"
    if old_deploy_id:
        same = f'case "$o" in *{q(chr(34) + "deploy_id" + chr(34) + ": " + json.dumps(old_deploy_id))}*) ;; *) same=no ;; esac'
    else:  # an owner record without a deploy id (or none at all): the exact line
        same = f'[ "$o" = {q(old_line)} ] || same=no'
    fresh = (
        ""
        if force
        else (
            f"now=$(date +%s); hb=; IFS= read -r hb < {lock}/hb 2>/dev/null; "
            f'case "$hb" in ""|*[!0-9]*) hb=$(date -r {lock}/owner +%s 2>/dev/null || date -r {lock} +%s 2>/dev/null || echo "$now") ;; esac; '
            f"[ $((now - hb)) -gt {int(ttl)} ] || r=alive"
        )
    )
    return "\n".join(
        [
            f"mkdir {guard} 2>/dev/null || {{ echo takeover=lost; exit 0; }}",
            "r=; same=",
            f"if [ -d {lock} ]; then o=; IFS= read -r o < {lock}/owner 2>/dev/null; {same}; else same=no; fi",
            '[ "$same" = no ] && r=changed',
            f'[ -n "$r" ] || {{ {fresh or ":"}; }}',
            f'if [ -z "$r" ]; then {_write_owner_sh(lock, owner)} && r=acquired || r=failed; fi',
            f'[ "$r" = acquired ] && mkdir -p {q(path)}/releases {q(path)}/shared {q(path)}/artifacts',
            f"rmdir {guard}",
            'case "$r" in acquired) echo lock=acquired ;; *) echo "takeover=$r" ;; esac',
        ]
    )


def heartbeat_script(path: str, deploy_id: str) -> str:
    """Refresh the lock's heartbeat with the host's clock, only while the lock still
    names ``deploy_id``. Prints ``hb=ok`` or ``hb=lost`` and the owner now."""
    lock = f"{q(path)}/{LOCK_DIR}"
    return (
        f"o=; IFS= read -r o < {lock}/owner 2>/dev/null; "
        f'case "$o" in *{_id_mark(deploy_id)}*) date +%s > {lock}/hb.new && mv -f {lock}/hb.new {lock}/hb && echo hb=ok ;; '
        f"*) echo hb=lost; {_who_sh()} ;; esac"
    )


def _id_mark(deploy_id: str) -> str:
    return q(f'"deploy_id": {json.dumps(deploy_id)}')


def _who_sh() -> str:
    """Shell printing ``lock taken over by <operator> (deploy <id>)`` from ``$o``."""
    return (
        'w=$(printf \'%s\\n\' "$o" | sed -n \'s/.*"operator": "\\([^"]*\\)".*/\\1/p\'); '
        'i=$(printf \'%s\\n\' "$o" | sed -n \'s/.*"deploy_id": "\\([^"]*\\)".*/\\1/p\'); '
        'if [ -z "$o" ]; then echo "lock taken over by nobody: the lock is gone"; '
        'else echo "lock taken over by ${w:-an unknown owner} (deploy ${i:-?})"; fi'
    )


#: exit status of a step refused because the lock no longer names its deploy
FENCED_EXIT = 75


def fenced(path: str, deploy_id: str, script: str) -> str:
    """``script``, run only if the host's lock still names ``deploy_id`` (checked in
    the same remote script, right before it). Otherwise nothing changes: it prints
    ``lock taken over by <operator> (deploy <id>)`` and exits :data:`FENCED_EXIT`."""
    return f"{owns_lock_sh(path, deploy_id)}\n{script}"


def parse_kv(text: str) -> dict[str, str]:
    """The ``key=value`` lines of a probe's output (other lines ignored; a later
    key wins). ``path`` is kept byte for byte, every other value trimmed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            # the path byte for byte (a trailing space is part of it); the rest trimmed
            out[key] = value.rstrip("\r") if key == "path" else value.strip()
    return out


def owns_lock_sh(path: str, deploy_id: str) -> str:
    """Shell that stops (exit :data:`FENCED_EXIT`, changing nothing) unless this deploy
    still holds the lock: a deploy whose lock was taken over changes nothing more."""
    lock = f"{q(path)}/{LOCK_DIR}"
    return (
        f"o=; IFS= read -r o < {lock}/owner 2>/dev/null; "
        f'case "$o" in *{_id_mark(deploy_id)}*) ;; *) {_who_sh()}; exit {FENCED_EXIT} ;; esac'
    )


def parse_takeover(stdout: str) -> str:
    """What :func:`takeover_script` printed: ``acquired``, ``lost``, ``changed``,
    ``alive``, ``failed`` or ``""`` (nothing readable)."""
    if "lock=acquired" in stdout:
        return "acquired"
    return parse_kv(stdout).get("takeover", "")


#: why a takeover did not happen, by what :func:`takeover_script` printed
TAKEOVER_REFUSED = {
    "lost": "another deploy is taking it over right now",
    "changed": "it changed hands meanwhile",
    "alive": "its heartbeat is fresh again",
}


def refused_line(stdout: str) -> str:
    """The ``lock taken over by ...`` line a fenced script printed when it refused to
    run (the lock names another deploy now), or ``""``."""
    taken = [line for line in stdout.splitlines() if line.startswith("lock taken over")]
    return taken[-1][:300] if taken else ""


def parse_heartbeat(stdout: str) -> tuple[bool, str]:
    """(still ours, who holds the lock now) from :func:`heartbeat_script`'s output.
    ``who`` is the ``lock taken over by ...`` line when another deploy took it over
    (``""`` while ours, or when the lock is simply gone)."""
    if "hb=lost" not in stdout:
        return True, ""
    lines = [line for line in stdout.splitlines() if line.startswith("lock taken over")]
    if lines and "by nobody" not in lines[0]:
        return False, lines[0][:300]
    return False, ""


@dataclass
class HeldLock:
    """A lock the probe found held by someone else (``lock=held``)."""

    line: str  # the owner record as read (bounded), "" for an empty lock
    owner: dict[str, Any] = field(default_factory=dict)
    age: int = 0  # seconds since its owner's last heartbeat (host clock)
    ttl: float = 60.0  # the owner's TTL (ours when it names none)

    @property
    def stale(self) -> bool:
        """No heartbeat for longer than its TTL: its owner is gone."""
        return self.age > self.ttl

    @property
    def owner_gone(self) -> bool:
        """Its owner ran on this machine, in this boot and this pid namespace, and that
        process has ended (it was killed): no heartbeat will come again. False
        whenever that is not known (another machine or container, an older record)."""
        boot, space, pid = self.owner.get("boot"), self.owner.get("pidns"), self.owner.get("pid")
        if not boot or boot != boot_id() or not space or space != pid_space():
            return False
        if not isinstance(pid, int) or pid <= 0:
            return False
        return pid != os.getpid() and not pid_alive(pid)

    @property
    def deploy_id(self) -> str:
        return str(self.owner.get("deploy_id", ""))

    @property
    def stale_in(self) -> float:
        """Seconds until it would be stale, if not refreshed meanwhile (at least 0.2)."""
        return max(0.2, self.ttl - self.age + 1)

    def describe(self) -> str:
        """``<operator> (pid <pid> on <host>, since <time>)`` for the operator."""
        who = self.owner
        if not who:
            return "an unknown owner (empty lock)"
        return (
            f"{who.get('operator', '?')} (pid {who.get('pid', '?')} on {who.get('host', '?')}, "
            f"since {who.get('since', '?')})"
        )


def held_lock(info: dict[str, str], default_ttl: float) -> HeldLock:
    """The held lock in a probe's parsed output (``owner=``, ``lock_age=``); an owner
    record that is not a JSON object counts as no owner (never taken for stale by
    a guess at it), a TTL it does not name as ``default_ttl``."""
    line = info.get("owner", "").strip()
    try:
        who = json.loads(line) if line else {}
    except ValueError:
        who = {}
    if not isinstance(who, dict):
        who = {}
    try:
        age = int(info.get("lock_age", "0"))
    except ValueError:
        age = 0
    ttl = who.get("ttl")
    ttl = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else default_ttl
    return HeldLock(line=line, owner=who, age=age, ttl=ttl)

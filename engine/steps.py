"""The per-host release steps and the remote shell they run.

Every remote path and argument is shell-quoted. Files appear atomically: an upload
goes to ``<sha256>.tar.gz.part`` and is renamed only after its checksum is verified;
a release is unpacked into ``<id>.tmp`` and renamed when complete; ``current`` is
switched with a new symlink and ``mv -T``. So ``current`` always names a complete
release, whatever moment the deploy dies at.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass

from engine.session import Host, q

LOCK_DIR = ".shipdeck.lock"
#: commands every host needs (POSIX, or BusyBox applets)
REQUIRED_TOOLS = ("tar", "gzip", "mkdir", "mv", "ln", "rm", "cat", "wc", "readlink", "df")
RELEASE_FILE = ".shipdeck-release"


def utc_stamp(at: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at if at is not None else time.time()))


def iso(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at if at is not None else time.time()))


def lock_owner(operator: str, deploy_id: str, ttl: float = 60.0) -> dict[str, object]:
    """The owner record written into a host's lock. ``pid`` and ``host`` are for people
    reading it; liveness is the heartbeat (``ttl``: the owner refreshes it well within)."""
    return {
        "operator": operator,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": iso(),
        "deploy_id": deploy_id,
        "ttl": ttl,
    }


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


def _resolve_path_sh(path: str) -> str:
    """Shell that sets $P to the absolute deploy path (relative and ~/ are under $HOME)."""
    return (
        f"P={q(path)}\n"
        'case "$P" in /*) ;; "~") P="$HOME" ;; "~/"*) P="$HOME/${P#"~/"}" ;; *) P="${HOME:-$(pwd)}/$P" ;; esac\n'
    )


def probe_script(path: str, artifact_sha: str | None, owner: dict[str, object] | None) -> str:
    """Resolve the path, create the layout, report current/artifact/disk and take the lock.

    Prints ``lock=acquired``; or ``lock=held`` with ``owner=`` and ``lock_age=`` (the
    seconds since its owner's last heartbeat, host clock); or ``lock_error=`` with the
    OS's reason when the lock cannot be created at all (permissions, read-only): that
    is no lock. With ``owner=None`` nothing is created or locked (the dry-run)."""
    lines = ["export LC_ALL=C", _resolve_path_sh(path), "printf 'path=%s\\n' \"$P\""]
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
        a = f'"$P/artifacts/"{q(artifact_sha + ".tar.gz")}'
        lines.append(
            f"if [ -f {a} ]; then echo \"artifact_sha=$(sha256sum < {a} | cut -d' ' -f1)\"; fi"
        )
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
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            # the path byte for byte (a trailing space is part of it); the rest trimmed
            out[key] = value.rstrip("\r") if key == "path" else value.strip()
    return out


def receive_script(path: str, artifact_sha: str, size: int) -> str:
    """Write the bytes arriving on stdin to ``<sha256>.tar.gz.part`` and name it only
    when all ``size`` of them arrived. The upload has a session of its own whose stdin
    ends with the file's last byte, so ``cat`` reads to EOF: no tool has to stop at an
    exact count (BusyBox ``head -c`` reads past it). Integrity: SSH's MAC covers every
    byte in transit, the sha256 is checked where the host can, and unpacking checks
    the gzip CRC."""
    a = q(f"artifacts/{artifact_sha}.tar.gz")
    part = q(f"artifacts/{artifact_sha}.tar.gz.part")
    return "\n".join(
        [
            f"cd {q(path)} || exit 1",
            f"cat > {part} || {{ rm -f {part}; exit 1; }}",
            f"n=$(wc -c < {part}); n=$((n))",
            f'[ "$n" -lt {size} ] && {{ echo "upload incomplete: $n of {size} bytes arrived" >&2; rm -f {part}; exit 1; }}',
            f'[ "$n" = {size} ] || {{ echo "upload too long: $n bytes arrived, {size} expected" >&2; rm -f {part}; exit 1; }}',
            f"mv -f {part} {a}",
        ]
    )


def unpack_script(path: str, artifact_sha: str, release_id: str, sha: str) -> str:
    a = f"artifacts/{artifact_sha}.tar.gz"
    r = f"releases/{release_id}"
    return "\n".join(
        [
            "set -e",
            f"cd {q(path)}",
            f"A={q(a)}; R={q(r)}",
            'if [ -f "$A.part" ]; then',
            "  if command -v sha256sum >/dev/null 2>&1; then",
            f'    echo {q(artifact_sha)}"  $A.part" | sha256sum -c --status || {{ rm -f "$A.part"; echo "uploaded artifact is corrupt (sha256 mismatch)" >&2; exit 1; }}',
            "  fi",
            '  mv -f "$A.part" "$A"',
            "fi",
            '[ -e "$R.tmp" ] && rm -rf "$R.tmp"; mkdir "$R.tmp"',
            'tar -xzf "$A" -C "$R.tmp"',
            # the release marker is ours: never written through what the artifact put there
            f'rm -rf "$R.tmp/{RELEASE_FILE}"',
            f"printf 'release=%s\\nsha=%s\\nartifact=%s\\n' {q(release_id)} {q(sha)} {q(artifact_sha)} > \"$R.tmp/{RELEASE_FILE}\"",
            '[ -e "$R" ] && rm -rf "$R"; mv "$R.tmp" "$R"',
            'echo "unpacked into $R"',
        ]
    )


def link_script(path: str, release_id: str, shared: tuple[str, ...]) -> str:
    """Link each shared entry of the release to ``shared/<entry>``. A parent of the
    entry that is a symlink, in the release or under ``shared/``, is refused rather
    than followed (it could lead out of both); an entry the artifact made a symlink
    is dropped, never moved into ``shared/``."""
    lines = ["set -e", f"cd {q(path)}", f"R=releases/{q(release_id)}"]
    for entry in shared:
        name = entry.strip("/")
        e = q(name)
        parts = name.split("/")
        for n in range(1, len(parts)):
            p = q("/".join(parts[:n]))
            for base, where in (('"$R"', "the release"), ("shared", "shared/")):
                lines.append(
                    f"if [ -L {base}/{p} ]; then echo {q(f'shared entry {name}: {parts[n - 1]} in {where} is a symlink; refusing to follow it')} >&2; exit 1; fi"
                )
        nested = len(parts) > 1
        parent = q("/".join(parts[:-1])) if nested else ""
        lines += [
            f'if [ -L "$R"/{e} ]; then rm -f "$R"/{e}; fi',
            f"if [ ! -e shared/{e} ] && [ ! -L shared/{e} ]; then"
            + (f" mkdir -p shared/{parent};" if nested else "")
            + f' if [ -e "$R"/{e} ]; then mv "$R"/{e} shared/{e}; else mkdir shared/{e}; fi; fi',
            f'if [ -e "$R"/{e} ]; then rm -rf "$R"/{e}; fi'
            + (f'; mkdir -p "$R"/{parent}' if nested else ""),
            f'ln -s {q(path)}/shared/{e} "$R"/{e}',
            f"echo {q('linked ' + entry + ' -> shared/' + entry)}",
        ]
    return "\n".join(lines)


def hook_command(cwd: str, command: str, env: dict[str, str]) -> str:
    exports = " ".join(f"{k}={q(v)}" for k, v in env.items())
    return (
        f"cd {q(cwd)} && export {exports} && {command}" if exports else f"cd {q(cwd)} && {command}"
    )


def activate_script(path: str, release_id: str) -> str:
    """Switch ``current`` atomically: a new symlink renamed over it. ``mv -T`` (GNU,
    BusyBox) or ``mv -h`` (BSD) rename the link itself; where neither exists,
    ``ln -sfn`` replaces it (not atomic, the only way left)."""
    tmp = q(f".current.tmp.{release_id}")
    rel = q(f"releases/{release_id}")
    return "\n".join(
        [
            f"cd {q(path)} || exit 1",
            f"test -d {rel} || {{ echo {q(f'releases/{release_id} is missing')} >&2; exit 1; }}",
            f"rm -f {tmp}; ln -s {rel} {tmp} || exit 1",
            f"if [ -d current ] && [ ! -L current ]; then echo 'current is a directory, not a symlink' >&2; rm -f {tmp}; exit 1; fi",
            f"if mv -T {tmp} current 2>/dev/null || mv -h {tmp} current 2>/dev/null; then :",
            f"else ln -sfn {rel} current || {{ rm -f {tmp}; exit 1; }}; fi",
            f"rm -f {tmp}",
            f"echo {q('current -> releases/' + release_id)}",
        ]
    )


def owns_lock_sh(path: str, deploy_id: str) -> str:
    """Shell that stops (exit :data:`FENCED_EXIT`, changing nothing) unless this deploy
    still holds the lock: a deploy whose lock was taken over changes nothing more."""
    lock = f"{q(path)}/{LOCK_DIR}"
    return (
        f"o=; IFS= read -r o < {lock}/owner 2>/dev/null; "
        f'case "$o" in *{_id_mark(deploy_id)}*) ;; *) {_who_sh()}; exit {FENCED_EXIT} ;; esac'
    )


def cleanup_script(path: str, keep: int, protect: list[str], deploy_id: str = "") -> str:
    """Keep the newest ``keep`` releases, ``current`` and ``protect``; remove what
    deploys left behind: unpacks and uploads that never finished (``*.tmp``,
    ``artifacts/*.part``), switch links (``.current.tmp.*``), releases older than
    ``current`` that never became current (no ``outcome=ok`` line in revisions.log;
    ``protect`` holds the previous one), and artifacts no release was unpacked from.
    Fenced by the lock when ``deploy_id`` is given: it holds the lock, so no other
    deploy is writing any of these."""
    keep_names = " ".join(q(p) for p in protect if p)
    guard = [owns_lock_sh(path, deploy_id)] if deploy_id else []
    return "\n".join(
        guard
        + [
            f"cd {q(path)} || exit 0",
            'for f in .current.tmp.*; do [ -L "$f" ] || [ -e "$f" ] || continue; rm -f "$f" && echo "removed $f"; done',
            'for f in artifacts/*.part; do [ -e "$f" ] || continue; rm -f "$f" && echo "removed upload ${f#artifacts/}"; done',
            # releases that became current at some point (deploy or rollback)
            "ok=' '",
            "if [ -f revisions.log ]; then",
            '  while IFS= read -r l; do case "$l" in *\' outcome=ok\'*) r=${l#* release=}; r=${r%% *}; ok="$ok$r " ;; esac; done < revisions.log',
            "fi",
            "cd releases || exit 0",
            # unfinished unpacks: only this deploy (holding the lock) could be writing one
            'for r in *.tmp; do [ -e "$r" ] || continue; rm -rf "$r" && echo "removed unfinished $r"; done',
            "c=$(readlink ../current 2>/dev/null || true); c=${c##*/}",
            # never current and older than current: a failed or interrupted deploy's
            # (only with a revisions.log that names what did become current)
            '[ -n "$c" ] && [ "$ok" != " " ] && for r in *; do [ -d "$r" ] || continue',
            '  [ "$r" = "$c" ] && continue',
            '  case "$ok" in *" $r "*) continue ;; esac',
            f'  for p in {keep_names} \'\'; do [ "$r" = "$p" ] && continue 2; done',
            '  first=$(printf \'%s\\n%s\\n\' "$r" "$c" | sort | head -n 1)',
            '  [ "$first" = "$r" ] || continue',
            '  rm -rf "$r" && echo "removed release $r (never current)"',
            "done",
            # release ids are UTC stamps: the glob lists them oldest first
            'set -- *; n=$#; [ -e "$1" ] || n=0',
            'for r in "$@"; do',
            f"  [ $n -le {keep} ] && break; n=$((n-1))",
            '  case "$r" in *.tmp) continue ;; esac',
            '  [ "$r" = "$c" ] && continue',
            f'  for p in {keep_names} \'\'; do [ "$r" = "$p" ] && continue 2; done',
            '  rm -rf "$r" && echo "removed release $r"',
            "done",
            # artifacts no remaining release was unpacked from (read with the shell)
            "used=' '",
            f'for f in */{RELEASE_FILE}; do [ -f "$f" ] || continue',
            '  while IFS== read -r k v; do [ "$k" = artifact ] && used="$used$v "; done < "$f"',
            "done",
            "cd ../artifacts || exit 0",
            'for a in *.tar.gz; do [ -e "$a" ] || continue; s=${a%.tar.gz}',
            '  case "$used" in *" $s "*) ;; *) rm -f "$a" && echo "removed artifact $s" ;; esac',
            "done",
        ]
    )


def finish_script(
    path: str, line: str, *, unlock: bool, remove_release: str | None, deploy_id: str = ""
) -> str:
    """Append ``line`` (if any) to revisions.log, drop an unactivated release, release
    the lock; fenced by the lock when ``deploy_id`` is given."""
    guard = [owns_lock_sh(path, deploy_id)] if deploy_id else []
    parts = guard + [f"cd {q(path)} || exit 1"]
    if line:
        parts.append(f"printf '%s\\n' {q(line)} >> revisions.log")
    if remove_release:
        r = q(remove_release)
        parts.append(
            f'c=$(readlink current 2>/dev/null || true); [ "${{c##*/}}" = {r} ] || rm -rf releases/{r} releases/{r}.tmp'
        )
    if unlock:
        parts.append(f"rm -rf {LOCK_DIR}")
    return "\n".join(parts)


def releases_script(path: str) -> str:
    return "\n".join(
        [
            _resolve_path_sh(path),
            "printf 'path=%s\\n' \"$P\"",
            'c=$(readlink "$P/current" 2>/dev/null || true); echo "current=${c##*/}"',
            'ls -1 "$P/releases" 2>/dev/null | grep -v "\\.tmp$" | sed "s/^/release=/"',
            'tail -n 500 "$P/revisions.log" 2>/dev/null | sed "s/^/revision=/"',
        ]
    )


def revision_line(
    release_id: str, sha: str, operator: str, outcome: str, deploy_id: str, kind: str = "deploy"
) -> str:
    return f"{iso()} {kind} release={release_id} sha={sha} operator={operator} outcome={outcome} deploy={deploy_id}"


@dataclass
class HostState:
    """What the engine learnt about one host during a run."""

    name: str
    key: str
    host: Host | None = None
    path: str = ""
    current: str = ""  # release current before this run
    artifact_sha: str = ""  # sha256 of the artifact already there, if any
    free_kb: int | None = None
    locked: bool = False
    release_created: bool = False
    activated: bool = False
    status: str = "pending"
    reason: str = ""
    outcome: str = ""  # for revisions.log
    lock_lost: str = ""  # "lock taken over by ..." once the heartbeat found another owner


MARK = "\x1estep "


def phase_script(steps: list[tuple[str, str]], *, stdin_step: str | None = None) -> str:
    """Run step scripts in order in one shell, each in a subshell with its output
    merged; a marker line before and after each carries its name and exit code.
    Stops at the first failing step. Only ``stdin_step`` reads the command's stdin."""
    parts = []
    for name, script in steps:
        redirect = "" if name == stdin_step else " </dev/null"
        parts += [
            f"printf '\\036step %s start\\n' {q(name)}",
            f"(\n{script}\n){redirect} 2>&1; rc=$?",
            f"printf '\\n\\036step %s end %s\\n' {q(name)} \"$rc\"",
            '[ "$rc" -eq 0 ] || exit "$rc"',
        ]
    return "\n".join(parts)


def hooks_script(
    cwd: str,
    commands: tuple[str, ...] | list[str],
    env: dict[str, str],
    *,
    echo: bool = True,
    timeout: float | None = None,
) -> str:
    """Run hooks one after another in ``cwd`` with ``env``; stop at the first failure.

    With ``timeout``, each hook is killed after that many seconds (``timeout``, with
    ``-k`` where it has it -- GNU and BusyBox do; exit 124 says it timed out)."""
    lines = [f"cd {q(cwd)} || exit 1"] + [f"export {k}={q(v)}" for k, v in env.items()]
    if timeout:
        secs = f"{max(timeout, 0.1):g}"
        lines.append(
            f'if timeout -k 1 5 true >/dev/null 2>&1; then T="timeout -k 2 {secs}"; '
            f'elif timeout 5 true >/dev/null 2>&1; then T="timeout {secs}"; else T=""; fi'
        )
    for command in commands:
        if echo:
            lines.append(f"printf '%s\\n' {q('$ ' + command)}")
        run = f"$T /bin/sh -c {q(command)}" if timeout else f"( {command}\n)"
        lines.append(
            f"{run} || {{ rc=$?; [ $rc -eq 124 ] && printf 'timed out after {timeout or 0:g}s\\n'; "
            f"printf '%s exited %s\\n' {q('`' + command + '`')} \"$rc\"; exit $rc; }}"
        )
    return "\n".join(lines)

"""The release steps on a host: upload, unpack, link, activate, cleanup, finish.

Files appear atomically: an upload goes to ``<sha256>.tar.part`` and is renamed
only after its size (and, where the host can, checksum) is verified; a release is
unpacked into ``<id>.tmp`` and renamed when complete; ``current`` is switched with a
new symlink and ``mv -T``. So ``current`` always names a complete release, whatever
moment the deploy dies at. :func:`step_detail` reads what each step printed.
"""

from __future__ import annotations

from engine.remote.lock import LOCK_DIR, owns_lock_sh
from engine.remote.shell import SHA256_SH, q

RELEASE_FILE = ".shipdeck-release"


#: the exit status of an upload whose delta did not rebuild the artifact (no zstd,
#: a base that changed, a sha256 mismatch): the client sends the whole artifact
DELTA_FAILED = 3

#: how the bytes on stdin become the artifact, per upload mode
_WRITE = {
    # the wire copy: decompressed on the fly, so a broken upload leaves a prefix
    "full": 'gzip -dc > "$A.part"',
    "full-zstd": 'zstd -dcq > "$A.part"',
    # the rest of a broken upload: appended to what is there (checked first)
    "resume": 'cat >> "$A.part"',
    # a zstd patch against the host's artifact $B, kept in $D for the site's peers
    "delta": 'tee "$D" | zstd -dcq --long=31 --patch-from="$B" > "$A.part"',
}


def patch_name(artifact_sha: str, base: str) -> str:
    """Where a host keeps the patch it rebuilt ``artifact_sha`` from (``base``'s):
    the hosts of its site that have ``base`` copy that instead of the artifact."""
    return f"artifacts/{artifact_sha}.from-{base}.zst"


def receive_script(
    path: str,
    artifact_sha: str,
    size: int,
    mode: str = "full",
    *,
    offset: int = 0,
    base: str = "",
    codec: str = "gzip",
) -> str:
    """Turn the bytes arriving on stdin into ``artifacts/<sha256>.tar``: through
    ``<sha256>.tar.part``, named only when it has all ``size`` bytes and (where the
    host can hash) its sha256 is ``artifact_sha``. The upload's stdin ends
    with its last byte, so no tool has to stop at an exact count (BusyBox ``head -c``
    reads past it).

    ``mode``: ``full`` (a ``codec`` stream of the artifact: gzip or zstd), ``resume`` (the bytes after
    the first ``offset``, which must be what ``.part`` holds) or ``delta`` (a zstd
    patch against ``artifacts/<base>.tar``). A broken full or resumed upload keeps its
    ``.part`` (a prefix of the artifact) for the next deploy to continue; a delta
    that does not rebuild the artifact exits :data:`DELTA_FAILED`, leaving nothing."""
    a = q(f"artifacts/{artifact_sha}.tar")
    lines = [f"cd {q(path)} || exit 1", f"A={a}", SHA256_SH]
    if mode == "delta":
        fail = f'{{ rm -f "$A.part" "$D"; echo "$1" >&2; exit {DELTA_FAILED}; }}'
        lines += [
            f"no() {fail}",
            f"B={q(f'artifacts/{base}.tar')}; D={q(patch_name(artifact_sha, base))}",
            '[ -f "$B" ] || no "delta: the base artifact is gone"',
            f'{_WRITE["delta"]} || no "delta: zstd could not apply the patch"',
            'sd_can_hash || no "delta: no sha256 tool to check the result"',
        ]
    elif mode == "resume":
        lines += [
            'n=$(wc -c < "$A.part" 2>/dev/null) || n=0; n=$((n))',
            f'[ "$n" = {offset} ] || {{ echo "resume: the broken upload has $n bytes, not {offset}" >&2; rm -f "$A.part"; exit 1; }}',
            f"{_WRITE['resume']} || exit 1",
        ]
    else:
        lines.append(
            f"{_WRITE['full-zstd' if codec == 'zstd' else 'full']} || {{ echo 'upload broken: the rest of it is sent by the next deploy' >&2; exit 1; }}"
        )
    bad = f"exit {DELTA_FAILED}" if mode == "delta" else "exit 1"
    # a short full or resumed upload keeps its prefix (the next deploy resumes it)
    short = f'rm -f "$A.part" "$D"; {bad}' if mode == "delta" else "exit 1"
    also = ' "$D"' if mode == "delta" else ""  # a patch that rebuilt nothing is not kept
    lines += [
        'n=$(wc -c < "$A.part"); n=$((n))',
        f'[ "$n" -lt {size} ] && {{ echo "upload incomplete: $n of {size} bytes arrived" >&2; {short}; }}',
        f'[ "$n" = {size} ] || {{ echo "upload too long: $n bytes arrived, {size} expected" >&2; rm -f "$A.part"{also}; {bad}; }}',
        f'sd_check "$A.part" {q(artifact_sha)} || {{ rm -f "$A.part"{also}; echo "uploaded artifact is corrupt (sha256 mismatch)" >&2; {bad}; }}',
        'mv -f "$A.part" "$A"',
    ]
    return "\n".join(lines)


def unpack_script(path: str, artifact_sha: str, release_id: str, sha: str) -> str:
    a = f"artifacts/{artifact_sha}.tar"
    r = f"releases/{release_id}"
    return "\n".join(
        [
            "set -e",
            f"cd {q(path)}",
            f"A={q(a)}; R={q(r)}",
            '[ -e "$R.tmp" ] && rm -rf "$R.tmp"; mkdir "$R.tmp"',
            'tar -xf "$A" -C "$R.tmp"',
            # the release marker is ours: never written through what the artifact put there
            f'{{ [ -e "$R.tmp/{RELEASE_FILE}" ] || [ -L "$R.tmp/{RELEASE_FILE}" ]; }} && rm -rf "$R.tmp/{RELEASE_FILE}"',
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
            f"{{ [ -L {tmp} ] || [ -e {tmp} ]; }} && rm -f {tmp}; ln -s {rel} {tmp} || exit 1",
            f"if [ -d current ] && [ ! -L current ]; then echo 'current is a directory, not a symlink' >&2; rm -f {tmp}; exit 1; fi",
            f"if mv -T {tmp} current 2>/dev/null || mv -h {tmp} current 2>/dev/null; then :",
            f"else ln -sfn {rel} current || {{ rm -f {tmp}; exit 1; }}; rm -f {tmp}; fi",
            f"echo {q('current -> releases/' + release_id)}",
        ]
    )


def cleanup_script(
    path: str, keep: int, protect: list[str], deploy_id: str = "", artifact: str = ""
) -> str:
    """Keep the newest ``keep`` releases, ``current`` and ``protect``; remove what
    deploys left behind: unpacks and uploads that never finished (``*.tmp``,
    ``artifacts/*.part``), switch links (``.current.tmp.*``), releases older than
    ``current`` that never became current (no ``outcome=ok`` line in revisions.log;
    ``protect`` holds the previous one), and artifacts no release was unpacked from.
    The broken upload of ``artifact`` (the one being deployed) is kept: the next
    deploy resumes it.
    Fenced by the lock when ``deploy_id`` is given: it holds the lock, so no other
    deploy is writing any of these."""
    keep_names = " ".join(q(p) for p in protect if p)
    guard = [owns_lock_sh(path, deploy_id)] if deploy_id else []
    return "\n".join(
        guard
        + [
            f"cd {q(path)} || exit 0",
            'for f in .current.tmp.*; do [ -L "$f" ] || [ -e "$f" ] || continue; rm -f "$f" && echo "removed $f"; done',
            # a peer copy's key folder (engine.remote.peer) left by a killed copy
            'for f in .shipdeck-peer.*; do [ -e "$f" ] || continue; rm -rf "$f" && echo "removed $f"; done',
            # patches kept for the site's peers: only those that rebuild this artifact
            'for f in artifacts/*.zst; do [ -e "$f" ] || continue; '
            f'case "$f" in {q(f"artifacts/{artifact}.from-")}*) [ -n {q(artifact)} ] && continue ;; esac; '
            'rm -f "$f"; done',
            'for f in artifacts/*.part; do [ -e "$f" ] || continue; '
            f'[ "$f" = {q(f"artifacts/{artifact}.tar.part")} ] && continue; '
            'rm -f "$f" && echo "removed upload ${f#artifacts/}"; done',
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
            'for a in *.tar *.tar.gz; do [ -e "$a" ] || continue; s=${a%.gz}; s=${s%.tar}',
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


def step_detail(name: str, out: list[str]) -> str:
    """The detail shown for step ``name`` that succeeded, from its last output lines."""
    if name in ("unpack", "activate"):
        return out[-1] if out else ""
    if name == "health":
        return "healthy after 1 attempt"
    if name == "link":
        return f"{sum(1 for line in out if line.startswith('linked '))} shared linked"
    if name in ("before", "restart"):
        hooks = sum(1 for line in out if line.startswith("$ "))
        return f"{hooks} hook{'s' if hooks != 1 else ''}"
    if name == "cleanup":
        removed = [line for line in out if line.startswith("removed release")]
        return f"removed {len(removed)} old release(s)" if removed else "nothing to remove"
    return ""

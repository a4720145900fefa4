"""A copy of the artifact between two hosts of a site, over the site's own network.

The serving host lets one key read its artifact and nothing else
(:func:`grant_script`: ``restrict,command="cat <artifact>",expiry-time=...`` in its
``~/.ssh/authorized_keys``); the receiving host runs ``ssh`` with that key, pinned to
the serving host's host key, into its ``.part`` (:func:`copy_script`); then the line
is removed again (:func:`revoke_script`). The key pair is made for this one copy, its
private half lives on the receiver only in a 0700 folder under the deploy path for
the copy's duration (written by the shell's builtin ``printf``: never in a process
list), and cleanup removes such a folder a killed copy left behind.
"""

from __future__ import annotations

from engine.remote.release import patch_name
from engine.remote.shell import SHA256_SH, q

#: the folder of one copy's key and known_hosts on the receiver (``<prefix><tag>``)
PEER_DIR = ".shipdeck-peer."


def _safe(text: str) -> bool:
    return not any(c in text for c in "\"\\\n\r'")


def grant_line(
    path: str, artifact_sha: str, public_key: str, tag: str, expiry: str, patch_base: str = ""
) -> str:
    """The authorized_keys line: this key may only ``cat`` the artifact (or, with
    ``patch_base``, the patch the host rebuilt it from), with no pty, forwarding or
    agent, until ``expiry`` (``YYYYMMDDHHMMZ``). Raises ValueError for a deploy path
    that cannot be written inside ``command="..."``."""
    name = patch_name(artifact_sha, patch_base) if patch_base else f"artifacts/{artifact_sha}.tar"
    artifact = f"{path}/{name}"
    key = " ".join(public_key.split()[:2])
    if not (_safe(artifact) and _safe(key) and tag.isalnum()):
        raise ValueError(f"the deploy path {path!r} cannot be named in an authorized_keys line")
    return f'restrict,expiry-time="{expiry}",command="cat \'{artifact}\'" {key} shipdeck-peer-{tag}'


def grant_script(line: str) -> str:
    """Append ``line`` to ``~/.ssh/authorized_keys``; prints ``created=`` (``dir``,
    ``file`` or nothing) so the revoke removes what the grant made."""
    return "\n".join(
        [
            "umask 077; c=",
            'if [ ! -d "$HOME/.ssh" ]; then mkdir "$HOME/.ssh" || exit 1; c=dir; fi',
            'f="$HOME/.ssh/authorized_keys"',
            '[ -e "$f" ] || { [ -n "$c" ] || c=file; }',
            # a last line without its newline would join ours
            '[ -s "$f" ] && [ "$(tail -c 1 "$f" | wc -l)" -eq 0 ] && echo >> "$f"',
            f"printf '%s\\n' {q(line)} >> \"$f\" || exit 1",
            'echo "created=$c"',
        ]
    )


def revoke_script(tag: str, created: str) -> str:
    """Remove the line of ``tag`` (and the file or folder the grant created, if it is
    empty now)."""
    mark = q(f"shipdeck-peer-{tag}")
    lines = [
        'f="$HOME/.ssh/authorized_keys"',
        'if [ -f "$f" ]; then',
        f'  grep -v -F -e {mark} "$f" > "$f.shipdeck-revoke" || :',
        # rewritten in place: the file keeps its inode, owner and mode
        '  cat "$f.shipdeck-revoke" > "$f"; rm -f "$f.shipdeck-revoke"',
        "fi",
    ]
    if created in ("dir", "file"):
        lines.append('[ -s "$f" ] || rm -f "$f"')
    if created == "dir":
        lines.append('rmdir "$HOME/.ssh" 2>/dev/null || :')
    lines.append(f'if [ -f "$f" ] && grep -q -F -e {mark} "$f"; then exit 1; fi')
    return "\n".join(lines)


def copy_script(
    path: str,
    artifact_sha: str,
    size: int,
    *,
    tag: str,
    private_key: str,
    known_host: str,
    addr: str,
    port: int,
    user: str,
    timeout: int = 10,
    patch_base: str = "",
    patch_size: int = 0,
    patch_sha: str = "",
) -> str:
    """On the receiver: fetch the artifact from the serving host with the one-time
    key into ``<sha256>.tar.part``, then check it as any upload is checked (size,
    sha256) and name it. With ``patch_base``: fetch the patch the serving host keeps
    instead (checked against ``patch_size`` and ``patch_sha``), kept here under the
    same name so that this host can serve it on at once; :func:`rebuild_script` then
    applies it. The key's folder is removed whatever happens."""
    d = q(f"{PEER_DIR}{tag}")
    ssh = (
        f'ssh -F /dev/null -i "$d/key" -o IdentitiesOnly=yes -o IdentityAgent=none'
        f' -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$d/known"'
        f" -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout={timeout}"
        f" -o ServerAliveInterval={timeout} -o ServerAliveCountMax=3 -o LogLevel=ERROR"
        # AES-GCM first: with AES-NI it moves bytes several times faster than chacha20
        " -o Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"
        f" -p {int(port)} -l {q(user)} {q(addr)}"
    )
    head = [
        f"cd {q(path)} || exit 1",
        "command -v ssh >/dev/null 2>&1 || { echo 'no ssh client on this host' >&2; exit 1; }",
        f"d={d}",
        "trap 'rm -rf \"$d\"' EXIT; trap 'exit 1' HUP INT TERM",
        'rm -rf "$d"; (umask 077; mkdir "$d") || exit 1',
        f"(umask 077; printf '%s\\n' {q(private_key.strip())} > \"$d/key\") || exit 1",
        f"printf '%s\\n' {q(known_host)} > \"$d/known\" || exit 1",
    ]
    if patch_base:
        what, want, sha = "the patch", int(patch_size), patch_sha
        head.append(f"F={q(patch_name(artifact_sha, patch_base))}")
    else:
        what, want, sha = "the artifact", int(size), artifact_sha
        head.append(f"F={q(f'artifacts/{artifact_sha}.tar')}")
    return "\n".join(
        [
            *head,
            f'{ssh} > "$F.part" < /dev/null || {{ rc=$?; rm -f "$F.part"; echo "copy of {what} from the peer failed (ssh exit $rc)" >&2; exit 1; }}',
            'rm -rf "$d"',
            f'n=$(wc -c < "$F.part"); n=$((n)); [ "$n" = {want} ] || {{ echo "copy from the peer: $n of {want} bytes" >&2; rm -f "$F.part"; exit 1; }}',
            SHA256_SH,
            f'sd_check "$F.part" {q(sha)} || {{ rm -f "$F.part"; echo "copy of {what} from the peer is corrupt (sha256 mismatch)" >&2; exit 1; }}',
            'mv -f "$F.part" "$F"',
        ]
    )


def rebuild_script(path: str, artifact_sha: str, size: int, patch_base: str) -> str:
    """On a host that copied the patch from ``patch_base`` from a peer: rebuild the
    artifact from it and this host's ``<patch_base>.tar``, checked as any upload is
    (size, sha256). A patch that rebuilds nothing is not kept (nor served on)."""
    return "\n".join(
        [
            f"cd {q(path)} || exit 1",
            f"A={q(f'artifacts/{artifact_sha}.tar')}; B={q(f'artifacts/{patch_base}.tar')}",
            f"D={q(patch_name(artifact_sha, patch_base))}",
            'no() { rm -f "$A.part" "$D"; echo "$1" >&2; exit 1; }',
            "command -v zstd >/dev/null 2>&1 || no 'no zstd on this host'",
            '[ -f "$B" ] || no "the base artifact is gone"',
            'zstd -dcq --long=31 --patch-from="$B" < "$D" > "$A.part" || no "the patch from the peer did not apply"',
            f'n=$(wc -c < "$A.part"); n=$((n)); [ "$n" = {size} ] || no "the patch from the peer rebuilt $n of {size} bytes"',
            SHA256_SH,
            f'sd_check "$A.part" {q(artifact_sha)} || no "the artifact rebuilt from the peer\'s patch is corrupt (sha256 mismatch)"',
            'mv -f "$A.part" "$A"',
        ]
    )

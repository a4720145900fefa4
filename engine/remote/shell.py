"""Small shell building blocks shared by the remote scripts."""

from __future__ import annotations

import time

from engine.session import q

__all__ = ["q", "utc_stamp", "iso", "resolve_path_sh", "SHA256_SH"]


def utc_stamp(at: float | None = None) -> str:
    """``YYYYmmddTHHMMSSZ`` (UTC) of ``at`` (default: now): release ids start with it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at if at is not None else time.time()))


def iso(at: float | None = None) -> str:
    """ISO 8601 UTC of ``at`` (default: now), to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at if at is not None else time.time()))


def resolve_path_sh(path: str) -> str:
    """Shell that sets $P to the absolute deploy path (relative and ~/ are under $HOME)."""
    return (
        f"P={q(path)}\n"
        'case "$P" in /*) ;; "~") P="$HOME" ;; "~/"*) P="$HOME/${P#"~/"}" ;; *) P="${HOME:-$(pwd)}/$P" ;; esac\n'
    )


#: Shell defining ``sd_sha256 FILE`` (sets ``$SD_SUM`` to the file's hex sha256, in
#: this shell: no subshell around it; fails when the host has no tool for it) and
#: ``sd_can_hash`` (true when it has one that works); ``sd_check FILE SHA`` fails
#: only when the host can hash and FILE's sha256 is not SHA. OpenSSL's digest uses
#: the CPU's SHA extensions where coreutils' ``sha256sum`` does not: on a 100 MiB
#: artifact it takes 0.1 s where ``sha256sum`` takes 0.6 s, and every host hashes each
#: artifact it receives. An ``openssl`` that fails or answers in another shape (no
#: ``-r``) gives way to ``sha256sum``, then ``shasum``.
SHA256_SH = "\n".join(
    [
        # coreutils' or perl's tool by name (no program started); OpenSSL alone only if it
        # hashes an empty input right (one that is broken would fail every check)
        "sd_can_hash() { command -v sha256sum || command -v shasum || "
        "case $(openssl dgst -sha256 -r </dev/null 2>/dev/null) in "
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855*) true ;; *) false ;; esac; "
        "} >/dev/null 2>&1",
        "sd_sha256() {",
        '  SD_SUM=$(openssl dgst -sha256 -r < "$1" 2>/dev/null) && SD_SUM=${SD_SUM%% *} && [ ${#SD_SUM} = 64 ] && return 0',
        '  SD_SUM=$(sha256sum < "$1" 2>/dev/null) || SD_SUM=$(shasum -a 256 < "$1" 2>/dev/null) || { SD_SUM=; return 1; }',
        "  SD_SUM=${SD_SUM%% *}",
        "}",
        # FILE has sha256 SHA, or the host cannot tell (no tool: unchecked, as before)
        'sd_check() { sd_can_hash || return 0; sd_sha256 "$1" && [ "$SD_SUM" = "$2" ]; }',
    ]
)

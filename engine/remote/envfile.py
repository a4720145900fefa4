"""The app's env file on a host (``[secrets]``): written from the command's standard
input, mode 0600, only when its sha256 differs from what the host has.

The content never appears in the script (a command line shows in the host's process
list): it arrives on stdin, which ``cat`` reads to its end. :func:`env_file_script`
and the parser of its one marker line, :func:`env_file_result`, belong together.
"""

from __future__ import annotations

from engine.remote.shell import q

MARKER = "SD_ENVFILE"


def env_file_script(path: str, rel: str, sha256: str) -> str:
    """Under the deploy ``path``, make ``rel`` (``shared/.env``) hold stdin, mode
    0600 (umask 077 from its first byte; a temp file renamed over it), unless the file
    there already has ``sha256``: then stdin is read and dropped and the file is left
    as it is (its mode set to 0600). Prints ``SD_ENVFILE written|unchanged``."""
    f = q(rel)
    return "\n".join(
        [
            "set -e",
            f"cd {q(path)}",
            "umask 077",
            f'case {f} in */*) mkdir -p -- "$(dirname -- {f})";; esac',
            'have=""',
            f"if [ -f {f} ] && [ ! -L {f} ]; then",
            f"  have=$( (sha256sum {f} 2>/dev/null || shasum -a 256 {f} 2>/dev/null) | cut -d' ' -f1)",
            "fi",
            f'if [ "$have" = {q(sha256)} ]; then',
            f"  cat >/dev/null; chmod 600 {f}; echo {MARKER} unchanged; exit 0",
            "fi",
            f"tmp={f}.shipdeck-$$",
            "trap 'rm -f \"$tmp\"' EXIT",
            'cat > "$tmp"',
            'chmod 600 "$tmp"',
            f'mv -f "$tmp" {f}',
            f"echo {MARKER} written",
        ]
    )


def env_file_result(output: str) -> str | None:
    """``written`` or ``unchanged`` from the script's output (None: no marker)."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == MARKER and parts[1] in ("written", "unchanged"):
            return parts[1]
    return None

"""A file's tail on a host (``shipdeck logs``): the script, and where the file is.

The path is relative to the deploy path (``shared/log/app.log``), ``~/...`` under
the login home, or absolute. ``tail -F`` follows the file by name, so a log that is
rotated or recreated (an app restart) goes on being read.
"""

from __future__ import annotations

from engine.remote.shell import q, resolve_path_sh

#: exit status when the file is not there (nothing to tail)
NO_FILE_EXIT = 66


def file_sh(remote: str) -> str:
    """Shell setting ``$F``: absolute as given, ``~/...`` under the login home, anything
    else under the deploy path ``$P``. Raises ValueError for what is not a file path."""
    if not remote or "\0" in remote or remote.rstrip("/") in ("", ".", "..", "~"):
        raise ValueError(f"logs: {remote!r} is not a file path")
    if remote.startswith("/"):
        return f"F={q(remote)}"
    if remote.startswith("~/"):
        return f'F="$HOME"/{q(remote[2:])}'
    return f'F="$P"/{q(remote)}'


#: the first line a follow prints: how many lines the file had (``\x1elines=<n>``)
COUNT_MARK = "\x1elines="


def tail_script(
    path: str, remote: str, *, lines: int, follow: bool, after: int | None = None
) -> str:
    """The last ``lines`` lines of the file; with ``follow``, then every line added
    until the command is ended (by name: across rotation and recreation). A follow
    first prints :data:`COUNT_MARK` and the file's line count, so that a reconnection
    can go on after the last line seen (``after``: that many lines are skipped). A
    file not there exits :data:`NO_FILE_EXIT` with the reason on stderr, unless
    following (it may yet appear)."""
    n = max(0, int(lines))
    if not follow:
        check = f'[ -r "$F" ] || {{ echo "cannot read $F" >&2; exit {NO_FILE_EXIT}; }}'
        return "\n".join([resolve_path_sh(path), file_sh(remote), check, f'exec tail -n {n} "$F"'])
    count = 'c=$(wc -l < "$F" 2>/dev/null) || c=0; printf \'\\036lines=%s\\n\' "${c:-0}"'
    start = f"+{max(0, int(after)) + 1}" if after is not None else str(n)
    return "\n".join(
        [resolve_path_sh(path), file_sh(remote), count, f'exec tail -n {start} -F "$F"']
    )


def parse_count(text: str) -> int | None:
    """The line count in a :data:`COUNT_MARK` line, or None for any other line."""
    if not text.startswith(COUNT_MARK):
        return None
    value = text[len(COUNT_MARK) :].strip()
    return int(value) if value.isdigit() else 0

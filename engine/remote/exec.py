"""An ad-hoc command on a host (``shipdeck exec``): the script that runs it in the
live release (or another directory) and records it in ``revisions.log``.

The command runs with ``/bin/sh`` in ``<path>/current`` (or :func:`cwd_sh`'s
directory), stdin from /dev/null; then one ``exec`` line is appended to
``<path>/revisions.log`` (:func:`~engine.remote.revisions.revision_line`, with the
host's current release and ``outcome=ok`` or ``outcome=exit-<status>``), and the
script exits with the command's status. A directory that does not exist fails with
:data:`NO_DIR_EXIT` before anything runs (and nothing is recorded).
"""

from __future__ import annotations

from engine.remote.revisions import revision_line
from engine.remote.shell import q, resolve_path_sh

#: exit status when the directory to run in does not exist (nothing ran)
NO_DIR_EXIT = 125

_RELEASE, _OUTCOME = "\x00release\x00", "\x00outcome\x00"


def cwd_sh(cwd: str | None) -> str:
    """Shell setting ``$D``: ``$P/current`` by default; ``cwd`` absolute as given,
    ``~/...`` under the login home, anything else under the deploy path."""
    if not cwd:
        return 'D="$P/current"'
    if cwd.startswith("/"):
        return f"D={q(cwd)}"
    if cwd == "~" or cwd.startswith("~/"):
        return f'D="$HOME"/{q(cwd[2:] or ".")}'
    return f'D="$P"/{q(cwd)}'


def record_sh(operator: str, exec_id: str) -> str:
    """Shell appending this run's ``exec`` line to ``revisions.log`` (``$c``: the
    current release, ``$o``: the outcome)."""
    line = revision_line(_RELEASE, "", operator, _OUTCOME, exec_id, kind="exec")
    head, rest = line.split(_RELEASE)
    middle, tail = rest.split(_OUTCOME)
    return (
        f'printf \'%s%s%s%s%s\\n\' {q(head)} "${{c:--}}" {q(middle)} "$o" {q(tail)}'
        ' >> "$P/revisions.log" 2>/dev/null || true'
    )


def exec_script(path: str, command: str, *, cwd: str | None, operator: str, exec_id: str) -> str:
    """The whole script for one host (see the module docstring)."""
    return "\n".join(
        [
            resolve_path_sh(path),
            cwd_sh(cwd),
            f'cd "$D" 2>/dev/null || {{ echo "no directory $D on this host" >&2; exit {NO_DIR_EXIT}; }}',
            f"( eval {q(command)} ) </dev/null",
            "rc=$?",
            'c=$(readlink "$P/current" 2>/dev/null || true); c=${c##*/}',
            'o=ok; [ "$rc" = 0 ] || o="exit-$rc"',
            record_sh(operator, exec_id),
            'exit "$rc"',
        ]
    )


def outcome(exit_status: int) -> str:
    """The ``outcome=`` word a run with this status records."""
    return "ok" if exit_status == 0 else f"exit-{exit_status}"

"""The one way a hook or a health check runs on a host.

:func:`hooks_script` gives every command its working directory, its environment and
a timeout enforced on the host (``timeout``, with ``-k`` where the host has it: GNU
and BusyBox do); an abort kills it through the session (:meth:`Host.interrupt`).
Deploy phases, rollback hooks and health retries all run their commands through it;
:func:`failure_line` reads what a failed one said.
"""

from __future__ import annotations

import re

from engine.remote.shell import q

#: exit status of ``timeout`` when it killed the command
TIMED_OUT = 124
#: how much longer than a hook's own timeout the client waits for its script: the
#: host's ``timeout`` kills it first; the client's is for a host without one
CLIENT_GRACE = 5.0

_EXITED = re.compile(r"^`.*` exited -?\d+$")


def hooks_script(
    cwd: str,
    commands: tuple[str, ...] | list[str],
    env: dict[str, str],
    *,
    echo: bool = True,
    timeout: float | None = None,
) -> str:
    """Run hooks one after another in ``cwd`` with ``env``; stop at the first failure.

    ``echo`` prints ``$ <command>`` before each. With ``timeout``, each hook is killed
    after that many seconds (``timeout``, with ``-k`` where it has it; exit 124 and a
    ``timed out after`` line say it timed out). A failed hook ends the script with its
    exit status after a ``\\`<command>\\` exited <status>`` line."""
    lines = [f"cd {q(cwd)} || exit 1"] + [f"export {k}={q(v)}" for k, v in env.items()]
    if timeout:
        secs = f"{max(timeout, 0.1):g}"
        # the session found GNU's timeout on its PATH (SD_TK): the hooks use it unless
        # their environment brings a PATH of its own
        known = '[ "${SD_TK-}" = 1 ] || ' if "PATH" not in env else ""
        lines.append(
            f'if {known}timeout -k 1 5 true >/dev/null 2>&1; then T="timeout -k 2 {secs}"; '
            f'elif timeout 5 true >/dev/null 2>&1; then T="timeout {secs}"; else T=""; fi'
        )
    for command in commands:
        if echo:
            lines.append(f"printf '%s\\n' {q('$ ' + command)}")
        run = f"$T /bin/sh -c {q(command)}" if timeout else f"( {command}\n)"
        lines.append(
            f"{run} || {{ rc=$?; [ $rc -eq {TIMED_OUT} ] && printf 'timed out after {timeout or 0:g}s\\n'; "
            f"printf '%s exited %s\\n' {q('`' + command + '`')} \"$rc\"; exit $rc; }}"
        )
    return "\n".join(lines)


def client_timeout(timeout: float) -> float:
    """How long the client waits for a :func:`hooks_script` run with ``timeout``."""
    return timeout + CLIENT_GRACE


def failure_line(stdout: str, stderr: str, exit_status: int | None) -> str:
    """What a failed :func:`hooks_script` run said last (at most 200 characters):
    ``timed out after <n>s`` when its timeout killed it, else the last line of its
    stderr, else of its stdout (the script's own ``exited`` report left out)."""
    out = [line for line in stdout.strip().splitlines() if not _EXITED.match(line)]
    if exit_status == TIMED_OUT:
        timed = [line for line in out if line.startswith("timed out after ")]
        if timed:
            return timed[-1]
    lines = stderr.strip().splitlines() or out
    return lines[-1][:200] if lines else ""

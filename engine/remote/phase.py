"""Several steps as one remote script, and the parser of its step markers.

:func:`phase_script` runs step scripts in one shell (sshd starts one shell per
phase, not one per step); a marker line before and after each step carries its name
and exit code, so the tree keeps per-step status. :class:`PhaseReader` follows that
output line by line: which step runs, each step's last lines, each step's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.remote.lock import FENCED_EXIT
from engine.remote.shell import q

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


#: output lines kept per step (the last ones: a failure's reason is among them)
TAIL = 5


@dataclass(frozen=True)
class Marker:
    """One marker line: step ``name`` starts, or ends with exit status ``rc``."""

    name: str
    what: str  # "start" | "end" | anything else a broken line carried
    rc: int = 0


def parse_marker(text: str) -> Marker | None:
    """The marker on a line of :func:`phase_script` output, or None for any other
    line. An end marker without a readable exit status counts as exit 255."""
    if not text.startswith(MARK):
        return None
    parts = text[len(MARK) :].split(" ", 2)
    name, what = parts[0], parts[1] if len(parts) > 1 else ""
    rc = 0
    if what == "end":
        code = parts[2].strip() if len(parts) > 2 else ""
        rc = int(code) if code.lstrip("-").isdigit() else 255
    return Marker(name, what, rc)


@dataclass
class PhaseReader:
    """Follows one phase's output: the step running now (``""`` between steps) and
    the last :data:`TAIL` lines of each step that started."""

    step: str = ""
    tails: dict[str, list[str]] = field(default_factory=dict)

    def feed(self, text: str) -> Marker | None:
        """Take one output line; return its marker, or None for a step's own output."""
        marker = parse_marker(text)
        if marker is None:
            tail = self.tails.get(self.step) if self.step else None
            if tail is not None:
                tail.append(text)
                del tail[:-TAIL]
        elif marker.what == "start":
            self.step = marker.name
            self.tails[marker.name] = []
        elif marker.what == "end":
            self.step = ""
        return marker

    def tail(self, name: str) -> list[str]:
        """The last output lines of step ``name`` (empty if it never started)."""
        return self.tails.get(name, [])


def step_failure(name: str, rc: int, out: list[str], path: str) -> str:
    """Why step ``name`` failed with ``rc``, from its last output lines ``out``: a
    fenced step refused (the lock names another deploy), a full disk under ``path``,
    or its last line."""
    if rc == FENCED_EXIT and out and out[-1].startswith("lock taken over"):
        return f"{name} refused: {out[-1][:200]}"
    if any("no space left on device" in line.lower() for line in out):
        return f"{name} failed: no space left on device on {path}"
    return f"{name} failed (exit {rc})" + (f": {out[-1][:200]}" if out else "")

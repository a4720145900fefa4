"""The shell protocol: every command of a deploy runs in one long-lived ``/bin/sh``
on the host, framed on its stdin. ``BOOT`` starts it whatever the login shell is,
:func:`loader` is the first line it reads, :class:`Session` is the client side of
one such shell (ready and done markers, output lines, exit status).

The connected host that drives these sessions is :class:`engine.host.Host` (also
importable from here, as before)."""

from __future__ import annotations

import asyncio
import io
import shlex
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from engine.errors import SSHError

LineHandler = Callable[[str, str], None]  # (stream, text)


class CommandTimeout(SSHError):
    pass


@dataclass
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def q(value: str) -> str:
    """Shell-quote one argument."""
    return shlex.quote(value)


#: a remote output line longer than this is cut (with a marker): a hook printing
#: 400 MB without a newline must not make the deploying process hold it
LINE_MAX = 64 * 1024
#: bytes of output kept per stream of one command for its result (the oldest go)
KEEP_BYTES = 1 << 20
#: an upload that moves no byte for this long has stalled
UPLOAD_STALL = 30.0

# What the login shell runs, whatever it is (sh, bash, zsh, fish, tcsh, csh): one
# line with no newline, no backslash and no quote inside its quotes, so every shell
# passes it to /bin/sh unchanged. /bin/sh then reads ONE line from stdin (the loader,
# below) and evaluates it. `read` reads a pipe byte by byte, so it never takes more
# than its line: nothing on stdin is swallowed, whichever tools the host has.
BOOT = """exec /bin/sh -c 'IFS= read -r s && eval "$s"'"""

# The loader (one line): reads N lines into $s with the shell's own `read`, prints a
# ready marker with its pid on both streams (what login dotfiles printed before it is
# dropped by the client), then either loops over framed scripts (the session) or
# evaluates one script whose stdin is the rest of the channel (an upload: the bytes
# end at EOF, so no tool has to stop reading at an exact count).
_LOAD = (
    "t={token}; nl=$(printf '\\nx'); nl=${{nl%x}}; "
    'rd() {{ s=; n=$1; while [ "$n" -gt 0 ]; do IFS= read -r l || return 1; s=$s$l$nl; n=$((n-1)); done; }}; '
    "{probe}"
    'printf \'\\036ready %s %s %s\\n\' "$t" "$$" "$g"; printf \'\\036ready %s %s\\n\' "$t" "$$" >&2; '
)
# The session also says whether the host's ``head -c N`` stops at exactly N bytes of a
# pipe (GNU coreutils reads no further; BusyBox's buffered read takes more): then an
# upload can travel inline on the session's stdin (see ``_LOOP``). It learns in the
# same subshell whether ``timeout`` is GNU's (which has ``-k``): the hook scripts it
# runs then need not try it (``SD_TK``, see :func:`engine.remote.hooks.hooks_script`).
# Both get /dev/null as stdin: whatever they are, they cannot read the session's.
_PROBE = (
    "g=0; SD_TK=; v=$( { head --version; timeout --version; } </dev/null 2>/dev/null); "
    'case $v in *"head (GNU coreutils)"*) g=1 ;; esac; '
    'case $v in *"timeout (GNU coreutils)"*) SD_TK=1 ;; esac; '
)
# the session: "SD2 <token> <lines>" then that many lines of script, run with stdin
# from /dev/null; a done marker with the exit status follows on stdout and stderr, so
# both streams are complete when the client has seen both. A header without the
# token ends the shell: nothing on stdin runs unless it came as a framed script.
# "SD2 <token> <lines> <bytes>" (only where ``head -c`` is exact) is followed by that
# many bytes after the script, which the script reads as its stdin, ending at their
# last; what it leaves unread is drained (``read`` first: no process when nothing is
# left), so the next header is where it belongs.
_LOOP = (
    "while IFS= read -r h; do set -f; set -- $h; set +f; "
    '{{ [ "$#" = 3 ] || [ "$#" = 4 ]; }} && [ "$1" = SD2 ] && [ "$2" = "$t" ] || exit 2; '
    'case "$3" in ""|*[!0-9]*) exit 2 ;; esac; case "${{4-0}}" in ""|*[!0-9]*) exit 2 ;; esac; '
    'rd "$3" || exit 2; '
    'if [ "$#" = 4 ]; then [ "$g" = 1 ] || exit 2; '
    'head -c "$4" | {{ (eval "$s"); r=$?; IFS= read -r l && cat >/dev/null; exit "$r"; }}; rc=$?; '
    'else (eval "$s") </dev/null; rc=$?; fi; '
    'printf \'\\n\\036done %s %s\\n\' "$t" "$rc"; printf \'\\n\\036done %s %s\\n\' "$t" "$rc" >&2; done'
)
_ONCE = 'rd {lines} || exit 2; eval "$s"'


def script_lines(script: str) -> tuple[int, bytes]:
    body = script if script.endswith("\n") else script + "\n"
    return body.count("\n"), body.encode()


def loader(token: str, script: str | None = None) -> bytes:
    """The first line a session reads: the loop, or one script (followed by its lines)."""
    if script is None:
        return (_LOAD.format(token=token, probe=_PROBE) + _LOOP.format() + "\n").encode()
    n, body = script_lines(script)
    head = _LOAD.format(token=token, probe="g=; ")
    return (head + _ONCE.format(lines=n) + "\n").encode() + body


def parse_ready(text: str, token: str) -> tuple[int, bool] | None:
    """The loader's ready marker for session ``token`` (see ``_LOAD``): the shell's pid
    (0 when unreadable) and whether its host's ``head -c`` is exact (stdout's marker
    says; stderr's has no such field). None: ``text`` is not that marker."""
    mark = f"\x1eready {token} "
    if not text.startswith(mark):
        return None
    pid, _, exact = text[len(mark) :].strip().partition(" ")
    return (int(pid) if pid.isdigit() else 0), exact.strip() == "1"


def parse_done(text: str, token: str) -> int | None:
    """The exit status in the loop's done marker for session ``token`` (see ``_LOOP``;
    255 when unreadable). None: ``text`` is not that marker."""
    mark = f"\x1edone {token} "
    if not text.startswith(mark):
        return None
    rc = text[len(mark) :].strip()
    return int(rc) if rc.isdigit() else 255


class Session:
    """The client side of one remote /bin/sh started by ``BOOT`` (see ``_LOAD``).

    Output is read in chunks and split into lines here: a line longer than
    ``LINE_MAX`` is cut with a marker, and each command keeps at most ``KEEP_BYTES``
    per stream, so no amount of remote output grows this process without bound."""

    def __init__(self, proc: Any, token: str, release: Callable[[], None]) -> None:
        self.proc = proc
        self.token = token
        self.pid = 0
        self.dead = False
        self.head_exact = False  # uploads may travel inline (see ``_PROBE``)
        self._release = release
        self._pre: list[str] = []  # what the login shell printed before us (last lines)
        self._ready = {"stdout": False, "stderr": False}
        self._out: _Tail = _Tail()
        self._err: _Tail = _Tail()
        self._on_line: LineHandler | None = None
        self._marks: dict[str, asyncio.Future[int]] = {}
        self._eof: dict[str, asyncio.Future[None]] = {}
        loop = asyncio.get_running_loop()
        self._eof = {"stdout": loop.create_future(), "stderr": loop.create_future()}
        #: True once the shell said it is ready on stdout; False if it ended before
        self.ready: asyncio.Future[bool] = loop.create_future()
        self._readers = [
            asyncio.ensure_future(self._read(proc.stdout, "stdout")),
            asyncio.ensure_future(self._read(proc.stderr, "stderr")),
        ]

    def begin(self, on_line: LineHandler | None) -> None:
        loop = asyncio.get_running_loop()
        self._out, self._err, self._on_line = _Tail(), _Tail(), on_line
        self._marks = {"stdout": loop.create_future(), "stderr": loop.create_future()}
        for fut in self._marks.values():  # a one-script session never awaits them
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _line(self, name: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if not text:
            return
        if not self._ready[name]:
            self._before_ready(name, text)
            return
        rc = parse_done(text, self.token)
        if rc is not None:
            fut = self._marks.get(name)
            if fut is not None and not fut.done():
                fut.set_result(rc)
            return
        (self._out if name == "stdout" else self._err).add(text)
        if self._on_line is not None:
            self._on_line(name, text)

    def _before_ready(self, name: str, text: str) -> None:
        """A line before the shell said it is ready: its ready marker, or what the
        login shell printed (the last lines are kept, to say why it never started)."""
        ready = parse_ready(text, self.token)
        if ready is None:
            self._pre.append(text[:300])
            del self._pre[:-5]
            return
        self._ready[name] = True
        self.pid = ready[0] or self.pid
        if name == "stdout":
            self.head_exact = ready[1]
            if not self.ready.done():
                self.ready.set_result(True)

    async def _read(self, stream: Any, name: str) -> None:
        rest = b""
        cut = False  # dropping the remainder of a line that was too long
        try:
            while chunk := await stream.read(65536):
                parts = (rest + chunk).split(b"\n")
                rest = parts.pop()
                for part in parts:
                    if cut:
                        cut = False  # the end of the cut line
                        continue
                    self._line(name, part)
                if len(rest) > LINE_MAX:
                    if not cut:
                        self._line(
                            name,
                            rest[:LINE_MAX] + " [… line cut: longer than 64 KiB]".encode(),
                        )
                    cut, rest = True, b""
            if rest and not cut:
                self._line(name, rest)
        except (asyncssh.Error, OSError):
            pass
        finally:
            self.dead = True
            if not self.ready.done():
                self.ready.set_result(False)
            if not self._eof[name].done():
                self._eof[name].set_result(None)
            fut = self._marks.get(name)
            if fut is not None and not fut.done():
                fut.set_exception(SSHError(self.ended()))

    def stdout_closed(self) -> asyncio.Future[None]:
        """Done when the shell's stdout reached its end (the shell is gone)."""
        return self._eof["stdout"]

    def ended(self) -> str:
        """Why the session is gone, with what the login shell said if it never started."""
        if not all(self._ready.values()) and self._pre:
            return (
                "the remote shell ended before shipdeck's session started; it said: "
                + " | ".join(self._pre[-3:])
            )
        return "connection lost: the remote shell ended"

    async def done(self) -> CommandResult:
        rc = await self._marks["stdout"]
        await self._marks["stderr"]
        return CommandResult(rc, self._out.text(), self._err.text())

    async def finished(self) -> CommandResult:
        """A one-script session: both streams at EOF, then the exit status."""
        await asyncio.gather(self._eof["stdout"], self._eof["stderr"])
        await self.proc.wait_closed()  # sshd may send the exit status after EOF
        rc = self.proc.exit_status
        if not all(self._ready.values()):
            raise SSHError(self.ended())
        if rc is None and self.proc.exit_signal is None:
            # the channel closed without an exit status: the connection went away
            raise SSHError("connection lost: the remote shell ended without an exit status")
        return CommandResult(
            rc if isinstance(rc, int) and rc >= 0 else 255, self._out.text(), self._err.text()
        )

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            self.proc.close()
        for task in self._readers:
            task.cancel()
        for fut in self._marks.values():
            if not fut.done():
                fut.cancel()
        if not self.ready.done():
            self.ready.set_result(False)
        release, self._release = self._release, lambda: None
        release()  # once: the session slot goes back to the connection


class _Tail:
    """The last ``KEEP_BYTES`` of a command's output on one stream."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque()
        self.size = 0

    def add(self, text: str) -> None:
        self.lines.append(text)
        self.size += len(text) + 1
        while self.size > KEEP_BYTES and len(self.lines) > 1:
            self.size -= len(self.lines.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self.lines)


def one_line_sh(line: str) -> str:
    """A one-line POSIX sh command, as any login shell passes it on (csh has no
    ``2>``, fish no ``||`` before 3.0): ``line`` must hold no single quote."""
    assert "'" not in line and "\n" not in line
    return f"exec /bin/sh -c '{line}'"


def stdin_size(source: Path | bytes) -> int:
    """Bytes a command's standard input (a file, or bytes in memory) holds."""
    return len(source) if isinstance(source, bytes) else source.stat().st_size


async def feed_file(
    stdin: Any,
    path: Path | bytes,
    progress: Callable[[int, int], None] | None,
    stall: float = UPLOAD_STALL,
    total: int | None = None,
    offset: int = 0,
) -> None:
    """Stream a local file (in the page cache: 256 KiB reads do not stall the loop),
    or bytes held in memory (never written to disk: an env file of secrets), from
    byte ``offset``, ``total`` bytes when given (else to its end). Raises SSHError
    when the host takes no byte for ``stall`` seconds."""
    if total is None:
        total = stdin_size(path) - offset
    done = 0
    with io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb") as f:  # noqa: ASYNC230
        f.seek(offset)
        while done < total and (chunk := f.read(min(256 * 1024, total - done))):
            stdin.write(chunk)
            try:
                await asyncio.wait_for(stdin.drain(), stall)
            except TimeoutError:
                raise SSHError(
                    f"upload stalled: no progress for {stall:g}s ({done} of {total} bytes sent)"
                ) from None
            done += len(chunk)
            if progress is not None:
                progress(done, total)


def __getattr__(name: str) -> Any:
    # ``from engine.session import Host`` keeps working: Host moved to engine.host,
    # which imports this module (so it cannot be imported here at load time)
    if name == "Host":
        from engine.host import Host

        return Host
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""One host's shell session: every command of a deploy runs in one long-lived
``/bin/sh`` on the host, framed on its stdin (see ``_SHELL``)."""

from __future__ import annotations

import asyncio
import secrets
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
# upload can travel inline on the session's stdin (see ``_LOOP``). ``head`` gets
# /dev/null as stdin: whatever it is, it cannot read the session's.
_PROBE = (
    "g=0; case $(head --version </dev/null 2>/dev/null) in "
    '*"(GNU coreutils)"*) g=1 ;; esac; '
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


def _lines(script: str) -> tuple[int, bytes]:
    body = script if script.endswith("\n") else script + "\n"
    return body.count("\n"), body.encode()


def loader(token: str, script: str | None = None) -> bytes:
    """The first line a session reads: the loop, or one script (followed by its lines)."""
    if script is None:
        return (_LOAD.format(token=token, probe=_PROBE) + _LOOP.format() + "\n").encode()
    n, body = _lines(script)
    head = _LOAD.format(token=token, probe="g=; ")
    return (head + _ONCE.format(lines=n) + "\n").encode() + body


class _Session:
    """The client side of one remote /bin/sh started by ``BOOT`` (see ``_LOAD``).

    Output is read in chunks and split into lines here: a line longer than
    ``LINE_MAX`` is cut with a marker, and each command keeps at most ``KEEP_BYTES``
    per stream, so no amount of remote output grows this process without bound."""

    def __init__(self, proc: Any, token: str, release: Callable[[], None]) -> None:
        self.proc = proc
        self.token = token
        self.marker = f"\x1edone {token} "
        self.ready_mark = f"\x1eready {token} "
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
            if text.startswith(self.ready_mark):
                self._ready[name] = True
                pid, _, exact = text[len(self.ready_mark) :].strip().partition(" ")
                self.pid = int(pid) if pid.isdigit() else self.pid
                if name == "stdout":
                    self.head_exact = exact.strip() == "1"
                    if not self.ready.done():
                        self.ready.set_result(True)
            else:
                self._pre.append(text[:300])
                del self._pre[:-5]
            return
        if text.startswith(self.marker):
            fut = self._marks.get(name)
            rc = text[len(self.marker) :].strip()
            if fut is not None and not fut.done():
                fut.set_result(int(rc) if rc.isdigit() else 255)
            return
        (self._out if name == "stdout" else self._err).add(text)
        if self._on_line is not None:
            self._on_line(name, text)

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


class Host:
    """One connected host: run commands and transfer files over one connection.

    Every command runs in one long-lived shell session: sshd starts one shell per
    host per deploy, not one per command, and no command waits for a channel to open.
    A command that reads a file on its stdin (an upload) runs in that shell too, the
    file's bytes following the command, where the host's ``head -c`` stops at an exact
    count (GNU coreutils); elsewhere (BusyBox) it gets a session of its own whose stdin
    ends with the file."""

    def __init__(
        self,
        name: str,
        conn: asyncssh.SSHClientConnection,
        max_sessions: int,
        command_timeout: float,
    ):
        self.name = name
        self.conn = conn
        self._sessions = asyncio.Semaphore(max_sessions)
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()
        self.command_timeout = command_timeout
        self.upload_stall = UPLOAD_STALL
        self.commands_run = 0
        self.shells_started = 0
        self._shell: _Session | None = None
        self._shell_lock = asyncio.Lock()
        self._active: set[_Session] = set()  # sessions running a command now
        self.lost = ""  # why this connection was given up (a stalled upload)
        self._spare: asyncio.Future[Any] | None = None  # an upload session opened early
        self._warming: asyncio.Future[None] | None = None  # the shell opened early
        #: whether the first shell can take uploads inline (None: not asked yet)
        self._exact: asyncio.Future[bool] | None = None

    async def _channel(self) -> Any:
        """A new session running ``BOOT`` (it waits for its loader line)."""
        await self._sessions.acquire()
        try:
            proc = await self.conn.create_process(BOOT, encoding=None, stdin=asyncssh.PIPE)
        except BaseException as exc:
            self._sessions.release()
            if isinstance(exc, (asyncssh.Error, OSError)):
                raise SSHError(f"connection lost: {exc}") from None
            raise
        self.shells_started += 1
        return proc

    def warm(self) -> None:
        """Open the shell session now, while local work (fetch, build) runs: its
        channel's round trips are then off the deploy's path."""
        if self._warming is None and not self.lost:

            async def go() -> None:
                async with self._shell_lock:
                    await self._open_shell()

            self._warming = asyncio.ensure_future(go())
            self._warming.add_done_callback(lambda t: t.cancelled() or t.exception())

    def prepare_upload(self) -> None:
        """Have the next upload ready to start while other work runs. Where the shell
        takes it inline, nothing more is opened; elsewhere the upload's own session
        opens as soon as the shell said so: a channel costs round trips that the upload
        then does not wait for."""
        if self._spare is None and not self.lost:
            self.warm()  # the shell says whether its host's ``head -c`` is exact

            async def go() -> Any:
                if await asyncio.shield(self._exact_future()):
                    return None
                return await self._channel()

            self._spare = asyncio.ensure_future(go())
            self._spare.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _exact_future(self) -> asyncio.Future[bool]:
        if self._exact is None:
            self._exact = asyncio.get_running_loop().create_future()
        return self._exact

    def _settle_exact(self, value: bool) -> None:
        fut = self._exact_future()
        if not fut.done():
            fut.set_result(value)

    def _inline(self) -> _Session | None:
        """The shell, when an upload can follow its command on the shell's stdin: it
        is up and said that its host's ``head -c`` is exact."""
        shell = self._shell
        if shell is None or shell.dead or not shell.head_exact:
            return None
        return shell

    async def _start(self, script: str | None) -> _Session:
        spare, self._spare = (self._spare, None) if script is not None else (None, self._spare)
        proc = None
        if spare is not None:
            try:
                proc = await spare  # None: the shell was to take the upload
            except SSHError:
                proc = None  # open a fresh one below
        if proc is None:
            proc = await self._channel()
        token = secrets.token_hex(8)
        session = _Session(proc, token, self._sessions.release)
        try:
            proc.stdin.write(loader(token, script))
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            session.close()
            raise SSHError(f"connection lost: {exc}") from None
        return session

    async def _open_shell(self) -> _Session:
        if self._shell is not None and not self._shell.dead:
            return self._shell
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        try:
            shell = self._shell = await self._start(None)
        except BaseException:
            self._settle_exact(False)
            raise
        shell.ready.add_done_callback(
            lambda f: self._settle_exact(not f.cancelled() and f.result() and shell.head_exact)
        )
        return shell

    def _drop_shell(self) -> None:
        """Forget the shell (its state is unknown after a timeout or a cancel); the
        next command starts a new one."""
        if self._shell is not None:
            self._shell.close()
            self._shell = None

    async def run(
        self,
        command: str,
        *,
        on_line: LineHandler | None = None,
        timeout: float | None = None,
        stdin_file: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> CommandResult:
        """Run a command with POSIX sh on the host; stream its output lines to
        ``on_line``.

        ``stdin_file`` is sent as the command's standard input, ending at its last byte
        (with ``progress(done, total)`` calls): an upload. Raises CommandTimeout, or
        SSHError (connection lost, or "upload stalled" when no byte moved for
        ``upload_stall`` seconds)."""
        timeout = timeout or self.command_timeout
        if self.lost:
            raise SSHError(self.lost)
        if stdin_file is not None:
            if self._inline() is not None:
                async with self._shell_lock:
                    shell = self._inline()
                    if shell is not None:
                        return await self._run_inline(
                            shell, command, on_line, timeout, stdin_file, progress
                        )
            return await self._run_once(command, on_line, timeout, stdin_file, progress)
        async with self._shell_lock:
            shell = await self._open_shell()
            self.commands_run += 1
            n, body = _lines(command)
            shell.begin(on_line)
            self._active.add(shell)
            try:
                shell.proc.stdin.write(f"SD2 {shell.token} {n}\n".encode() + body)
                return await asyncio.wait_for(shell.done(), timeout)
            except TimeoutError:
                self._drop_shell()
                raise CommandTimeout(f"command timed out after {timeout:g}s") from None
            except (asyncssh.Error, OSError, BrokenPipeError) as exc:
                self._drop_shell()
                raise SSHError(f"connection lost: {exc}") from None
            except BaseException:  # cancelled (abort) or an SSHError from a reader
                self._drop_shell()
                raise
            finally:
                self._active.discard(shell)

    async def _run_inline(
        self,
        shell: _Session,
        command: str,
        on_line: LineHandler | None,
        timeout: float,
        stdin_file: Path,
        progress: Callable[[int, int], None] | None,
    ) -> CommandResult:
        """``command`` on the shell, the file's bytes following its lines (the shell
        hands the command exactly that many, see ``_LOOP``). The shell serves on only
        if every byte went out and the command's end came back; otherwise (a timeout,
        a cancel, a stall, a lost connection) it is dropped."""
        self.commands_run += 1
        size = stdin_file.stat().st_size  # noqa: ASYNC240
        n, body = _lines(command)
        shell.begin(on_line)
        self._active.add(shell)
        clean = False
        try:
            shell.proc.stdin.write(f"SD2 {shell.token} {n} {size}\n".encode() + body)
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            self._active.discard(shell)
            self._drop_shell()
            raise SSHError(f"connection lost: {exc}") from None
        feeding = asyncio.ensure_future(
            _feed(shell.proc.stdin, stdin_file, progress, self.upload_stall, size)
        )
        finished = asyncio.ensure_future(shell.done())
        for task in (feeding, finished):  # whichever is left behind is not awaited
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        try:
            pending: set[asyncio.Future[Any]] = {feeding, finished}
            while not finished.done():
                left = end - loop.time()
                if left <= 0:
                    raise CommandTimeout(f"command timed out after {timeout:g}s")
                done, pending = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                exc = feeding.exception() if feeding in done else None
                if isinstance(exc, SSHError):  # stalled: see _run_once
                    self.lost = f"connection given up: {exc}"
                    self.conn.abort()
                    raise exc
                if exc is not None:
                    raise SSHError(f"connection lost: {exc}")
            result = finished.result()
            clean = feeding.done()
            return result
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            raise SSHError(f"connection lost: {exc}") from None
        finally:
            feeding.cancel()
            finished.cancel()
            self._active.discard(shell)
            if not clean:
                self._drop_shell()

    async def _run_once(
        self,
        command: str,
        on_line: LineHandler | None,
        timeout: float,
        stdin_file: Path,
        progress: Callable[[int, int], None] | None,
    ) -> CommandResult:
        self.commands_run += 1
        session = await self._start(command)
        session.begin(on_line)
        self._active.add(session)

        async def send() -> None:
            await _feed(session.proc.stdin, stdin_file, progress, self.upload_stall)
            session.proc.stdin.write_eof()

        feeding = asyncio.ensure_future(send())
        finished = asyncio.ensure_future(session.finished())
        for task in (feeding, finished):  # whichever is left behind is not awaited
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        try:
            # the script may end before it read everything (it failed): its result counts
            pending: set[asyncio.Future[Any]] = {feeding, finished}
            while not finished.done():
                left = end - loop.time()
                if left <= 0:
                    raise CommandTimeout(f"command timed out after {timeout:g}s")
                done, pending = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                exc = feeding.exception() if feeding in done else None
                if isinstance(exc, SSHError):
                    # a host that takes no byte for so long is not answering: give the
                    # connection up rather than wait on it for every later command
                    self.lost = f"connection given up: {exc}"
                    self.conn.abort()
                    raise exc
                if exc is not None:
                    raise SSHError(f"connection lost: {exc}")
            return finished.result()
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            raise SSHError(f"connection lost: {exc}") from None
        finally:
            feeding.cancel()
            finished.cancel()
            self._active.discard(session)
            session.close()

    async def interrupt(self, grace: float = 1.0) -> bool:
        """Stop whatever runs on the host for us now (a hook, a health check, an
        upload): every process of its session gets SIGTERM, then SIGKILL after
        ``grace`` seconds. The session ends with it: a shell whose command ended by
        itself meanwhile is killed all the same, and no later command is sent to it.
        Returns True when something was running."""
        targets = [s for s in self._active if s.pid and not s.dead]
        pids = {s.pid for s in targets}
        if not pids:
            return False
        # every process of the session (sshd made our shell its leader): a hook run
        # under `timeout` is in a process group of its own, but not a session of its
        # own; where there is no pkill, the shell's process group
        kill = " ".join(
            f"pkill -{{sig}} -s {p} 2>/dev/null || kill -{{sig}} -{p} 2>/dev/null || "
            f"kill -{{sig}} {p} 2>/dev/null;"
            for p in pids
        )
        try:
            try:
                await asyncio.wait_for(self.conn.run(_sh(kill.format(sig="TERM") + " true")), 5)
            except (TimeoutError, asyncssh.Error, OSError):
                return True
            # every session signalled, including one whose command has just ended
            waits = [asyncio.ensure_future(asyncio.shield(s._eof["stdout"])) for s in targets]
            _, pending = await asyncio.wait(waits, timeout=grace)
            for w in pending:
                w.cancel()
            if pending:
                try:
                    await asyncio.wait_for(self.conn.run(_sh(kill.format(sig="KILL") + " true")), 5)
                except (TimeoutError, asyncssh.Error, OSError):
                    pass
            return True
        finally:
            # the shell was signalled: the next command gets a new one (a command still
            # running on it drops it itself when it sees the shell end)
            if self._shell in targets and self._shell not in self._active:
                self._drop_shell()

    async def sftp(self) -> asyncssh.SFTPClient:
        async with self._sftp_lock:
            if self._sftp is None:
                try:
                    self._sftp = await self.conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise SSHError(f"cannot start SFTP: {exc}") from None
            return self._sftp

    async def get(self, remote: str, local: Path) -> None:
        sftp = await self.sftp()
        try:
            async with self._sessions:
                await sftp.get(remote, str(local))
        except asyncssh.SFTPNoSuchFile:
            raise SSHError(f"{remote}: no such file") from None
        except (asyncssh.Error, OSError) as exc:
            raise SSHError(f"download of {remote} failed: {exc}") from None

    def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        self._drop_shell()
        spare, self._spare = self._spare, None
        if spare is not None:
            if spare.done() and not spare.cancelled() and spare.exception() is None:
                if spare.result() is not None:
                    spare.result().close()
                    self._sessions.release()
            else:
                spare.cancel()
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()


def _sh(line: str) -> str:
    """A one-line POSIX sh command, as any login shell passes it on (csh has no
    ``2>``, fish no ``||`` before 3.0): ``line`` must hold no single quote."""
    assert "'" not in line and "\n" not in line
    return f"exec /bin/sh -c '{line}'"


async def _feed(
    stdin: Any,
    path: Path,
    progress: Callable[[int, int], None] | None,
    stall: float = UPLOAD_STALL,
    total: int | None = None,
) -> None:
    """Stream a local file (in the page cache: 256 KiB reads do not stall the loop),
    its first ``total`` bytes when given. Raises SSHError when the host takes no byte
    for ``stall`` seconds."""
    if total is None:
        total = path.stat().st_size  # noqa: ASYNC240
    done = 0
    with open(path, "rb") as f:  # noqa: ASYNC230
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

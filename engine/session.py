"""One host's shell session: every command of a deploy runs in one long-lived
``/bin/sh`` on the host, framed on its stdin (see ``_SHELL``)."""

from __future__ import annotations

import asyncio
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

LineHandler = Callable[[str, str], None]  # (stream, text)


class SSHError(Exception):
    """A host could not be reached, authenticated or a command could not run."""


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


# The host's shell: one session that runs every command of a deploy, read from its
# stdin as "SD1 <token> <script bytes> <in|null>" + the script (+ the bytes it reads
# when "in"). After each script it prints a done marker with the exit status on
# stdout and on stderr, so both streams are complete when the client sees both. A
# header without the session's token (stray bytes after a failed upload) ends the
# shell: nothing on stdin is ever run unless it came as a script.
_SHELL = r"""t=%s
while IFS= read -r h; do
  set -f; set -- $h; set +f
  [ "$#" = 4 ] && [ "$1" = SD1 ] && [ "$2" = "$t" ] || exit 2
  case "$3" in ''|*[!0-9]*) exit 2 ;; esac
  s=$(head -c "$3") || exit 2
  if [ "$4" = in ]; then (eval "$s"); else (eval "$s") </dev/null; fi
  rc=$?
  printf '\n\036done %%s %%s\n' "$t" "$rc"; printf '\n\036done %%s %%s\n' "$t" "$rc" >&2
done"""


class _Shell:
    """The client side of one host's shell session (see ``_SHELL``)."""

    def __init__(self, proc: Any, token: str, release: Callable[[], None]) -> None:
        self.proc = proc
        self.token = token
        self.marker = f"\x1edone {token} "
        self.dead = False
        self._release = release
        self._out: list[str] = []
        self._err: list[str] = []
        self._on_line: LineHandler | None = None
        self._marks: dict[str, asyncio.Future[int]] = {}
        self._readers = [
            asyncio.ensure_future(self._read(proc.stdout, "stdout")),
            asyncio.ensure_future(self._read(proc.stderr, "stderr")),
        ]

    def begin(self, on_line: LineHandler | None) -> None:
        loop = asyncio.get_running_loop()
        self._out, self._err, self._on_line = [], [], on_line
        self._marks = {"stdout": loop.create_future(), "stderr": loop.create_future()}

    async def _read(self, stream: Any, name: str) -> None:
        try:
            async for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                if not text:
                    continue
                if text.startswith(self.marker):
                    fut = self._marks.get(name)
                    rc = text[len(self.marker) :].strip()
                    if fut is not None and not fut.done():
                        fut.set_result(int(rc) if rc.isdigit() else 255)
                    continue
                (self._out if name == "stdout" else self._err).append(text)
                if self._on_line is not None:
                    self._on_line(name, text)
        except (asyncssh.Error, OSError):
            pass
        finally:
            self.dead = True
            fut = self._marks.get(name)
            if fut is not None and not fut.done():
                fut.set_exception(SSHError("connection lost: the remote shell ended"))

    async def done(self) -> CommandResult:
        rc = await self._marks["stdout"]
        await self._marks["stderr"]
        return CommandResult(rc, "\n".join(self._out), "\n".join(self._err))

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            self.proc.close()
        for task in self._readers:
            task.cancel()
        for fut in self._marks.values():
            if not fut.done():
                fut.cancel()
        release, self._release = self._release, lambda: None
        release()  # once: the session slot goes back to the connection


class Host:
    """One connected host: run commands and transfer files over one connection.

    Every command runs in one long-lived shell session: sshd starts one shell per
    host per deploy, not one per command, and no command waits for a channel to open."""

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
        self.commands_run = 0
        self.shells_started = 0
        self._shell: _Shell | None = None
        self._shell_lock = asyncio.Lock()

    async def _open_shell(self) -> _Shell:
        if self._shell is not None and not self._shell.dead:
            return self._shell
        if self._shell is not None:
            self._shell.close()
            self._shell = None
        await self._sessions.acquire()
        token = secrets.token_hex(8)
        try:
            proc = await self.conn.create_process(
                f"exec /bin/sh -c {q(_SHELL % token)}", encoding=None, stdin=asyncssh.PIPE
            )
        except (asyncssh.Error, OSError) as exc:
            self._sessions.release()
            raise SSHError(f"connection lost: {exc}") from None
        self.shells_started += 1
        self._shell = _Shell(proc, token, self._sessions.release)
        return self._shell

    def _drop_shell(self) -> None:
        """Forget the shell (its state is unknown after a timeout, a cancel or a
        failed upload); the next command starts a new one."""
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
        """Run a command with POSIX sh in the host's shell session; stream its output
        lines to ``on_line``.

        ``stdin_file`` is sent as the command's standard input (with ``progress(done,
        total)`` calls): an upload over the session itself. The command must read
        exactly its size (``head -c``). Raises CommandTimeout or SSHError."""
        timeout = timeout or self.command_timeout
        async with self._shell_lock:
            shell = await self._open_shell()
            self.commands_run += 1
            script = command.encode()
            mode = "in" if stdin_file is not None else "null"
            shell.begin(on_line)
            feeding: asyncio.Future[None] | None = None
            try:
                shell.proc.stdin.write(
                    f"SD1 {shell.token} {len(script)} {mode}\n".encode() + script
                )
                if stdin_file is not None:
                    feeding = asyncio.ensure_future(_feed(shell.proc.stdin, stdin_file, progress))
                    feeding.add_done_callback(lambda f: f.cancelled() or f.exception())
                result = await asyncio.wait_for(shell.done(), timeout)
                if feeding is not None and result.ok:
                    await asyncio.wait_for(feeding, 10)  # read in full: the last drain
            except TimeoutError:
                self._drop_shell()
                raise CommandTimeout(f"command timed out after {timeout:g}s") from None
            except (asyncssh.Error, OSError, BrokenPipeError) as exc:
                self._drop_shell()
                raise SSHError(f"connection lost: {exc}") from None
            except BaseException:  # cancelled (abort) or an SSHError from a reader
                self._drop_shell()
                raise
            if feeding is not None and not result.ok:
                # the script stopped before reading everything: stray bytes may follow
                feeding.cancel()
                self._drop_shell()
            return result

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
        self._drop_shell()
        if self._sftp is not None:
            self._sftp.exit()
        self.conn.close()


async def _feed(stdin: Any, path: Path, progress: Callable[[int, int], None] | None) -> None:
    """Stream a local file (in the page cache: 256 KiB reads do not stall the loop)."""
    total = path.stat().st_size  # noqa: ASYNC240
    done = 0
    with open(path, "rb") as f:  # noqa: ASYNC230
        while chunk := f.read(256 * 1024):
            stdin.write(chunk)
            await stdin.drain()
            done += len(chunk)
            if progress is not None:
                progress(done, total)

"""A connected host: commands and file transfers over one SSH connection, every
command in one long-lived shell session (the protocol is :mod:`engine.session`'s)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh

from engine.errors import SSHError
from engine.handshake import WireStats, keepalive_lost
from engine.session import (
    BOOT,
    UPLOAD_STALL,
    CommandResult,
    CommandTimeout,
    LineHandler,
    Session,
    feed_file,
    loader,
    one_line_sh,
    script_lines,
    stdin_size,
)

__all__ = ["Host"]


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
        *,
        lost: list[Exception] | None = None,
        dead_after: float = 0.0,
        wire: WireStats | None = None,
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
        self._shell: Session | None = None
        self._shell_lock = asyncio.Lock()
        self._active: set[Session] = set()  # sessions running a command now
        self.lost = ""  # why this connection was given up (a stalled upload)
        self._spare: asyncio.Future[Any] | None = None  # an upload session opened early
        self._warming: asyncio.Future[None] | None = None  # the shell opened early
        #: whether the first shell can take uploads inline (None: not asked yet)
        self._exact: asyncio.Future[bool] | None = None
        self._conn_lost = lost if lost is not None else []  # why the connection ended
        self._dead_after = dead_after
        #: what the connection cost on the wire (a debug counter), if counted
        self.wire = wire
        #: how the host was reached: its jump chain (None: directly), and the address,
        #: port and user another host of its network connects to (a peer copy)
        self.jump: str | None = None
        self.addr, self.port, self.user = name, 22, ""

    def _why(self, exc: SSHError) -> SSHError:
        """``exc``, or why the connection ended when that says more: a host that
        stops answering keepalives fails its step with that reason, not "the remote
        shell ended"."""
        if isinstance(exc, CommandTimeout) or not self._conn_lost:
            return exc
        if not keepalive_lost(self._conn_lost[0]):
            return exc
        return SSHError(
            f"host stopped answering: no reply to keepalives for {self._dead_after:g}s"
            " (ssh.dead_after)"
        )

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

    def _inline(self) -> Session | None:
        """The shell, when an upload can follow its command on the shell's stdin: it
        is up and said that its host's ``head -c`` is exact."""
        shell = self._shell
        if shell is None or shell.dead or not shell.head_exact:
            return None
        return shell

    async def _start(self, script: str | None) -> Session:
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
        session = Session(proc, token, self._sessions.release)
        try:
            proc.stdin.write(loader(token, script))
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            session.close()
            raise SSHError(f"connection lost: {exc}") from None
        return session

    async def run_aside(self, command: str, timeout: float) -> CommandResult:
        """A short command in a session of its own, beside whatever the shell runs
        (a peer's key granted while the host's own steps run). Raises CommandTimeout,
        SSHError."""
        if self.lost:
            raise SSHError(self.lost)
        proc = await self._channel()
        token = secrets.token_hex(8)
        session = Session(proc, token, self._sessions.release)
        session.begin(None)
        try:
            proc.stdin.write(loader(token, command))
            proc.stdin.write_eof()
            return await asyncio.wait_for(session.finished(), timeout)
        except TimeoutError:
            raise CommandTimeout(f"command timed out after {timeout:g}s") from None
        except (asyncssh.Error, OSError, BrokenPipeError) as exc:
            raise SSHError(f"connection lost: {exc}") from None
        finally:
            session.close()

    async def _open_shell(self) -> Session:
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
        stdin_file: Path | bytes | None = None,
        progress: Callable[[int, int], None] | None = None,
        stdin_offset: int = 0,
    ) -> CommandResult:
        """Run a command with POSIX sh on the host; stream its output lines to
        ``on_line``.

        ``stdin_file`` (a file, or bytes: never on the command line, where the host's
        process list would show them; from byte ``stdin_offset`` on) is sent as the
        command's standard input, ending at its last byte (with ``progress(done,
        total)`` calls): an upload. Raises CommandTimeout, or
        SSHError (connection lost, the host stopped answering keepalives, or "upload
        stalled" when no byte moved for ``upload_stall`` seconds)."""
        try:
            return await self._run(
                command,
                on_line,
                timeout or self.command_timeout,
                stdin_file,
                progress,
                stdin_offset,
            )
        except SSHError as exc:
            raise self._why(exc) from None

    async def _run(
        self,
        command: str,
        on_line: LineHandler | None,
        timeout: float,
        stdin_file: Path | bytes | None,
        progress: Callable[[int, int], None] | None,
        offset: int = 0,
    ) -> CommandResult:
        if self.lost:
            raise SSHError(self.lost)
        if stdin_file is not None:
            if self._inline() is not None:
                async with self._shell_lock:
                    shell = self._inline()
                    if shell is not None:
                        return await self._run_inline(
                            shell, command, on_line, timeout, stdin_file, progress, offset
                        )
            return await self._run_once(command, on_line, timeout, stdin_file, progress, offset)
        async with self._shell_lock:
            shell = await self._open_shell()
            self.commands_run += 1
            n, body = script_lines(command)
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
        shell: Session,
        command: str,
        on_line: LineHandler | None,
        timeout: float,
        stdin_file: Path | bytes,
        progress: Callable[[int, int], None] | None,
        offset: int = 0,
    ) -> CommandResult:
        """``command`` on the shell, the file's bytes following its lines (the shell
        hands the command exactly that many, see ``_LOOP``). The shell serves on only
        if every byte went out and the command's end came back; otherwise (a timeout,
        a cancel, a stall, a lost connection) it is dropped."""
        self.commands_run += 1
        size = stdin_size(stdin_file) - offset
        n, body = script_lines(command)
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
            feed_file(shell.proc.stdin, stdin_file, progress, self.upload_stall, size, offset)
        )
        finished = asyncio.ensure_future(shell.done())
        try:
            result = await self._upload_result(feeding, finished, timeout)
            clean = feeding.done()
            return result
        finally:
            self._active.discard(shell)
            if not clean:
                self._drop_shell()

    async def _run_once(
        self,
        command: str,
        on_line: LineHandler | None,
        timeout: float,
        stdin_file: Path | bytes,
        progress: Callable[[int, int], None] | None,
        offset: int = 0,
    ) -> CommandResult:
        self.commands_run += 1
        session = await self._start(command)
        session.begin(on_line)
        self._active.add(session)

        async def send() -> None:
            await feed_file(
                session.proc.stdin, stdin_file, progress, self.upload_stall, offset=offset
            )
            session.proc.stdin.write_eof()

        feeding = asyncio.ensure_future(send())
        finished = asyncio.ensure_future(session.finished())
        try:
            return await self._upload_result(feeding, finished, timeout)
        finally:
            self._active.discard(session)
            session.close()

    async def _upload_result(
        self, feeding: asyncio.Future[Any], finished: asyncio.Future[CommandResult], timeout: float
    ) -> CommandResult:
        """The result of a command fed a file: one deadline over both; the command may
        end before it read everything (it failed), and its result counts. A feed that
        stalled gives the connection up. Both tasks are cancelled on the way out."""
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

    async def _running(self) -> list[Session]:
        """The sessions running a command now, with their shell's pid. A session whose
        shell has not said it is ready (its pid) is waited for, briefly: the command
        sent with it may already run on the host."""
        starting = [s.ready for s in self._active if not s.pid and not s.dead]
        if starting:
            await asyncio.wait(starting, timeout=5)
        return [s for s in self._active if s.pid and not s.dead]

    async def interrupt(self, grace: float = 1.0) -> bool:
        """Stop whatever runs on the host for us now (a hook, a health check, an
        upload): every process of its session gets SIGTERM, then SIGKILL after
        ``grace`` seconds. The session ends with it: a shell whose command ended by
        itself meanwhile is killed all the same, and no later command is sent to it.
        Returns True when something was running."""
        targets = await self._running()
        if not targets:
            return False
        try:
            await self._signal({s.pid for s in targets}, targets, grace)
            return True
        finally:
            # the shell was signalled: the next command gets a new one (a command still
            # running on it drops it itself when it sees the shell end)
            if self._shell in targets and self._shell not in self._active:
                self._drop_shell()

    async def _signal(self, pids: set[int], targets: list[Session], grace: float) -> None:
        """SIGTERM every process of the sessions of ``pids``, SIGKILL those whose
        session has not ended ``grace`` seconds later. Raises nothing."""
        # every process of the session (sshd made our shell its leader): a hook run
        # under `timeout` is in a process group of its own, but not a session of its
        # own; where there is no pkill, the shell's process group
        kill = " ".join(
            f"pkill -{{sig}} -s {p} 2>/dev/null || kill -{{sig}} -{p} 2>/dev/null || "
            f"kill -{{sig}} {p} 2>/dev/null;"
            for p in pids
        )
        try:
            await asyncio.wait_for(self.conn.run(one_line_sh(kill.format(sig="TERM") + " true")), 5)
        except (TimeoutError, asyncssh.Error, OSError):
            return
        # every session signalled, including one whose command has just ended
        waits = [asyncio.ensure_future(asyncio.shield(s.stdout_closed())) for s in targets]
        _, pending = await asyncio.wait(waits, timeout=grace)
        for w in pending:
            w.cancel()
        if pending:
            try:
                await asyncio.wait_for(
                    self.conn.run(one_line_sh(kill.format(sig="KILL") + " true")), 5
                )
            except (TimeoutError, asyncssh.Error, OSError):
                pass

    async def sftp(self) -> asyncssh.SFTPClient:
        async with self._sftp_lock:
            if self._sftp is None:
                try:
                    self._sftp = await self.conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise SSHError(f"cannot start SFTP: {exc}") from None
            return self._sftp

    async def get(self, remote: str, local: Path) -> None:
        """Download ``remote`` to ``local`` over SFTP. Raises SSHError."""
        try:
            sftp = await self.sftp()
            try:
                async with self._sessions:
                    await sftp.get(remote, str(local))
            except asyncssh.SFTPNoSuchFile:
                raise SSHError(f"{remote}: no such file") from None
            except (asyncssh.Error, OSError) as exc:
                raise SSHError(f"download of {remote} failed: {exc}") from None
        except SSHError as exc:
            raise self._why(exc) from None

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

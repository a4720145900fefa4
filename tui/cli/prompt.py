"""Questions on the terminal for headless commands: unknown host keys, passwords,
key passphrases and gate approvals. Without a terminal (or in CI) they are declined."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio


class HeadlessPrompter:
    """Asks on the terminal when there is one; otherwise declines."""

    def __init__(self, interactive: bool):
        self.interactive = interactive

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool:
        if not self.interactive:
            return False
        answer = await ask(f"{host}: unknown host key {key_type} {fingerprint}. Trust it? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    async def ask_password(self, host: str, user: str) -> str | None:
        if not self.interactive:
            return None
        return await ask(f"password for {user}@{host}: ", secret=True)

    async def ask_passphrase(self, path: str) -> str | None:
        if not self.interactive:
            return None
        return await ask(f"passphrase for the key {path}: ", secret=True)


def ask(prompt: str, *, secret: bool = False) -> asyncio.Future[str]:
    """Read one answer line from the terminal without a thread: the event loop watches
    stdin, so a Ctrl-C that stops the run never waits for someone to press Enter."""
    import asyncio

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    fd = sys.stdin.fileno()
    sys.stderr.write(prompt)
    sys.stderr.flush()
    saved = None
    if secret:
        try:
            import termios

            saved = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
        except (ImportError, OSError):
            saved = None
    buf = bytearray()

    def restore(_f: object = None) -> None:
        loop.remove_reader(fd)
        if saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            sys.stderr.write("\n")

    def readable() -> None:
        try:
            data = os.read(fd, 1024)
        except OSError:
            data = b""
        buf.extend(data)
        if (not data or b"\n" in buf) and not fut.done():
            fut.set_result(bytes(buf).split(b"\n", 1)[0].decode(errors="replace"))

    loop.add_reader(fd, readable)
    fut.add_done_callback(restore)
    return fut


def interactive() -> bool:
    """A person at a terminal (stdin is a tty and ``CI`` is not set)."""
    return (
        sys.stdin is not None
        and sys.stdin.isatty()
        and os.environ.get("CI", "").lower() not in ("true", "1")
    )


def prompter() -> HeadlessPrompter:
    """The prompter for this process: asks when :func:`interactive`, else declines."""
    return HeadlessPrompter(interactive())

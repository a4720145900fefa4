"""This machine's processes, as a lock's owner record names them: a pid means one
process only together with the boot and the pid namespace it was read in. Standard
library only (``shipdeck history`` reads it without loading asyncio)."""

from __future__ import annotations

import os


def boot_id() -> str:
    """This machine's boot id (Linux), "" where there is none: with a pid, it names
    one process of one boot of one machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read(64).strip()
    except OSError:
        return ""


def pid_space() -> str:
    """Which pid namespace this process is in (``pid:[<inode>]``), "" if unknown: a
    pid means something here only to a process of the same namespace (another
    container on this machine shares the boot id, not the pids)."""
    try:
        return os.readlink("/proc/self/ns/pid")[:64]
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

"""What a command needs when the reader of its output goes away (``| head``).

Such a command exits with ``ExitCode.PIPE`` (141, 128 + SIGPIPE, what a shell reports for
``yes | head``)."""

from __future__ import annotations

import errno
import os
import sys


def is_broken_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` says the reader of our output went away."""
    return isinstance(exc, BrokenPipeError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET)
    )


def stdout_gone() -> None:
    """Point stdout at /dev/null after its reader went away, so that nothing written
    later (or flushed at exit) raises again. Quiet: there is nobody to tell."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass

"""What a command needs when the reader of its output goes away (``| head``).

The words for events are in :mod:`tui.render`, the headless printers in
:mod:`tui.headless`; the engine renders no text."""

from __future__ import annotations

import errno
import os
import sys

#: Exit status of a command whose stdout was closed early (``shipdeck history | head``):
#: 128 + SIGPIPE, what a shell reports for ``yes | head``.
EXIT_PIPE = 141


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

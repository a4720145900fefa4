"""Run the ``shipdeck`` command as a CI pipeline or an operator does: a real subprocess."""

from __future__ import annotations

import asyncio
import os
import sys


async def shipdeck(*args: str, cwd=None, env=None) -> tuple[int, str, str]:
    """``shipdeck ARGS`` (as ``python -m tui.cli``, no stdin): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tui.cli",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()

"""One file's tail on every selected host, merged (``shipdeck logs``).

:func:`tail_fleet` runs :func:`~engine.remote.tail.tail_script` over one connection
per host and hands each line to ``on_line(host, stream, text)`` as it arrives
(lines are bounded by the session: :data:`engine.session.LINE_MAX`). Following, a
host whose connection is lost is reported through ``on_note(host, text)`` and
connected again (every ``retry`` seconds, doubling up to 30), then followed from
the line after the last one printed (lines written meanwhile are not lost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from engine.remote.tail import parse_count, tail_script

__all__ = ["tail_fleet"]

#: a follow runs until it is ended (Ctrl-C): its command never times out
FOREVER = 10 * 365 * 86400.0


async def tail_fleet(
    config: Any,
    specs: list[Any],
    remote: str,
    *,
    lines: int,
    follow: bool,
    on_line: Callable[[str, str, str], None],
    on_note: Callable[[str, str], None],
    prompter: Any = None,
    retry: float = 1.0,
) -> dict[str, str]:
    """Tail ``remote`` on ``specs``; host -> why it failed, for hosts that did (a
    follow only returns when cancelled, or when every host failed for good).
    Raises ValueError for a path that is not a file's."""
    from engine.ssh import Connector, SSHError

    path = config.deploy.path
    connector = Connector(config.ssh, config.base_dir, prompter=prompter)
    failed: dict[str, str] = {}
    limit = asyncio.Semaphore(max(1, int(config.deploy.parallel)))

    async def one(spec: Any) -> None:
        name, wait, dropped = spec.name, retry, False
        seen: int | None = None  # lines of the file before the next one to print

        def line(stream: str, text: str) -> None:
            nonlocal seen
            count = parse_count(text) if stream == "stdout" else None
            if count is not None:
                seen = seen if seen is not None else max(0, count - max(0, lines))
                return
            if stream == "stdout" and seen is not None:
                seen += 1
            on_line(name, stream, text)

        while True:
            try:
                async with limit:
                    host = await connector.connect(spec)
                if dropped:
                    on_note(name, "reconnected")
                    wait = retry
                script = tail_script(path, remote, lines=lines, follow=follow, after=seen)
                res = await host.run(script, on_line=line, timeout=FOREVER)
            except (TimeoutError, SSHError, OSError) as exc:
                why = str(exc) or type(exc).__name__
                if not follow:
                    failed[name] = why
                    return
                on_note(name, f"disconnected ({why}); reconnecting")
                dropped = True
                await asyncio.sleep(wait)
                wait = min(30.0, wait * 2)
                continue
            if res.exit_status != 0:
                why = (res.stderr.strip().splitlines() or [f"exit {res.exit_status}"])[-1]
                failed[name] = why[:300]
            return

    try:
        await asyncio.gather(*(one(spec) for spec in specs))
    finally:
        await connector.close()
    return failed

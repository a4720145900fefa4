"""Small helpers for asserting what an operator would check on a host."""

from __future__ import annotations

import os
from pathlib import Path

from engine.events import Event


def current(deploy_dir: Path) -> str | None:
    """The release id ``current`` points at, or None."""
    link = deploy_dir / "current"
    if not link.is_symlink():
        return None
    return os.readlink(link).rsplit("/", 1)[-1]


def current_version(deploy_dir: Path) -> str | None:
    f = deploy_dir / "current" / "VERSION"
    return f.read_text().strip() if f.exists() else None


def releases(deploy_dir: Path) -> list[str]:
    d = deploy_dir / "releases"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def revisions(deploy_dir: Path) -> list[str]:
    f = deploy_dir / "revisions.log"
    return f.read_text().splitlines() if f.exists() else []


class Recorder:
    """Subscriber that keeps every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]

    def statuses(self, key: str) -> list[str]:
        return [e.status for e in self.events if e.type == "status" and e.key == key]  # type: ignore[attr-defined]


async def splice(reader, writer) -> None:
    """Copy one direction of a TCP proxy until EOF, then close (test proxies)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

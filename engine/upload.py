"""How the artifact reaches one host, chosen from what the host already has.

The host's probe (:func:`engine.remote.lock.artifact_probe_sh`) says what is there;
:meth:`Transfers.attempts` turns that into the uploads to try, cheapest first, the
whole artifact always last:

- ``resume``: a broken upload of this artifact left ``<sha256>.tar.part``; its
  sha256 (hashed on the host) equals the sha256 of as many bytes of the local tar,
  so only the rest is sent;
- ``delta``: the host has an earlier artifact (its newest) and ``zstd``; the local
  package cache still has that artifact: a ``zstd --patch-from`` patch against it
  is sent, the host rebuilds the tar and checks its sha256 (any mismatch: the next
  attempt);
- ``full``: the gzip wire copy of the tar.

Why zstd's ``--patch-from``: it is a maintained, widely packaged tool (Debian,
Alpine, RHEL, Homebrew ship it), its patch format is zstd's own frame format (the
host's stock ``zstd -d`` applies it), it finds long matches across a whole
uncompressed tar in one pass (long-distance matching) and compresses the literals,
so one changed file costs about its own compressed size. ``xdelta3`` and ``bsdiff``
are older, less often installed and, for bsdiff, quadratic in memory; rsync's
algorithm needs rsync on both ends and one round of signatures per host.

A :class:`Transfers` belongs to one run: it makes each patch once, whatever the
number of hosts, and counts the bytes every host was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.build import find_package

if TYPE_CHECKING:
    from engine.build import Package
    from engine.hostlock import HostState

#: zstd's ``--patch-from`` takes a base of at most 2 GiB
PATCH_MAX = (1 << 31) - (1 << 20)
#: seconds a patch may take to make, at least (and one more per 10 MB of artifact)
PATCH_TIMEOUT = 60.0


@dataclass(frozen=True)
class Upload:
    """One way to get the artifact onto a host: ``size`` bytes of ``path`` from byte
    ``offset`` on its stdin, which :func:`engine.remote.release.receive_script` in
    ``mode`` turns into the ``total`` bytes of the artifact."""

    mode: str  # full | resume | delta
    path: Path
    offset: int
    size: int
    total: int
    base: str = ""  # delta: the host's artifact the patch applies to


def prefix_sha256(path: Path, n: int) -> str:
    """The sha256 of the first ``n`` bytes of ``path``."""
    digest = hashlib.sha256()
    left = n
    with open(path, "rb") as f:
        while left > 0 and (block := f.read(min(1 << 20, left))):
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


async def make_patch(pkg: Package, base: Path) -> Path | None:
    """``zstd --patch-from=<base> <tar>`` into the package's cache folder (kept for
    the next run); None when zstd is missing locally, fails, or the patch would be no
    smaller than the wire copy."""
    out = pkg.path.parent / f"{base.stem}.patch.zst"
    if out.is_file():
        return out
    zstd = shutil.which("zstd")
    if zstd is None or pkg.size > PATCH_MAX or base.stat().st_size > PATCH_MAX:  # noqa: ASYNC240
        return None
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = await asyncio.create_subprocess_exec(
        zstd,
        "-q",
        "-f",
        f"--patch-from={base}",
        str(pkg.path),
        "-o",
        str(tmp),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        rc = await asyncio.wait_for(proc.wait(), PATCH_TIMEOUT + pkg.size / 10e6)
    except TimeoutError:
        rc = -1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if rc != 0 or tmp.stat().st_size >= pkg.wire.stat().st_size:  # noqa: ASYNC240
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, out)
    return out


class Transfers:
    """One run's uploads: the patches it made and the bytes each host was sent."""

    def __init__(self) -> None:
        self._patches: dict[tuple[str, str], asyncio.Future[Path | None]] = {}

    async def patch(self, pkg: Package, base_sha: str) -> Path | None:
        """The patch from the artifact ``base_sha`` to ``pkg`` (made once per run)."""
        key = (pkg.sha256, base_sha)
        fut = self._patches.get(key)
        if fut is None:
            base = find_package(base_sha)
            if base is None:
                return None
            fut = self._patches[key] = asyncio.ensure_future(make_patch(pkg, base))
        return await asyncio.shield(fut)

    async def attempts(self, st: HostState, pkg: Package) -> list[Upload]:
        """The uploads to try for ``st``, cheapest first; the full one always last."""
        full = Upload("full", pkg.wire, 0, pkg.wire.stat().st_size, pkg.size)  # noqa: ASYNC240
        found: list[Upload] = []
        n = st.part_size
        if st.part_sha and 0 < n < pkg.size:
            if await asyncio.to_thread(prefix_sha256, pkg.path, n) == st.part_sha:
                found.append(Upload("resume", pkg.path, n, pkg.size - n, pkg.size))
        if st.delta == "zstd" and st.base_sha and st.base_sha != pkg.sha256:
            patch = await self.patch(pkg, st.base_sha)
            if patch is not None:
                size = patch.stat().st_size  # noqa: ASYNC240
                found.append(Upload("delta", patch, 0, size, pkg.size, base=st.base_sha))
        found.sort(key=lambda u: u.size)
        return [u for u in found if u.size < full.size] + [full]

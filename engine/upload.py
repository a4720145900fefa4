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
- ``full``: a compressed copy of the tar (``zstd`` where the host has it, else
  ``gzip``), made the first time a run needs it (:func:`make_wire`) and kept in the
  package cache.

Why zstd's ``--patch-from``: it is a maintained, widely packaged tool (Debian,
Alpine, RHEL, Homebrew ship it), its patch format is zstd's own frame format (the
host's stock ``zstd -d`` applies it), it finds long matches across a whole
uncompressed tar in one pass (long-distance matching) and compresses the literals,
so one changed file costs about its own compressed size. ``xdelta3`` and ``bsdiff``
are older, less often installed and, for bsdiff, quadratic in memory; rsync's
algorithm needs rsync on both ends and one round of signatures per host.

A :class:`Transfers` belongs to one run: it makes each patch once, whatever the
number of hosts, and groups the hosts into sites (:class:`Site`): the hosts of
``[sites]``, else those behind one ``ssh.jump``. In a site only one host at a time
gets the artifact through shipdeck's link; the others copy it from a host of the
site that has it (:mod:`engine.peer`), each host serving at most
``deploy.peer_fanout`` of them, so the copies spread as a tree.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.build import find_package
from engine.errors import BuildError
from engine.hostlock import Aborted
from engine.hosts import select

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.build import Package
    from engine.config import Config
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
    codec: str = "gzip"  # full: how the wire copy is compressed (zstd | gzip)


def prefix_sha256(path: Path, n: int | None = None) -> str:
    """The sha256 of the first ``n`` bytes of ``path`` (all of it when None)."""
    digest = hashlib.sha256()
    left = path.stat().st_size if n is None else n
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
    # a patch half the artifact's size is a wholesale change: the wire copy is as good
    if rc != 0 or tmp.stat().st_size >= pkg.size // 2:  # noqa: ASYNC240
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, out)
    return out


def _gzip(src: Path, dest: Path) -> None:
    with open(src, "rb") as f, open(dest, "wb") as out:
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
            shutil.copyfileobj(f, gz, 1 << 20)


async def make_wire(pkg: Package, codec: str) -> Path:
    """The compressed copy of the tar a full upload sends, made once and kept beside
    it: ``zstd`` (several times faster to make than gzip, and the host's stock
    ``zstd -d`` reads it) or ``gzip`` (for hosts without zstd). Raises BuildError
    when it cannot be made."""
    out = pkg.wire(codec)
    if out.is_file():  # noqa: ASYNC240
        return out
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        if codec == "zstd":
            zstd = shutil.which("zstd")
            if zstd is None:
                raise BuildError("zstd is not installed here")
            proc = await asyncio.create_subprocess_exec(
                zstd, "-q", "-f", "-3", "-T0", str(pkg.path), "-o", str(tmp),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            _, err = await proc.communicate()
            if proc.returncode != 0:
                raise BuildError(f"zstd could not compress the artifact: {err.decode()[-200:]}")
        else:
            await asyncio.to_thread(_gzip, pkg.path, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        raise BuildError(f"could not write the artifact's wire copy: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


class Site:
    """The hosts of one network: who has the artifact (and how many copies each has
    served), who is getting it through shipdeck's link now."""

    def __init__(self, name: str, fanout: int) -> None:
        self.name = name
        self.fanout = fanout
        #: host key -> copies it serves or served: hosts that have the artifact, or a
        #: patch to it (served on to the hosts with that patch's base)
        self.have: dict[str, int] = {}
        #: the hosts of ``have`` that have the artifact itself
        self.artifact: set[str] = set()
        #: hosts that have a patch and are rebuilding the artifact from it now
        self.rebuilding: set[str] = set()
        self.seeding = 0  # hosts getting it through the link now
        #: host key -> the base of the patch it keeps
        self.patches: dict[str, str] = {}
        self._changed = asyncio.Condition()

    async def source_for(
        self, key: str, aborting: Callable[[], bool], base: str = ""
    ) -> tuple[str, str] | None:
        """A host of the site to copy from (one of its ``fanout`` slots is taken) and,
        when it keeps the patch from ``base`` (the receiver's artifact), that base:
        the receiver copies the patch, not the artifact. None: ``key`` gets the
        artifact through the link (counted as seeding until :meth:`seeded`). Waits
        while another host of the site is getting it through the link, or every
        holder's slots are taken; raises Aborted if the run is aborting meanwhile."""
        async with self._changed:
            while True:
                if aborting():
                    raise Aborted()
                src = self._free_source(key, base)
                if src is not None:
                    self.have[src] += 1
                    return src, base if base and self.patches.get(src) == base else ""
                if not self.artifact and not self.rebuilding and not self.seeding:
                    self.seeding += 1
                    return None
                try:
                    await asyncio.wait_for(self._changed.wait(), 1.0)
                except TimeoutError:
                    pass

    def _free_source(self, key: str, base: str) -> str | None:
        """The least busy host with a free slot that can serve ``key``: one with the
        patch from ``base`` first, else one with the artifact."""

        def serves(k: str) -> bool:
            return k in self.artifact or bool(base) and self.patches.get(k) == base

        free = [k for k, n in self.have.items() if n < self.fanout and k != key and serves(k)]
        if not free:
            return None
        return min(free, key=lambda k: (not base or self.patches.get(k) != base, self.have[k]))

    async def seed(self) -> None:
        """``key`` goes through the link after all (its copy failed)."""
        async with self._changed:
            self.seeding += 1

    async def seeded(self, key: str, ok: bool, patch_base: str = "") -> None:
        """A host that went through the link is done (``ok``: it has the artifact,
        and keeps the patch from ``patch_base`` if it got a delta)."""
        async with self._changed:
            self.seeding -= 1
            if ok:
                self._holds(key, patch_base)
            self._changed.notify_all()

    async def copied(self, key: str, source: str, ok: bool | None, patch_base: str = "") -> None:
        """A copy from ``source`` ended: ``ok`` (``key`` has it now), False (the
        source is not used again) or None (stopped: the slot is given back)."""
        async with self._changed:
            if ok:
                self._holds(key, patch_base)
            elif ok is False:
                self.have.pop(source, None)
                self.artifact.discard(source)
                self.rebuilding.discard(source)
                self.patches.pop(source, None)
            elif source in self.have:
                self.have[source] -= 1
            self._changed.notify_all()

    async def has_patch(self, key: str, patch_base: str) -> None:
        """``key`` has the patch from ``patch_base`` (it rebuilds the artifact from it
        now): the hosts with that base can copy the patch from it already."""
        async with self._changed:
            self.have.setdefault(key, 0)
            self.patches[key] = patch_base
            self.rebuilding.add(key)
            self._changed.notify_all()

    async def drop(self, key: str) -> None:
        """``key`` could not rebuild the artifact from its patch: it serves nothing."""
        async with self._changed:
            self.have.pop(key, None)
            self.patches.pop(key, None)
            self.artifact.discard(key)
            self.rebuilding.discard(key)
            self._changed.notify_all()

    async def holds(self, key: str) -> None:
        """``key`` had the artifact already: it can serve it."""
        async with self._changed:
            self._holds(key, "")
            self._changed.notify_all()

    def _holds(self, key: str, patch_base: str) -> None:
        self.have.setdefault(key, 0)
        self.artifact.add(key)
        self.rebuilding.discard(key)
        if patch_base:
            self.patches[key] = patch_base


class Grants:
    """The one-time keys a serving host holds now (:mod:`engine.peer`), and what the
    first of them created there (``dir``, ``file`` or nothing): the last revoke
    removes it."""

    def __init__(self) -> None:
        self.open = 0
        self.created = ""
        #: one grant or revoke at a time: each rewrites the same authorized_keys
        self.lock = asyncio.Lock()


class Transfers:
    """One run's uploads: the patches it made, its sites."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config
        self._patches: dict[tuple[str, str], asyncio.Future[Path | None]] = {}
        self._wires: dict[tuple[str, str], asyncio.Future[Path]] = {}
        self._digests: dict[Path, asyncio.Future[tuple[int, str]]] = {}
        self._sites: dict[str, Site] = {}
        self._site_of: dict[str, str] | None = None
        #: per serving host's key: the one-time keys it holds now
        self.grants: dict[str, Grants] = {}

    def site(self, name: str, jump: str | None) -> Site | None:
        """The site of host ``name`` (reached through ``jump``): its ``[sites]``
        entry, else one site per jump chain; None: no copies between hosts."""
        c = self.config
        if c is None or c.deploy.peer_fanout <= 0:
            return None
        if self._site_of is None:
            self._site_of = {}
            for site, patterns in (c.sites or {}).items():
                try:
                    hosts = select(c.all_hosts(), ",".join(patterns))
                except ValueError:
                    continue
                for h in hosts:
                    self._site_of.setdefault(h.name, site)
        key = self._site_of.get(name) or (f"behind {jump}" if jump else None)
        if key is None:
            return None
        if key not in self._sites:
            self._sites[key] = Site(key, c.deploy.peer_fanout)
        return self._sites[key]

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

    async def patch_digest(self, patch: Path) -> tuple[int, str]:
        """A patch's size and sha256 (what a host that copies it from a peer checks)."""
        fut = self._digests.get(patch)
        if fut is None:
            fut = self._digests[patch] = asyncio.ensure_future(
                asyncio.to_thread(lambda: (patch.stat().st_size, prefix_sha256(patch)))
            )
        return await asyncio.shield(fut)

    async def wire(self, pkg: Package, codec: str) -> Path:
        """The wire copy of ``pkg`` in ``codec`` (made once per run, whatever the
        number of hosts waiting for it)."""
        key = (pkg.sha256, codec)
        fut = self._wires.get(key)
        if fut is None or (fut.done() and fut.exception() is not None):
            fut = self._wires[key] = asyncio.ensure_future(make_wire(pkg, codec))
        return await asyncio.shield(fut)

    async def attempts(self, st: HostState, pkg: Package) -> list[Upload]:
        """The uploads to try for ``st``, cheapest first; the full one always last
        (its wire copy is made only when the cheaper ones cannot be used, or are no
        smaller than a wire copy already made)."""
        codec = "zstd" if st.delta == "zstd" and shutil.which("zstd") else "gzip"
        found = await self._cheaper(st, pkg)
        made = pkg.wire(codec)
        if made.is_file():  # noqa: ASYNC240
            found = [u for u in found if u.size < made.stat().st_size]  # noqa: ASYNC240
        if found:  # the full upload is only a fallback: its copy is made if it is needed
            wire = made
            size = made.stat().st_size if made.is_file() else pkg.size  # noqa: ASYNC240
        else:
            wire = await self.wire(pkg, codec)
            size = wire.stat().st_size  # noqa: ASYNC240
        return [*found, Upload("full", wire, 0, size, pkg.size, codec=codec)]

    async def ready(self, up: Upload, pkg: Package) -> Upload:
        """``up`` with its bytes on disk: a full upload's wire copy is made now if it
        was not yet. Raises BuildError."""
        if up.mode != "full":
            return up
        wire = await self.wire(pkg, up.codec)
        return replace(up, path=wire, size=wire.stat().st_size)  # noqa: ASYNC240

    async def _cheaper(self, st: HostState, pkg: Package) -> list[Upload]:
        """A resume or a delta the host allows, cheapest first."""
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
        return found

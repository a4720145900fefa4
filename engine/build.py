"""Build and package: export the sha, run the build commands there, pack the
artifact folder as a tar named by its sha256. A package is reused when the sha and
the build config are unchanged.

The tar is deterministic (sorted names, fixed owner, mtime and modes), so an
unchanged file yields unchanged bytes at the same place in the stream, and it is
stored on the host uncompressed: that is what makes a delta against the host's
previous artifact small (:mod:`engine.upload`). Only the wire copy of a full upload
is compressed (``<sha256>.tar.zst`` or ``.tar.gz``), made when an upload first needs
it (:func:`engine.upload.make_wire`): a deploy that sends only deltas never pays for
compressing the whole artifact.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import BuildConfig
from engine.errors import BuildError
from engine.git import cache_dir, export_tree

#: the package format; a change rebuilds every cached package
FORMAT = 2
#: every member's mtime (1980-01-01, what reproducible builds use)
MTIME = 315532800


@dataclass(frozen=True)
class Package:
    path: Path  # .../<sha256>.tar (deterministic, uncompressed: what the host keeps)
    sha256: str  # of the tar
    size: int  # of the tar
    files: int
    reused: bool = False
    unpacked: int = 0  # bytes of the files inside

    def wire(self, codec: str) -> Path:
        """Where the compressed copy a full upload sends is kept (``codec``: ``zstd``
        or ``gzip``; the host decompresses it on the fly)."""
        return self.path.with_suffix(".tar.zst" if codec == "zstd" else ".tar.gz")


def build_key(sha: str, build: BuildConfig) -> str:
    spec = json.dumps(
        {
            "sha": sha,
            "commands": list(build.commands),
            "artifact": build.artifact,
            "format": FORMAT,
        },
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def packages_dir() -> Path:
    return cache_dir() / "packages"


def cached_package(sha: str, build: BuildConfig) -> Package | None:
    meta = packages_dir() / build_key(sha, build) / "package.json"
    try:
        info = json.loads(meta.read_text())
        path = meta.parent / f"{info['sha256']}.tar"
        if path.stat().st_size == info["size"]:
            return Package(
                path=path,
                sha256=info["sha256"],
                size=info["size"],
                files=info["files"],
                unpacked=int(info.get("unpacked", 0)),
                reused=True,
            )
    except (OSError, ValueError, KeyError):
        pass
    return None


#: names shipdeck writes into every release; the artifact must not bring its own
RESERVED = (".shipdeck-release",)


def _check_member(src: Path, full: Path, arc: str) -> None:
    """Refuse what would let unpacking write outside the release: a symlink whose
    target (followed all the way, as the host will) leaves the build output, or a
    member named like shipdeck's own files."""
    if arc in RESERVED:
        raise BuildError(
            f"artifact: {arc!r} is a name shipdeck writes into every release; rename it in the build output"
        )
    if full.is_symlink():
        root = os.path.realpath(src)
        target = os.path.realpath(full)
        if os.path.isabs(os.readlink(full)) or os.path.commonpath([root, target]) != root:
            raise BuildError(
                f"artifact: {arc} is a symlink to {os.readlink(full)!r}, outside the release; "
                "unpacking it could write outside the deploy path (make it relative and inside)"
            )


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """The same header for the same file wherever and whenever it was built: no
    owner, a fixed mtime, modes reduced to 0755/0644 (0777 for a symlink)."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = MTIME
    if info.issym():
        info.mode = 0o777
    elif info.isdir() or info.mode & 0o100:
        info.mode = 0o755
    else:
        info.mode = 0o644
    return info


def _pack(src: Path, dest_dir: Path) -> Package:
    """Deterministic tar of ``src`` (sorted names, normalised headers), hashed as it
    is written."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    files = 0
    unpacked = 0
    try:
        with open(tmp, "wb") as raw:
            hashed = _Hashing(raw)
            with tarfile.open(fileobj=hashed, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for root, dirs, names in os.walk(src):
                    dirs.sort()
                    for name in sorted(dirs + names):
                        full = Path(root) / name
                        arc = str(full.relative_to(src))
                        _check_member(src, full, arc)
                        if full.is_dir() and not full.is_symlink():
                            tar.addfile(_normalise(tar.gettarinfo(full, arc)))
                        else:
                            tar.add(full, arc, recursive=False, filter=_normalise)
                            files += 1
                            if full.is_file() and not full.is_symlink():
                                unpacked += full.stat().st_size
        sha256 = hashed.digest.hexdigest()
        final = dest_dir / f"{sha256}.tar"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    size = final.stat().st_size
    (dest_dir / "package.json").write_text(
        json.dumps({"sha256": sha256, "size": size, "files": files, "unpacked": unpacked})
    )
    return Package(path=final, sha256=sha256, size=size, files=files, unpacked=unpacked)


class _Hashing:
    """A write-only file that hashes what goes through it (the tar is read once)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.raw.tell()

    def flush(self) -> None:
        self.raw.flush()


def find_package(sha256: str) -> Path | None:
    """The cached tar whose sha256 is ``sha256`` (a base for a delta), if any."""
    if not all(c in "0123456789abcdef" for c in sha256) or len(sha256) != 64:
        return None
    for meta in packages_dir().glob(f"*/{sha256}.tar"):
        return meta
    return None


async def run_local(
    command: str,
    cwd: Path,
    on_line: Callable[[str, str], None],
    timeout: float,
    env: dict[str, str] | None = None,
    hide_env: set[str] | frozenset[str] = frozenset(),
) -> int:
    """Run a shell command locally, streaming each output line to ``on_line(stream, text)``."""
    proc = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in {**os.environ, **(env or {})}.items() if k not in hide_env},
        start_new_session=True,
    )

    async def pump(stream: asyncio.StreamReader, name: str) -> None:
        while line := await stream.readline():
            on_line(name, line.decode(errors="replace").rstrip("\n"))

    try:
        await asyncio.wait_for(
            asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"), proc.wait()),  # type: ignore[arg-type]
            timeout,
        )
    except (TimeoutError, asyncio.CancelledError):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        await proc.wait()
        raise
    return proc.returncode or 0


async def build_package(
    mirror: Path,
    sha: str,
    build: BuildConfig,
    on_line: Callable[[str, str], None],
    hide_env: set[str] | frozenset[str] = frozenset(),
) -> Package:
    """Export ``sha``, run the build commands, pack the artifact. Raises BuildError.

    ``hide_env`` names variables (secrets) the build commands must not inherit."""
    cached = cached_package(sha, build)
    if cached is not None:
        return cached
    work = Path(tempfile.mkdtemp(prefix="shipdeck-build-"))
    try:
        tree = work / "src"
        files = await asyncio.to_thread(export_tree, mirror, sha, tree)
        on_line("info", f"exported {sha[:12]} ({files} files)")
        for command in build.commands:
            on_line("info", f"$ {command}")
            try:
                code = await run_local(
                    command,
                    tree,
                    on_line,
                    build.timeout,
                    env={"SHIPDECK_SHA": sha},
                    hide_env=hide_env,
                )
            except TimeoutError:
                raise BuildError(
                    f"build command timed out after {build.timeout:g}s: {command}"
                ) from None
            if code != 0:
                raise BuildError(f"build command failed (exit {code}): {command}")
        src = tree / build.artifact if build.artifact else tree
        if not src.is_dir():
            raise BuildError(
                f"build artifact folder {build.artifact!r} does not exist after the build"
            )
        return await asyncio.to_thread(_pack, src, packages_dir() / build_key(sha, build))
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""Build and package: export the sha, run the build commands there, pack the
artifact folder as a tar.gz named by its sha256. A package is reused when the sha
and the build config are unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config import BuildConfig
from engine.errors import BuildError
from engine.git import cache_dir, export_tree


@dataclass(frozen=True)
class Package:
    path: Path  # .../<sha256>.tar.gz
    sha256: str
    size: int
    files: int
    reused: bool = False
    unpacked: int = 0  # bytes of the files inside


def build_key(sha: str, build: BuildConfig) -> str:
    spec = json.dumps(
        {"sha": sha, "commands": list(build.commands), "artifact": build.artifact}, sort_keys=True
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def packages_dir() -> Path:
    return cache_dir() / "packages"


def cached_package(sha: str, build: BuildConfig) -> Package | None:
    meta = packages_dir() / build_key(sha, build) / "package.json"
    try:
        info = json.loads(meta.read_text())
        path = meta.parent / f"{info['sha256']}.tar.gz"
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


def _pack(src: Path, dest_dir: Path) -> Package:
    """Deterministic tar.gz of ``src`` (sorted names, fixed owner, gzip mtime 0)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    files = 0
    unpacked = 0

    def reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz,
        ):
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for root, dirs, names in os.walk(src):
                    dirs.sort()
                    for name in sorted(dirs + names):
                        full = Path(root) / name
                        arc = str(full.relative_to(src))
                        _check_member(src, full, arc)
                        if full.is_dir() and not full.is_symlink():
                            tar.addfile(reset(tar.gettarinfo(full, arc)))
                        else:
                            tar.add(full, arc, recursive=False, filter=reset)
                            files += 1
                            if full.is_file() and not full.is_symlink():
                                unpacked += full.stat().st_size
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sha256 = digest.hexdigest()
        final = dest_dir / f"{sha256}.tar.gz"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    size = final.stat().st_size
    (dest_dir / "package.json").write_text(
        json.dumps({"sha256": sha256, "size": size, "files": files, "unpacked": unpacked})
    )
    return Package(path=final, sha256=sha256, size=size, files=files, unpacked=unpacked)


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

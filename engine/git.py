"""The git source: a bare mirror cache per repository, refs resolved to a sha,
trees exported with ``git archive``.

GitPython is blocking; the async wrappers run it in a thread. Git never prompts for
credentials (``GIT_TERMINAL_PROMPT=0``) and its stderr is shown on failure.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import io
import os
import re
import tarfile
from pathlib import Path

import git

_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/true",
    "SSH_ASKPASS": "/bin/true",
    "GCM_INTERACTIVE": "never",
}


class GitError(Exception):
    """A repository could not be fetched or a ref could not be resolved."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "shipdeck"


def _stderr(exc: git.GitCommandError) -> str:
    text = (exc.stderr or "").strip()
    text = re.sub(r"^stderr: '?", "", text).rstrip("'").strip()
    return text or str(exc)


def mirror_path(repo: str, base: Path | None = None) -> Path:
    digest = hashlib.sha256(repo.encode()).hexdigest()[:16]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", repo.rstrip("/").rsplit("/", 1)[-1])[:40] or "repo"
    return (base or cache_dir()) / "mirrors" / f"{tail}-{digest}.git"


def normalise_repo(repo: str, base_dir: Path) -> str:
    """A local path is made absolute (relative to the config's folder); URLs pass."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", repo) or re.match(r"^[\w.-]+@[\w.-]+:", repo):
        return repo
    path = Path(os.path.expanduser(repo))
    if not path.is_absolute():
        path = base_dir / path
    return str(path.resolve())


def sync_mirror(repo: str, base: Path | None = None) -> tuple[Path, bool]:
    """Clone the repo as a bare mirror once, fetch on reuse. Returns (path, cloned).

    A file lock beside the mirror keeps two shipdeck processes from syncing it at once."""
    path = mirror_path(repo, base)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _sync_mirror(repo, path)


def _sync_mirror(repo: str, path: Path) -> tuple[Path, bool]:
    env = dict(GIT_ENV)
    try:
        if (path / "HEAD").exists():
            with git.Repo(path) as r:
                r.git.update_environment(**env)
                r.git.fetch("--prune", "--force", "--tags", "origin", "+refs/heads/*:refs/heads/*")
            return path, False
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        git.Repo.clone_from(repo, tmp, bare=True, mirror=True, env=env).close()
        os.replace(tmp, path)
        return path, True
    except git.GitCommandError as exc:
        raise GitError(f"cannot fetch {repo}: {_stderr(exc)}") from None
    except (git.NoSuchPathError, git.InvalidGitRepositoryError) as exc:
        raise GitError(f"cannot fetch {repo}: not a git repository ({exc})") from None


def resolve_ref(mirror: Path, ref: str) -> str:
    """Resolve a branch, tag or (abbreviated) sha to a full commit sha."""
    with git.Repo(mirror) as r:
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
            try:
                return r.git.rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}").strip()
            except git.GitCommandError:
                continue
    hint = "" if _SHA_RE.match(ref) else " (no such branch or tag)"
    raise GitError(f"unknown ref {ref!r}{hint}")


def commit_info(mirror: Path, sha: str) -> dict[str, str]:
    with git.Repo(mirror) as r:
        c = r.commit(sha)
        return {
            "subject": c.summary if isinstance(c.summary, str) else c.summary.decode(),
            "author": str(c.author),
        }


def export_tree(mirror: Path, sha: str, dest: Path) -> int:
    """Write the tree of ``sha`` into ``dest`` (git archive); returns the file count."""
    dest.mkdir(parents=True, exist_ok=True)
    with git.Repo(mirror) as r:
        try:
            data = r.git.archive("--format=tar", sha, stdout_as_string=False)
        except git.GitCommandError as exc:
            raise GitError(f"git archive {sha[:12]} failed: {_stderr(exc)}") from None
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [m for m in tar.getmembers() if m.name != "pax_global_header"]
        tar.extractall(dest, members=members, filter="tar")
        count = sum(1 for m in members if m.isfile())
    return count


async def fetch(repo: str, ref: str, base: Path | None = None) -> tuple[Path, str, bool]:
    """Sync the mirror and resolve ``ref`` off the event loop: (mirror, sha, cloned)."""

    def work() -> tuple[Path, str, bool]:
        mirror, cloned = sync_mirror(repo, base)
        return mirror, resolve_ref(mirror, ref), cloned

    return await asyncio.to_thread(work)

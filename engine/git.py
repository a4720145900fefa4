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

from engine.errors import GitError

_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "/bin/true",
    "SSH_ASKPASS": "/bin/true",
    "GCM_INTERACTIVE": "never",
}


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


FETCH_ARGS = ("--quiet", "--prune", "--force", "--tags", "origin", "+refs/heads/*:refs/heads/*")


def _sync_mirror(repo: str, path: Path) -> tuple[Path, bool]:
    env = dict(GIT_ENV)
    try:
        if (path / "HEAD").exists():
            with git.Repo(path) as r:
                r.git.update_environment(**env)
                r.git.fetch(*FETCH_ARGS)
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


def describe_ref(mirror: Path, ref: str) -> tuple[str, dict[str, str]]:
    """Resolve a branch, tag or (abbreviated) sha to (full commit sha, its subject and
    author): one ``git log`` per candidate, branches first."""
    with git.Repo(mirror) as r:
        for candidate in (f"refs/heads/{ref}", f"refs/tags/{ref}", ref):
            if candidate.startswith("-"):
                continue
            try:
                out = r.git.log("-1", "--format=%H%x00%an%x00%s", f"{candidate}^{{commit}}", "--")
            except git.GitCommandError:
                continue
            sha, _, rest = out.strip().partition("\0")
            author, _, subject = rest.partition("\0")
            if sha:
                return sha, {"subject": subject, "author": author}
    hint = "" if _SHA_RE.match(ref) else " (no such branch or tag)"
    raise GitError(f"unknown ref {ref!r}{hint}")


def resolve_ref(mirror: Path, ref: str) -> str:
    """Resolve a branch, tag or (abbreviated) sha to a full commit sha."""
    return describe_ref(mirror, ref)[0]


def commit_info(mirror: Path, sha: str) -> dict[str, str]:
    return describe_ref(mirror, sha)[1]


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
    mirror, sha, cloned, _ = await fetch_described(repo, ref, base)
    return mirror, sha, cloned


async def fetch_described(
    repo: str, ref: str, base: Path | None = None, early: EarlyFetch | None = None
) -> tuple[Path, str, bool, dict[str, str]]:
    """:func:`fetch` plus the commit's subject and author; with ``early`` (started by
    :func:`start_fetch` for the same repository), its result is used."""

    def work() -> tuple[Path, str, bool, dict[str, str]]:
        if early is not None and early.repo == repo and early.path == mirror_path(repo, base):
            mirror, cloned = early.wait()
        else:
            mirror, cloned = sync_mirror(repo, base)
        sha, info = describe_ref(mirror, ref)
        return mirror, sha, cloned, info

    return await asyncio.to_thread(work)


class EarlyFetch:
    """A mirror fetch started before the deploy is ready to use it.

    ``shipdeck deploy`` starts it right after reading the config, so git talks to the
    remote while Python loads the SSH layer. It holds the mirror's lock until
    :meth:`wait` or :meth:`close`; any failure is reported by :meth:`wait` exactly as
    a fetch started then would report it."""

    def __init__(self, repo: str, base: Path | None = None) -> None:
        self.repo = repo
        self.base = base
        self.path = mirror_path(repo, base)
        self._lock = None
        self._proc = None
        self._done: tuple[Path, bool] | None = None
        if not (self.path / "HEAD").exists():
            return  # first use: the clone runs when the deploy needs it
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another shipdeck is syncing this mirror: wait in wait()
            self._lock.close()
            self._lock = None
            return
        try:
            g = git.Git(str(self.path))
            g.update_environment(**GIT_ENV)
            self._proc = g.fetch(*FETCH_ARGS, as_process=True)
        except (git.GitCommandError, OSError):
            self.close()

    def wait(self) -> tuple[Path, bool]:
        """Block until the fetch is done: (mirror, cloned). Raises GitError."""
        if self._done is not None:
            return self._done
        if self._proc is None:
            self.close()
            self._done = sync_mirror(self.repo, self.base)
            return self._done
        proc = self._proc.proc
        try:
            _, err = proc.communicate()  # drains stderr: a chatty remote cannot block it
        finally:
            self._proc = None
            self.close()
        if proc.returncode:
            text = (err or b"").decode("utf-8", "replace").strip()
            raise GitError(f"cannot fetch {self.repo}: {text or f'git exited {proc.returncode}'}")
        self._done = (self.path, False)
        return self._done

    def close(self) -> None:
        """Stop a fetch nobody will wait for, and release the mirror's lock."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                proc.proc.kill()
                proc.proc.wait()
            except (OSError, AttributeError):
                pass
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def start_fetch(repo: str, base: Path | None = None) -> EarlyFetch:
    return EarlyFetch(repo, base)


# -- what lies between two commits (the "what's going out" card) ----------------------

#: ``git log`` fields of one commit: sha, author, author date (ISO 8601), subject
_LOG_FORMAT = "%H%x00%an%x00%aI%x00%s"


def verify_commit(repo: git.Repo, rev: str) -> str | None:
    """The full sha of ``rev`` (a sha, short sha, branch or tag) in ``repo``, or None
    when the repository does not have it."""
    if not rev or rev.startswith("-"):
        return None
    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{rev}^{{commit}}").strip() or None
    except git.GitCommandError:
        return None


def count_commits(repo: git.Repo, base: str, target: str) -> int:
    """How many commits ``target`` has that ``base`` has not (``base..target``).
    Raises GitError."""
    try:
        return int(repo.git.rev_list("--count", f"{base}..{target}", "--").strip() or 0)
    except git.GitCommandError as exc:
        raise GitError(f"git rev-list {base[:12]}..{target[:12]}: {_stderr(exc)}") from None


def log_range(repo: git.Repo, rev_range: str, limit: int) -> list[tuple[str, str, str, str]]:
    """The newest ``limit`` commits of ``rev_range`` (``a..b``, or one sha for its
    whole history), newest first: (sha, author, ISO date, subject). Raises GitError."""
    try:
        out = repo.git.log(f"-n{max(0, limit)}", f"--format={_LOG_FORMAT}", rev_range, "--")
    except git.GitCommandError as exc:
        raise GitError(f"git log {rev_range}: {_stderr(exc)}") from None
    rows = []
    for line in out.splitlines():
        parts = line.split("\0")
        if len(parts) == 4:
            rows.append((parts[0], parts[1], parts[2], parts[3]))
    return rows


def diff_numstat(
    repo: git.Repo, base: str, target: str
) -> list[tuple[str, int | None, int | None]]:
    """Every file that differs between ``base`` and ``target``: (path, lines added,
    lines removed); None for a binary file's counts. Renames show as a removal and an
    addition. Raises GitError."""
    try:
        out = repo.git.diff("--numstat", "-z", "--no-renames", base, target, "--")
    except git.GitCommandError as exc:
        raise GitError(f"git diff {base[:12]} {target[:12]}: {_stderr(exc)}") from None
    rows: list[tuple[str, int | None, int | None]] = []
    for entry in out.split("\0"):
        added, sep, rest = entry.partition("\t")
        removed, sep2, path = rest.partition("\t")
        if not (sep and sep2 and path):
            continue
        rows.append(
            (
                path,
                int(added) if added.isdigit() else None,
                int(removed) if removed.isdigit() else None,
            )
        )
    return rows


def open_repo(mirror: Path) -> git.Repo:
    """The mirror as a GitPython repo (close it after use). Raises GitError."""
    try:
        return git.Repo(mirror)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError) as exc:
        raise GitError(f"no git mirror at {mirror} ({exc})") from None

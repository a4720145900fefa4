"""The git source: mirror cache, ref resolution, clear errors, never a credential prompt."""

from __future__ import annotations

import http.server
import threading

import pytest

from engine import git as gitmod
from engine.localfleet import commit_version

pytestmark = pytest.mark.timeout(60)


async def test_mirror_cloned_once_then_fetched(sample_repo) -> None:
    mirror, sha1, cloned = await gitmod.fetch(str(sample_repo), "main")
    assert cloned and (mirror / "HEAD").exists()
    assert str(mirror).startswith(str(gitmod.cache_dir()))
    sha2 = commit_version(sample_repo, "2.0.0")
    mirror2, resolved, cloned = await gitmod.fetch(str(sample_repo), "main")
    assert mirror2 == mirror and not cloned
    assert resolved == sha2 != sha1


async def test_tags_and_short_shas_resolve(sample_repo) -> None:
    from engine.localfleet import _git

    _git(sample_repo, "tag", "v1.0.0")
    sha = _git(sample_repo, "rev-parse", "HEAD")
    commit_version(sample_repo, "2.0.0")
    _, by_tag, _ = await gitmod.fetch(str(sample_repo), "v1.0.0")
    _, by_short, _ = await gitmod.fetch(str(sample_repo), sha[:8])
    assert by_tag == by_short == sha


async def test_unknown_ref_is_a_clear_error(sample_repo) -> None:
    with pytest.raises(gitmod.GitError, match="unknown ref 'nope' \\(no such branch or tag\\)"):
        await gitmod.fetch(str(sample_repo), "nope")


async def test_unreachable_repo_shows_git_stderr(tmp_path) -> None:
    with pytest.raises(gitmod.GitError) as info:
        await gitmod.fetch(str(tmp_path / "missing.git"), "main")
    assert "cannot fetch" in str(info.value)
    assert "does not exist" in str(info.value) or "not a git repository" in str(info.value).lower()


async def test_never_hangs_on_a_credential_prompt() -> None:
    class AskForPassword(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AskForPassword)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(gitmod.GitError) as info:
            await gitmod.fetch(f"http://127.0.0.1:{server.server_port}/acme/web.git", "main")
        assert "terminal prompts disabled" in str(info.value) or "Authentication failed" in str(
            info.value
        )
    finally:
        server.shutdown()


async def test_export_tree(sample_repo, tmp_path) -> None:
    mirror, sha, _ = await gitmod.fetch(str(sample_repo), "main")
    n = gitmod.export_tree(mirror, sha, tmp_path / "out")
    assert (tmp_path / "out" / "VERSION").read_text() == "1.0.0\n"
    assert n == 5


async def test_early_fetch_brings_the_new_commit_and_frees_the_lock(sample_repo) -> None:
    import fcntl

    await gitmod.fetch(str(sample_repo), "main")  # the mirror exists
    sha2 = commit_version(sample_repo, "2.0.0")
    early = gitmod.start_fetch(str(sample_repo))
    lock_path = early.path.with_name(early.path.name + ".lock")
    with open(lock_path, "w") as other:  # held while the fetch runs
        with pytest.raises(OSError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _, sha, cloned, info = await gitmod.fetch_described(str(sample_repo), "main", early=early)
    assert sha == sha2 and not cloned
    assert info["subject"] and info["author"]
    with open(lock_path, "w") as other:  # released once used
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


async def test_early_fetch_failure_is_the_same_clear_error(sample_repo, tmp_path) -> None:
    import shutil

    repo = tmp_path / "gone"
    shutil.copytree(sample_repo, repo)
    await gitmod.fetch(str(repo), "main")
    shutil.rmtree(repo)
    early = gitmod.start_fetch(str(repo))
    with pytest.raises(gitmod.GitError, match="cannot fetch .*gone"):
        await gitmod.fetch_described(str(repo), "main", early=early)
    early.close()  # idempotent


async def test_early_fetch_closed_unused_stops_git_and_unlocks(sample_repo) -> None:
    import fcntl

    await gitmod.fetch(str(sample_repo), "main")
    early = gitmod.start_fetch(str(sample_repo))
    early.close()
    with open(early.path.with_name(early.path.name + ".lock"), "w") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # a deploy after that still fetches normally
    sha2 = commit_version(sample_repo, "3.0.0")
    _, sha, _ = await gitmod.fetch(str(sample_repo), "main")
    assert sha == sha2

"""What a deploy ships: fetch the ref, build it, package it, name the release.

:class:`Source` runs the ``fetch``, ``build`` and ``package`` nodes of a deploy's
plan: the git mirror (:mod:`engine.git`), the build in a clean export of the sha and
the package (:mod:`engine.build`, reused when the sha and the build are unchanged),
and the release id ``<UTC stamp>-<short sha>`` (:func:`new_release_id`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from engine import build as buildmod
from engine import git as gitmod
from engine.events import CANCELLED, FAILED, OK, RUNNING, SKIPPED, DeployMeta
from engine.hostphase import size_text
from engine.remote.shell import utc_stamp

if TYPE_CHECKING:
    from engine.config import Config
    from engine.history import History
    from engine.run import Run

log = logging.getLogger("shipdeck.engine")

#: release stamps handed out by this process (history covers earlier processes)
_ISSUED_STAMPS: set[str] = set()


def new_release_id(sha: str, started_at: float, history: History) -> str:
    """``<UTC stamp>-<short sha>``. Each deploy from this machine takes its own
    second (a deploy started within a second of the last moves to the next one;
    the host lock serialises other machines), so ids are unique and sort in deploy
    order, which cleanup relies on."""
    at = started_at
    for _ in range(60):
        stamp = utc_stamp(at)
        taken = stamp in _ISSUED_STAMPS
        if not taken:
            try:
                taken = history.has_stamp(stamp)
            except (sqlite3.Error, OSError) as exc:
                log.warning("history unreadable while choosing a release id: %s", exc)
                taken = False
        if not taken:
            _ISSUED_STAMPS.add(stamp)
            return f"{stamp}-{sha[:7]}"
        at += 1
    # a stopped clock: the host-side guards refuse to touch a live release
    return f"{utc_stamp(started_at)}-{sha[:7]}"


def secret_env(config: Config) -> set[str]:
    """Environment variables a build (code from the repo) must not see."""
    names = {"SHIPDECK_TOKEN"}
    if config.ssh.password_env:
        names.add(config.ssh.password_env)
    if config.ssh.passphrase_env:
        names.add(config.ssh.passphrase_env)
    if config.relay is not None:
        names.add(config.relay.token_env)
    if config.secrets is not None:  # the app's secrets are for the hosts, not the build
        names.update(config.secrets.env)
    return names


class Source:
    """Fetch, build and package ``ref`` for ``run`` (its events, abort and history)."""

    def __init__(self, run: Run, ref: str, early_fetch: gitmod.EarlyFetch | None = None):
        self.run = run
        self.ref = ref
        #: a mirror fetch already running (see :func:`engine.git.start_fetch`)
        self.early_fetch = early_fetch
        self.sha = ""
        self.release_id = ""
        self.package: buildmod.Package | None = None

    @property
    def config(self) -> Config:
        return self.run.config

    async def prepare(self) -> bool:
        """Run fetch, build and package. False when one failed (``run.stop_reason``
        says why) or the run was aborted; never raises for a git or build error."""
        mirror = await self._fetch()
        if mirror is None or self.run.aborting:
            return False
        cached = buildmod.cached_package(self.sha, self.config.build)
        if cached is not None:
            self.package = cached
            self.run.status("build", SKIPPED, "reused the package of an identical build")
            self.run.status(
                "package", OK, f"reused {cached.sha256[:12]} ({size_text(cached.size)})"
            )
            self.run.log("package", f"reusing {cached.path}")
            return True
        return await self._build(mirror)

    async def _fetch(self) -> Path | None:
        run, cfg = self.run, self.config
        repo = gitmod.normalise_repo(cfg.project.repo, cfg.base_dir)
        run.status("fetch", RUNNING)
        run.log("fetch", f"git fetch {cfg.project.repo} ({self.ref})")
        try:
            mirror, sha, cloned, info = await gitmod.fetch_described(
                repo, self.ref, early=self.early_fetch
            )
        except gitmod.GitError as exc:
            run.log("fetch", str(exc), "stderr")
            run.status("fetch", FAILED, str(exc))
            run.stop_reason = f"fetch failed: {exc}"
            return None
        self.sha = sha
        self.release_id = new_release_id(sha, run.started_at, run.history)
        try:  # recorded now, so even a killed deploy's id is never reused
            run.history.update(run.deploy_id, sha=sha, release_id=self.release_id)
        except Exception as exc:
            log.warning("could not record history: %s", exc)
        meta = {"sha": sha, "release_id": self.release_id, "subject": info["subject"]}
        run.emit(DeployMeta(run.deploy_id, meta=meta))
        run.log("fetch", f"{self.ref} -> {sha[:12]} {info['subject']}")
        detail = f"{sha[:7]} {info['subject'][:60]}" + (" (cloned)" if cloned else "")
        run.status("fetch", OK, detail)
        return mirror

    async def _build(self, mirror: Path) -> bool:
        run, build = self.run, self.config.build
        run.status("build", RUNNING)
        try:
            building = asyncio.ensure_future(
                buildmod.build_package(
                    mirror,
                    self.sha,
                    build,
                    run.line_handler("build"),
                    hide_env=secret_env(self.config),
                )
            )
            aborted = asyncio.ensure_future(run.abort_event.wait())
            await asyncio.wait({building, aborted}, return_when=asyncio.FIRST_COMPLETED)
            aborted.cancel()
            if not building.done():  # abort: stop the build now (its process group is killed)
                building.cancel()
                try:
                    await building
                except (asyncio.CancelledError, Exception):
                    pass
                run.status("build", CANCELLED, "aborted")
                return False
            pkg = self.package = building.result()
        except (buildmod.BuildError, gitmod.GitError) as exc:
            run.log("build", str(exc), "stderr")
            run.status("build", FAILED, str(exc))
            run.stop_reason = f"build failed: {exc}"
            return False
        if build.commands:
            run.status("build", OK, f"{len(build.commands)} command(s)")
        else:
            run.status("build", SKIPPED, "no build commands")
        run.status("package", OK, f"{pkg.sha256[:12]} ({size_text(pkg.size)}, {pkg.files} files)")
        run.log("package", f"{pkg.path}")
        return not run.aborting

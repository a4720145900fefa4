"""Running a release: :class:`Deployment` (fetch, build, package, release in waves)
and :class:`Rollback`. Both build their plan at construction, emit events to their
subscribers while they run, and can be aborted or approved from outside.

    d = Deployment(config)
    d.subscribe(print)
    result = await d.run()        # DeployResult(status, exit_code, summary)

The parts: run control (:mod:`engine.run`), the source (:mod:`engine.source`), one
host's release (:mod:`engine.hostrelease`), rollback (:mod:`engine.rollback`) and
the remote scripts beside their parsers (:mod:`engine.remote`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine import build as buildmod
from engine import git as gitmod
from engine import outgoing
from engine.balancer import drains
from engine.config import Config
from engine.errors import ConnectionLost, Interrupted, LockHeld, StepFailed
from engine.events import CANCELLED, FAILED, PENDING, RUNNING, SKIPPED, ChangesOutgoing, now
from engine.freeze import Override
from engine.history import History
from engine.hostlock import HostState
from engine.hostrelease import Release
from engine.maintenance import announce
from engine.plan import Plan, build_plan
from engine.rollback import Rollback
from engine.run import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_USAGE,
    DeployResult,
    Run,
    Subscriber,
    default_operator,
    once_label,
)
from engine.source import Source
from engine.ssh import Connector, Host, Prompter
from engine.strategy import wave_plan

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "ConnectionLost",
    "DeployResult",
    "Deployment",
    "Interrupted",
    "LockHeld",
    "Prompter",
    "Rollback",
    "StepFailed",
    "Subscriber",
    "default_operator",
]


class Deployment(Run):
    """Deploy ``ref`` (default: the config's) to the selected hosts."""

    kind = "deploy"

    def __init__(
        self,
        config: Config,
        *,
        ref: str | None = None,
        hosts: str | None = None,
        operator: str | None = None,
        prompter: Prompter | None = None,
        force_unlock: bool = False,
        auto_approve: bool = False,
        history: History | None = None,
        early_fetch: gitmod.EarlyFetch | None = None,
        without_relay: bool = False,
        freeze_override: Override | None = None,
    ):
        self.ref = ref or config.project.ref
        self.auto_approve = auto_approve
        #: a mirror fetch already running (see :func:`engine.git.start_fetch`)
        self.early_fetch = early_fetch
        self.source = Source(self, self.ref, early_fetch)
        super().__init__(
            config,
            hosts=hosts,
            operator=operator,
            prompter=prompter,
            force_unlock=force_unlock,
            history=history,
            without_relay=without_relay,
            freeze_override=freeze_override,
        )

    @property
    def sha(self) -> str:
        """The commit being deployed (once fetched)."""
        return self.source.sha

    @property
    def release_id(self) -> str:  # type: ignore[override]
        """``<UTC stamp>-<short sha>`` (once fetched)."""
        return self.source.release_id

    @property
    def package(self) -> buildmod.Package | None:
        """The package shipped (once built or reused)."""
        return self.source.package

    def _build_plan(self) -> Plan:
        waves, labels, gates = wave_plan(self.selected, self.config.deploy)
        if self.auto_approve:
            gates = set()
        plan = build_plan(
            self.deploy_id,
            [[h.name for h in w] for w in waves],
            meta={
                "kind": "deploy",
                "project": self.config.project.name,
                "ref": self.ref,
                "sha": "",
                "release_id": "",
                "operator": self.operator,
                "hosts": len(self.selected),
            },
            build=bool(self.config.build.commands),
            gates=gates,
            wave_labels=labels,
            drain=drains(self.config),
            once=once_label(self.config, waves),
        )
        self._add_hosts(waves)
        return plan

    async def run(self) -> DeployResult:
        """Run the whole deploy. Never raises for host failures; see DeployResult."""
        writer = self._start_history(self.ref)
        self.emit(self.plan.to_event())
        self.announce_freeze_override()
        if self.without_relay:
            self.log("release", "deploying without the relay (--without-relay)", "stderr")
        connector = Connector(
            self.config.ssh,
            self.config.base_dir,
            prompter=self.prompter,
            on_log=lambda m: self.log("release", m),
        )
        self.connector = connector
        self._preconnect(connector)
        # maintenance mode, asked while fetch and build run; said before any host is touched
        maintenance = asyncio.ensure_future(announce(self))
        try:
            prepared = await self.source.prepare()
            await maintenance
            if prepared:
                await self._release(connector)
            else:
                for n in self.plan:
                    if n.status == PENDING and n.key != "release":
                        self.status(n.key, CANCELLED if self.aborting else SKIPPED)
            return await self._finish(self.release_id, self.sha, writer)
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        finally:
            maintenance.cancel()
            for task in self._early.values():
                task.cancel()
            if self._early:
                await asyncio.gather(*self._early.values(), return_exceptions=True)
            self._early.clear()
            if self.early_fetch is not None:
                self.early_fetch.close()
            await connector.close()

    def _preconnect(self, connector: Connector) -> None:
        """Open the first wave's first connections while fetch and build run: their
        handshakes (and the first-command cost) overlap the local work."""
        waves = self.plan.waves()
        if not waves:
            return
        first = [n.label for n in self.plan.kids(waves[0].key) if n.kind == "host"]

        async def early(name: str) -> Host:
            host = await connector.connect(self._spec(name))
            host.warm()  # its shell session opens while fetch and build run too
            return host

        for name in first[: self.config.deploy.parallel]:
            task = asyncio.ensure_future(early(name))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved later
            self._early[name] = task

    # -- release ---------------------------------------------------------------

    def _connected(self, host: Host) -> None:
        host.prepare_upload()  # its channel opens while the host is probed and locked

    def disk_needed(self, st: HostState) -> int:
        pkg = self.package
        if pkg is None:
            return 0
        upload = 0 if st.artifact_sha == pkg.sha256 else pkg.size
        # the files' bytes, and a block per file for what the filesystem rounds up
        return upload + pkg.unpacked + 4096 * pkg.files

    async def _release(self, connector: Connector) -> None:
        self.status("release", RUNNING)
        pkg = self.package
        assert pkg is not None
        release = Release(self.release_id, self.sha, pkg)
        try:
            # every host's lock first; if that stops, the waves only close the hosts
            await self._lock_all(connector, pkg.sha256)
            if not self.stopping:  # what goes out, against what each host runs now
                await outgoing.announce(self, "release", self._to_release())
            await self._run_once(release)
            await self._run_waves(lambda hr: hr.deploy(release))
        finally:
            # hosts locked but never started (stopped, budget, abort): nothing changed
            # there, so no revisions.log line; just their locks back
            await asyncio.shield(self._unlock_all())

    async def _gate(self, index: int) -> None:
        key = f"release/gate-{index}"
        if self.auto_approve and key in self.plan and not (self.aborting or self.stop_reason):
            self.status(key, "ok", "approved (--yes)")
            return
        if key in self.plan and not (self.aborting or self.stop_reason):
            # what approving lets go: the next waves' hosts, against what they run now
            waves = outgoing.waves_after_gate(self.plan, key)
            await outgoing.announce(self, key, self._to_release(w.key for w in waves))
        await super()._gate(index)

    def _to_release(self, waves: Any = None) -> list[HostState]:
        """The hosts (of ``waves``, else of every wave) locked and not failed: those
        the release goes to (their ``current`` is what the lock probe read)."""
        keys = set(waves) if waves is not None else None
        return [
            st
            for key, st in self.states.items()
            if st.locked and st.status != FAILED and (keys is None or key.rsplit("/", 1)[0] in keys)
        ]

    async def preview_outgoing(self) -> None:
        """What this deploy would send out, before it runs (the TUI asks while its
        confirmation is open): the mirror fetched, each host read without a lock or a
        prompt (:func:`engine.outgoing.preview`), emitted as a ChangesOutgoing for
        ``release`` unless the deploy has started meanwhile (it says so itself)."""
        try:
            card = await outgoing.preview(self.config, self.selected, self.ref)
        except Exception as exc:  # the card says it could not tell; nothing else depends on it
            card = outgoing.Outgoing(hosts=len(self.selected), error=str(exc) or type(exc).__name__)
        if self.state.started is None:
            self.emit(
                ChangesOutgoing(self.deploy_id, key="release", changes=card.to_json(), at=now())
            )

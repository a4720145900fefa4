"""Rollback: switch ``current`` back to an earlier release on the selected hosts.

Without ``--to``, the target is the newest release before the current one that
EVERY selected host still has (read over the locked hosts' connections), so no host
fails for lack of it and the fleet ends on one release. Each host is switched,
restarted and checked by its :class:`engine.hostrelease.HostRelease`.
"""

from __future__ import annotations

import asyncio

from engine.balancer import drains
from engine.config import Config
from engine.events import OK, RUNNING, DeployMeta
from engine.freeze import Override
from engine.history import History
from engine.hostlock import HostState
from engine.maintenance import announce
from engine.plan import ROLLBACK_STEPS, Plan, build_plan
from engine.releases import HostReleases, default_target, parse_probe
from engine.remote.revisions import releases_script
from engine.run import DeployResult, Run
from engine.ssh import Connector, Prompter
from engine.strategy import wave_plan


class Rollback(Run):
    """Switch ``current`` back to the previous release (or ``to``) on the selected hosts."""

    kind = "rollback"

    def __init__(
        self,
        config: Config,
        *,
        to: str | None = None,
        hosts: str | None = None,
        operator: str | None = None,
        prompter: Prompter | None = None,
        force_unlock: bool = False,
        history: History | None = None,
        without_relay: bool = False,
        all_at_once: bool = False,
        freeze_override: Override | None = None,
    ):
        self.to = to
        #: switch every host at once instead of following the deploy's waves
        self.all_at_once = all_at_once
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
        self.release_id = to or ""

    def _build_plan(self) -> Plan:
        """The deploy's waves (and failure budget), without its gates: a rollback does
        not wait for approvals. ``all_at_once``: one wave."""
        target = self.to or "previous release"
        if self.all_at_once:
            waves = [list(self.selected)]
            labels = [f"rollback to {target} (all at once)"]
        else:
            waves, labels, _ = wave_plan(self.selected, self.config.deploy)
            if len(waves) == 1:
                labels = [f"rollback to {target}"]
            else:
                labels = [f"{label}: rollback to {target}" for label in labels]
        plan = build_plan(
            self.deploy_id,
            [[h.name for h in w] for w in waves],
            meta={
                "kind": "rollback",
                "project": self.config.project.name,
                "ref": "",
                "sha": "",
                "release_id": self.to or "previous",
                "operator": self.operator,
                "hosts": len(self.selected),
            },
            steps=ROLLBACK_STEPS,
            wave_labels=labels,
            with_source=False,
            drain=drains(self.config),
        )
        self._add_hosts(waves)
        return plan

    async def run(self) -> DeployResult:
        """Run the whole rollback. Never raises for host failures; see DeployResult."""
        writer = self._start_history(self.to or "previous")
        self.emit(self.plan.to_event())
        self.announce_freeze_override()
        if self.without_relay:
            self.log("release", "rolling back without the relay (--without-relay)", "stderr")
        connector = self.connector = Connector(
            self.config.ssh, self.config.base_dir, prompter=self.prompter
        )
        self.status("release", RUNNING)
        try:
            await announce(self)  # maintenance on: said, and the hosts stay out of rotation
            await self._lock_all(connector, None)
            if not self.to and not self.stop_reason and not self.aborting:
                await self._choose_target()
            await self._run_waves(lambda hr: hr.roll_back(self.to))
        finally:
            await asyncio.shield(self._unlock_all())
            await connector.close()
        targets = {st.outcome for st in self.states.values() if st.status == OK}
        return await self._finish(",".join(sorted(targets)), "", writer)

    async def _choose_target(self) -> None:
        """Without ``--to``: the newest release before the current one that EVERY
        selected host still has, so the fleet ends on one release."""
        locked = [st for st in self.states.values() if st.locked and st.host is not None]

        async def read(st: HostState) -> HostReleases:
            assert st.host is not None
            res = await st.host.run(releases_script(st.path), timeout=60)
            return parse_probe(st.name, res.stdout)

        found = await asyncio.gather(*(read(st) for st in locked), return_exceptions=True)
        hosts = [f for f in found if isinstance(f, HostReleases)]
        target = default_target(hosts, total=len(self.states))
        if target is None:
            self.stop_reason = (
                "no earlier release is on every selected host; choose one with --to "
                "(the TUI's picker shows which hosts have each)"
            )
            self.log("release", self.stop_reason, "stderr")
            return
        self.to = target
        self.log("release", f"rolling back to {target}: the newest earlier release on every host")
        self.emit(DeployMeta(self.deploy_id, meta={"release_id": target}))

    def found_sha(self, sha: str) -> None:
        if sha and not self.plan.meta.get("sha"):
            self.emit(DeployMeta(self.deploy_id, meta={"sha": sha}))

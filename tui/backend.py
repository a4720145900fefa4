"""What the app drives: a backend that makes deploy/rollback runners.

A *runner* is anything shaped like ``engine.deploy.Deployment``: ``deploy_id``,
``plan``, ``subscribe(cb)``, ``await run()`` returning a result with ``status`` and
``exit_code``, ``abort(by=, reason=)`` and ``approve(by=, key=)``. The real backend
wraps the engine; the TUI tests' scripted double is tests/tui/fake.py.
No textual here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from engine.operator import default_operator


class Runner(Protocol):
    deploy_id: str
    plan: Any

    def subscribe(self, callback) -> None: ...
    async def run(self) -> Any: ...
    def abort(self, by: str = "", reason: str = "") -> None: ...


class DeckBackend(Protocol):
    project: str
    ref: str
    #: set for a relay spectator: the app only watches
    read_only: bool

    def new_deploy(self, prompter) -> Runner: ...
    def new_rollback(self, to: str | None, prompter) -> Runner: ...
    def new_exec(self, command: str, prompter) -> Runner: ...
    def exec_hosts(self) -> list[str]: ...
    def releases(self) -> list[str]: ...
    async def probe_releases(self, prompter) -> Any: ...
    async def fleet_status(self, prompter) -> Any: ...
    def history(self) -> Any | None: ...


class EngineBackend:
    """The real engine: deploys and rollbacks of one config."""

    read_only = False

    def __init__(
        self,
        config: Any,
        *,
        ref: str | None = None,
        hosts: str | None = None,
        operator: str | None = None,
        force_unlock: bool = False,
        auto_approve: bool = False,
        history_path: Any = None,
    ) -> None:
        self.config = config
        self.ref_override = ref
        self.hosts = hosts
        self.operator = operator or default_operator()
        self.force_unlock = force_unlock
        self.auto_approve = auto_approve
        self.history_path = history_path
        self.project = config.project.name
        self.ref = ref or config.project.ref

    def new_deploy(self, prompter):
        from engine.deploy import Deployment

        return Deployment(
            self.config,
            ref=self.ref_override,
            hosts=self.hosts,
            operator=self.operator,
            prompter=prompter,
            force_unlock=self.force_unlock,
            auto_approve=self.auto_approve,
            history=self.history(),
        )

    def new_rollback(self, to, prompter):
        from engine.deploy import Rollback

        return Rollback(
            self.config,
            to=to,
            hosts=self.hosts,
            operator=self.operator,
            prompter=prompter,
            history=self.history(),
        )

    def history(self):
        from engine.history import History

        return History(self.history_path)

    def releases(self) -> list[str]:
        return list(self.history().releases(self.project))

    @property
    def confirm_exec(self) -> str:
        """``typed`` when an exec needs the host count typed (deploy.confirm_exec)."""
        return str(self.config.deploy.confirm_exec or "")

    def exec_hosts(self, hosts: str | None = None) -> list[str]:
        """The names of the hosts an exec runs on (the selected ones, or ``hosts``'s).
        Raises ConfigError for a pattern that selects none."""
        return [spec.name for spec in self.config.select_hosts(hosts or self.hosts)]

    def new_exec(self, command: str, prompter, *, hosts: str | None = None, cwd: str | None = None):
        """An exec of ``command`` on the selected hosts (or ``hosts``'s), in ``cwd``
        (default current), recorded in history."""
        from engine.fleetexec import ExecRunner

        return ExecRunner(
            self.config,
            self.config.select_hosts(hosts or self.hosts),
            command,
            operator=self.operator,
            cwd=cwd,
            prompter=prompter,
            history=self.history(),
        )

    def aliases(self) -> dict[str, list[str]]:
        """The config's ``[aliases]``: name -> the words of its command line. Raises
        ConfigError (an AliasError) for aliases ``shipdeck`` refuses."""
        from tui.cli import build_parser
        from tui.cli.aliases import commands, read_aliases

        if not self.config.aliases:
            return {}
        env = getattr(self.config, "env", None) or None
        return read_aliases(self.config.path, commands(build_parser()), env)

    async def tail(
        self,
        path: str,
        *,
        lines: int,
        follow: bool,
        on_line: Callable[[str, str, str], None],
        on_note: Callable[[str, str], None],
        prompter: Any = None,
        hosts: str | None = None,
    ) -> dict[str, str]:
        """``shipdeck logs`` on the selected hosts (or ``hosts``'s:
        :func:`engine.fleetlogs.tail_fleet`): host -> why, for hosts whose file could
        not be read."""
        from engine.fleetlogs import tail_fleet

        return await tail_fleet(
            self.config, self.config.select_hosts(hosts or self.hosts), path, lines=lines,
            follow=follow, on_line=on_line, on_note=on_note, prompter=prompter,
        )  # fmt: skip

    async def fleet_status(self, prompter=None, *, hosts: str | None = None):
        """The selected hosts' (or ``hosts``'s) version map (read-only:
        :func:`engine.fleetstatus.fleet_status`)."""
        from engine.fleetstatus import fleet_status

        specs = self.config.select_hosts(hosts or self.hosts)
        return await fleet_status(self.config, specs, prompter)

    async def probe_releases(self, prompter=None):
        """The rollback picker's choices, from the fleet's version map (a release is
        offered when every selected host has it); commit subjects from the local git
        mirror when it has them."""
        import asyncio

        status = await self.fleet_status(prompter)
        result = status.releases()
        shas = {r.sha for h in result.hosts for r in h.revisions if r.sha}
        subjects = await asyncio.to_thread(self._subjects, sorted(shas)[:50])
        return status.rollback_choices(subjects)

    def _subjects(self, shas: list[str]) -> dict[str, str]:
        try:
            from engine.git import commit_info, mirror_path, normalise_repo

            mirror = mirror_path(normalise_repo(self.config.project.repo, self.config.base_dir))
            if not mirror.exists():
                return {}
        except Exception:
            return {}
        out: dict[str, str] = {}
        for sha in shas:
            try:
                out[sha] = commit_info(mirror, sha).get("subject", "")[:200]
            except Exception:
                continue
        return out

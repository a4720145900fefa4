"""A scripted, engine-shaped event source for the TUI's tests and screenshots (a
test double: not part of the product). It speaks the real event vocabulary, splits
waves with the engine's own :func:`engine.strategy.wave_plan`, keeps its state with
the engine's reducer (:class:`engine.state.RunState`) and ends with the summary that
reducer gives, so its events and summaries are the engine's
(tests/tui/test_fake_contract.py checks it). It honours abort, gate approval and the
prompter, like ``engine.deploy.Deployment``. No textual here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import DeployConfig, HostSpec
from engine.events import (
    CANCELLED,
    FAILED,
    OK,
    RUNNING,
    SKIPPED,
    ChangesOutgoing,
    Control,
    DeployFinished,
    DeployMeta,
    Event,
    GateWaiting,
    LogLine,
    NodeStatus,
    Progress,
    Summary,
    Transfer,
)
from engine.handshake import WireStats, wire_summary
from engine.plan import HOST_STEPS, ROLLBACK_STEPS, build_plan
from engine.state import RunState
from engine.strategy import wave_plan


class FakeClock:
    """A clock that only moves when told (frozen for snapshots)."""

    def __init__(self, start: float = 1_780_000_000.0, tick: float = 0.0) -> None:
        self.t = start
        self.tick = tick

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@dataclass
class FakeResult:
    status: str
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)


class FakeRunner:
    """Plays a deploy (or rollback) of ``hosts`` through the real event types."""

    def __init__(
        self,
        hosts: list[str],
        *,
        deploy_id: str = "d-0001",
        kind: str = "deploy",
        to: str | None = None,
        failing: set[str] | frozenset[str] = frozenset(),
        gates: tuple[int, ...] = (),
        delay: float = 0.0,
        clock: FakeClock | None = None,
        prompter: Any = None,
        ask_host_key: str | None = None,
        ask_password: str | None = None,
        operator: str = "alice",
        project: str = "web",
        ref: str = "main",
        batches=("1", "50%", "100%"),
        previous: str = "20261123T101500Z-1b7e0d4",
    ) -> None:
        self.deploy_id = deploy_id
        self.previous = previous
        self.kind = kind
        self.clock = clock or FakeClock()
        self.failing = set(failing)
        self.delay = delay
        self.prompter = prompter
        self.ask_host_key = ask_host_key
        self.ask_password = ask_password
        self.operator = operator
        specs = [HostSpec(name=h, host=h) for h in hosts]
        deploy = DeployConfig(path="/srv/app", batches=tuple(batches), approve=tuple(gates))
        spec_waves, labels, gate_after = wave_plan(specs, deploy)
        waves = [[h.name for h in wave] for wave in spec_waves]
        meta = {
            "project": project,
            "ref": to or ref,
            "sha": "",
            "release_id": to or "",
            "operator": operator,
            "kind": kind,
        }
        rollback = kind == "rollback"
        self.plan = build_plan(
            deploy_id,
            waves,
            meta=meta,
            gates=gate_after,
            steps=ROLLBACK_STEPS if rollback else HOST_STEPS,
            wave_labels=labels,
            with_source=not rollback,
        )
        self.state = RunState(self.plan)
        self.waves = waves
        self.gates = set(gate_after)
        self._subs: list[Any] = []
        self._abort: Control | None = None
        self._approved = asyncio.Event()
        self.events: list[Event] = []

    # -- Deployment API -------------------------------------------------------------

    def subscribe(self, callback) -> None:
        self._subs.append(callback)

    def abort(self, by: str = "", reason: str = "") -> None:
        if self._abort is None:
            self._abort = Control(self.deploy_id, action="abort", by=by, at=self.clock())
            self._emit(self._abort)
            self._approved.set()  # wake a waiting gate so it can cancel

    def approve(self, by: str = "", key: str | None = None) -> None:
        self._emit(Control(self.deploy_id, action="approve", by=by, key=key or "", at=self.clock()))
        self._approved.set()

    # -- playing --------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.state.apply(event)
        self.events.append(event)
        for cb in list(self._subs):
            cb(event)

    def _status(self, key: str, status: str, detail: str = "") -> None:
        self._emit(
            NodeStatus(self.deploy_id, key=key, status=status, at=self.clock(), detail=detail)
        )

    def _log(self, key: str, text: str, stream: str = "stdout") -> None:
        self._emit(LogLine(self.deploy_id, key=key, stream=stream, text=text, at=self.clock()))

    async def _pause(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        await asyncio.sleep(self.delay)

    async def run(self) -> FakeResult:
        self._emit(self.plan.to_event())
        stopped = False
        sha = "3f2a9c1"
        release_id = self.plan.meta.get("release_id") or f"20261124T153500Z-{sha}"
        if self.kind == "deploy":
            for stage, lines in (
                ("fetch", ["mirror up to date", f"main -> {sha}"]),
                ("build", ["$ make dist", "building VERSION 1.4.2", "dist/ ready"]),
                ("package", ["dist.tar.gz 14.2 KB sha256 9c1e…"]),
            ):
                if self._abort:
                    stopped = True
                    break
                self._status(stage, RUNNING)
                for line in lines:
                    await self._pause(0.4)
                    self._log(stage, line)
                if stage == "fetch":
                    self._emit(
                        DeployMeta(self.deploy_id, meta={"sha": sha, "release_id": release_id})
                    )
                self._status(stage, OK)
        failed: dict[str, str] = {}
        started = self.clock()
        if not stopped:
            self._status("release", RUNNING)
            if self.kind == "deploy":
                self._outgoing("release", [h for wave in self.waves for h in wave], sha)
            for number, hosts in enumerate(self.waves, start=1):
                wkey = f"release/wave-{number}"
                if self._abort:
                    stopped = True
                    break
                self._status(wkey, RUNNING)
                results = await asyncio.gather(
                    *(self._host(wkey, h, i) for i, h in enumerate(hosts))
                )
                for host, reason in zip(hosts, results, strict=True):
                    if reason:
                        failed[host] = reason
                wave_failed = any(results)
                self._status(wkey, FAILED if wave_failed else (CANCELLED if self._abort else OK))
                if self._abort:
                    stopped = True
                    break
                if number in self.gates and number < len(self.waves):
                    gkey = f"release/gate-{number}"
                    if self.kind == "deploy":
                        self._outgoing(gkey, self.waves[number], sha)
                    self._emit(GateWaiting(self.deploy_id, key=gkey, at=self.clock()))
                    self._status(gkey, "waiting")
                    await self._approved.wait()
                    self._approved.clear()
                    if self._abort:
                        self._status(gkey, CANCELLED)
                        stopped = True
                        break
                    self._status(gkey, OK)
        if stopped:
            self._cancel_rest()
        if not stopped:
            self._status("release", FAILED if failed else OK)
        reason = f"aborted by {self._abort.by}" if stopped and self._abort else ""
        # no connection: the wire counter of hosts that cost nothing, in the engine's shape
        idle = {h: WireStats() for wave in self.waves for h in wave}
        status, report = self.state.summarize(
            reason=reason,
            release_id=release_id,
            duration=round(self.clock() - started, 3),
            wire=wire_summary(idle),
        )
        summary = report.to_json()
        self._emit(DeployFinished(self.deploy_id, status=status, summary=summary, at=self.clock()))
        return FakeResult(status, report.exit_code or 0, summary)

    def _outgoing(self, key: str, hosts: list[str], sha: str) -> None:
        """What goes out, scripted: every host on the release before, two commits."""
        commits = [
            {
                "sha": sha + "0" * 33,
                "subject": "Tune the pool",
                "author": "ada",
                "date": "2026-11-24",
            },
            {"sha": "9" * 40, "subject": "Bump to 1.4.2", "author": "bob", "date": "2026-11-23"},
        ]
        group = {
            "state": "ahead",
            "base": "1" * 40,
            "release": "20261120T101500Z-1111111",
            "hosts": hosts[:12],
            "host_count": len(hosts),
            "commits": commits,
            "commits_total": 2,
            "files": [
                {"path": "VERSION", "added": 1, "removed": 1},
                {"path": "app/pool.py", "added": 12, "removed": 3},
            ],
            "files_total": 2,
            "added": 13,
            "removed": 4,
        }
        changes = {"target": sha + "0" * 33, "subject": "Tune the pool", "hosts": len(hosts)}
        changes |= {"noop": False, "groups": [group]}
        self._emit(ChangesOutgoing(self.deploy_id, key=key, changes=changes, at=self.clock()))

    def _cancel_rest(self) -> None:
        for node in list(self.plan):
            if node.status in (RUNNING, "waiting", "pending"):
                self._status(node.key, CANCELLED, "aborted" if node.status == RUNNING else "")

    async def _host(self, wkey: str, host: str, index: int) -> str:
        hkey = f"{wkey}/{host}"
        if self._abort:
            return ""
        await asyncio.sleep(self.delay * index * 0.2)
        self._status(hkey, RUNNING)
        steps = [k.rpartition("/")[2] for k in self.plan.children.get(hkey, ())]
        for step in steps:
            key = f"{hkey}/{step}"
            if step == "rollback":
                continue  # only a host that failed after activate rolls back
            if self._abort:
                self._status(key, CANCELLED)
                continue
            self._status(key, RUNNING)
            await self._pause(0.3)
            if step == "connect":
                if self.ask_host_key == host and self.prompter is not None:
                    ok = await self.prompter.confirm_host_key(
                        host, "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8", "ssh-ed25519"
                    )
                    if not ok:
                        return self._fail(hkey, key, steps, "host key rejected by operator")
                if self.ask_password == host and self.prompter is not None:
                    pw = await self.prompter.ask_password(host, "deploy")
                    if not pw:
                        return self._fail(hkey, key, steps, "no password given")
                self._log(key, f"connected to {host}:22 as deploy", "info")
            elif step == "upload":
                total = 14_540
                for done in (4_096, 8_192, 12_288, total):
                    self._emit(Progress(self.deploy_id, key=key, done=done, total=total))
                    await self._pause(0.2)
                self._log(key, f"sent {total} bytes", "info")
                self._emit(
                    Transfer(
                        self.deploy_id, key=key, mode="full", sent=total, total=total, seconds=0.8
                    )
                )
            elif step == "restart":
                self._log(key, "$ systemctl --user restart web")
            elif step == "health":
                if host in self.failing:
                    why = "curl: (7) Failed to connect to 127.0.0.1 port 8080"
                    self._log(key, why, "stderr")
                    detail = f"unhealthy after 3 attempts in 30s: {why}"
                    self._status(key, FAILED, detail)
                    return await self._roll_back(hkey, steps, detail)
                self._log(key, '{"status": "ok", "version": "1.4.2"}')
            self._status(key, OK)
        if self._abort:
            self._status(f"{hkey}/rollback", SKIPPED)
            self._status(hkey, CANCELLED, "aborted")
            return ""
        if f"{hkey}/rollback" in self.plan:
            self._status(f"{hkey}/rollback", SKIPPED)
        self._status(hkey, OK)
        return ""

    async def _roll_back(self, hkey: str, steps: list[str], why: str) -> str:
        """As the engine does for a host unhealthy after activate: switch it back."""
        key, to = f"{hkey}/rollback", self.previous
        self._status(key, RUNNING, f"to {to}")
        self._log(key, f"rolling back to {to}", "stderr")
        await self._pause(0.6)
        self._log(key, f"current -> releases/{to} (rolled back)", "info")
        self._log(key, f"rollback to {to}: healthy", "info")
        self._status(key, OK, f"to {to}")
        for step in steps[steps.index("rollback") + 1 :]:
            self._status(f"{hkey}/{step}", SKIPPED)
        reason = f"{why}; rolled back to {to} (healthy)"
        self._status(hkey, FAILED, reason)
        return reason

    def _fail(self, hkey: str, key: str, steps: list[str], reason: str) -> str:
        self._status(key, FAILED, reason)
        after = steps[steps.index(key.rpartition("/")[2]) + 1 :]
        for step in after:
            self._status(f"{hkey}/{step}", SKIPPED)
        self._status(hkey, FAILED, reason)
        return reason


#: where transcript dirs are made (None: the system temp dir); tests point it at theirs
HISTORY_ROOT: str | None = None


class FakeHistory:
    """In-memory history with transcripts written to a temp dir."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.hosts: dict[str, list[dict[str, Any]]] = {}
        self.transcripts: dict[str, Path] = {}
        self._tmp: Path | None = None

    @property
    def _dir(self) -> Path:
        """Made on the first transcript; removed when this history goes (or at exit)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="shipdeck-fake-history-", dir=HISTORY_ROOT))
            weakref.finalize(self, shutil.rmtree, self._tmp, True)
        return self._tmp

    def record(self, runner: FakeRunner, result: FakeResult) -> None:
        meta = runner.plan.meta
        failed = Summary.from_json(result.summary).failures
        hosts = [h.label for h in runner.plan.hosts()]
        self.rows.insert(
            0,
            {
                "id": runner.deploy_id,
                "kind": runner.kind,
                "project": meta.get("project"),
                "ref": meta.get("ref"),
                "sha": "3f2a9c1",
                "release_id": result.summary.get("release_id"),
                "operator": runner.operator,
                "started": runner.events[0].to_json().get("at", 0) if runner.events else 0,
                "ended": runner.clock(),
                "status": result.status,
                "hosts_ok": len(hosts) - len(failed),
                "hosts_failed": len(failed),
            },
        )
        self.hosts[runner.deploy_id] = [
            {
                "host": h,
                "status": "failed"
                if h in failed
                else ("ok" if result.status != "stopped" else "cancelled"),
                "detail": failed.get(h, ""),
                "release_id": result.summary.get("release_id"),
            }
            for h in hosts
        ]
        path = self._dir / f"{runner.deploy_id}.jsonl"
        path.write_text("".join(json.dumps(e.to_json()) + "\n" for e in runner.events))
        self.transcripts[runner.deploy_id] = path

    def list(self, n: int = 20) -> list[dict[str, Any]]:
        return self.rows[:n]

    def get(self, deploy_id: str) -> dict[str, Any] | None:
        for row in self.rows:
            if row["id"] == deploy_id:
                return {**row, "hosts": self.hosts.get(deploy_id, [])}
        return None

    def transcript(self, deploy_id: str) -> Path | None:
        return self.transcripts.get(deploy_id)

    def releases(self, project: str) -> list[str]:
        return [
            r["release_id"]
            for r in self.rows
            if r["status"] == OK and r["kind"] == "deploy" and r["release_id"]
        ]


class FakeExecRunner:
    """An exec as :func:`engine.fleetexec.run_exec` plays it (its plan, a running and
    an outcome status per host, one output line each), with no hosts: ``failing``
    hosts exit 1."""

    def __init__(self, hosts: list[str], command: str, *, failing=frozenset(), clock=None):
        from engine.fleetexec import exec_plan

        self.clock = clock or FakeClock()
        self.deploy_id = "exec-0001"
        self.command = command
        self.failing = set(failing)
        self.specs = [HostSpec(name=h, host=h) for h in hosts]
        self.waves, labels, _ = wave_plan(
            self.specs, DeployConfig(path="/srv/app", batches=("100%",))
        )
        self.plan = exec_plan(self.deploy_id, self.waves, command, labels=labels)
        self.subscribers: list = []

    def subscribe(self, callback) -> None:
        self.subscribers.append(callback)

    def unsubscribe(self, callback) -> None:
        if callback in self.subscribers:
            self.subscribers.remove(callback)

    def _emit(self, event) -> None:
        for callback in self.subscribers:
            callback(event)

    def abort(self, by: str = "", reason: str = "") -> None:
        pass

    def approve(self, by: str = "", key: str | None = None) -> None:
        pass

    async def run(self) -> FakeResult:
        from engine.plan import host_key

        now, did = self.clock, self.deploy_id
        self._emit(self.plan.to_event())
        self._emit(NodeStatus(did, key="release", status=RUNNING, at=now()))
        failed = {}
        for number, wave in enumerate(self.waves, 1):
            self._emit(NodeStatus(did, key=f"release/wave-{number}", status=RUNNING, at=now()))
            for spec in wave:
                key = host_key(number, spec.name)
                code = 1 if spec.name in self.failing else 0
                self._emit(NodeStatus(did, key=key, status=RUNNING, at=now()))
                self._emit(LogLine(did, key=key, text=f"{spec.name}: up 3 days", at=now()))
                status = FAILED if code else OK
                detail = f"exit {code}"  # the duration is the node's times
                if code:
                    failed[spec.name] = f"{detail} in 0.0s"  # as the failure budget has it
                self._emit(NodeStatus(did, key=key, status=status, at=now(), detail=detail))
                await asyncio.sleep(0)
            self._emit(NodeStatus(did, key=f"release/wave-{number}", status=OK, at=now()))
        status = FAILED if failed else OK
        self._emit(NodeStatus(did, key="release", status=status, at=now()))
        summary = Summary(
            hosts=len(self.specs),
            ok=len(self.specs) - len(failed),
            failed=len(failed),
            failures=failed,
            exit_code=1 if failed else 0,
        ).to_json()
        self._emit(DeployFinished(did, status=status, summary=summary, at=now()))
        return FakeResult(status, 1 if failed else 0, summary)


class FakeBackend:
    """A :class:`tui.backend.DeckBackend` made of :class:`FakeRunner` s."""

    read_only = False

    def __init__(
        self,
        hosts: list[str] | int = 8,
        *,
        clock: FakeClock | None = None,
        delay: float = 0.0,
        failing: set[str] = frozenset(),
        gates: tuple[int, ...] = (),
        ask_host_key: str | None = None,
        ask_password: str | None = None,
        operator: str = "alice",
        releases: list[str] | None = None,
        project: str = "web",
        ref: str = "main",
        drifted: set[str] | frozenset[str] = frozenset(),
        confirm_exec: str = "",
        aliases: dict[str, str] | None = None,
    ) -> None:
        self._aliases = dict(aliases or {})
        self.drifted = set(drifted)
        self.confirm_exec = confirm_exec
        self.execs: list[FakeExecRunner] = []
        self.hosts = (
            [f"web{i}" for i in range(1, hosts + 1)] if isinstance(hosts, int) else list(hosts)
        )
        self.clock = clock or FakeClock()
        self.delay = delay
        self.failing = set(failing)
        self.gates = gates
        self.ask_host_key = ask_host_key
        self.ask_password = ask_password
        self.operator = operator
        self.project = project
        self.ref = ref
        self._history = FakeHistory()
        self._releases = list(
            releases
            or ["20261123T101500Z-1b7e0d4", "20261121T120000Z-77d0e3b", "20261120T090000Z-a41c2f9"]
        )
        self.runs: list[FakeRunner] = []
        self._n = 0

    def _runner(self, kind: str, to: str | None, prompter) -> FakeRunner:
        self._n += 1
        runner = FakeRunner(
            self.hosts,
            deploy_id=f"{'rb' if kind == 'rollback' else 'd'}-{self._n:04d}",
            kind=kind,
            to=to,
            failing=self.failing if kind == "deploy" else set(),
            gates=self.gates if kind == "deploy" else (),
            delay=self.delay,
            clock=self.clock,
            prompter=prompter,
            ask_host_key=self.ask_host_key,
            ask_password=self.ask_password,
            operator=self.operator,
            project=self.project,
            ref=self.ref,
        )
        self.runs.append(runner)
        original = runner.run

        async def run_and_record() -> FakeResult:
            result = await original()
            self._history.record(runner, result)
            return result

        runner.run = run_and_record  # type: ignore[method-assign]
        return runner

    def new_deploy(self, prompter) -> FakeRunner:
        return self._runner("deploy", None, prompter)

    def new_rollback(self, to: str | None, prompter) -> FakeRunner:
        return self._runner("rollback", to or (self.releases() or [None])[0], prompter)

    def releases(self) -> list[str]:
        return self._history.releases(self.project) + self._releases

    def exec_hosts(self, hosts: str | None = None) -> list[str]:
        import fnmatch

        return [h for h in self.hosts if not hosts or fnmatch.fnmatchcase(h, hosts)]

    def new_exec(self, command: str, prompter, *, hosts=None, cwd=None) -> FakeExecRunner:
        names = self.exec_hosts(hosts)
        runner = FakeExecRunner(names, command, failing=self.failing, clock=self.clock)
        self.execs.append(runner)
        return runner

    def aliases(self) -> dict[str, list[str]]:
        import shlex

        return {name: shlex.split(line) for name, line in self._aliases.items()}

    async def tail(self, path, *, lines, follow, on_line, on_note, prompter=None, hosts=None):
        """Like the engine's tail: ``lines`` lines per host, then (following) the first
        host disconnects and is reconnected, a line each, and it waits to be stopped;
        a path with "missing" in it cannot be read."""
        if "missing" in path:
            return {h: f"tail: {path}: No such file or directory" for h in self.hosts}
        for n in range(lines):
            for host in self.hosts:
                on_line(host, "stdout", f"line {n}")
        if not follow:
            return {}
        first = self.hosts[0]
        on_note(first, "disconnected (connection lost); reconnecting")
        self.tail_gate = asyncio.Event()
        await self.tail_gate.wait()  # the test lets it reconnect
        on_note(first, "reconnected")
        on_line(first, "stdout", "after the reconnect")
        await asyncio.Event().wait()  # until stopped
        return {}

    async def fleet_status(self, prompter=None, *, hosts=None):
        """Like the engine's version map: every host has the releases deployed ok,
        except the oldest, which cleanup removed from all hosts but the first; every
        host runs the newest, except the ``drifted`` ones, still on the one before."""
        from engine.fleetstatus import FleetStatus, HostStatus, mark_drift
        from engine.releases import Revision

        ids = self.releases()
        when = {
            rid: f"{rid[0:4]}-{rid[4:6]}-{rid[6:8]}T{rid[9:11]}:{rid[11:13]}:00Z" for rid in ids
        }
        revisions = tuple(
            Revision(when[rid], "deploy", rid, rid.rpartition("-")[2], "bob", "ok")
            for rid in reversed(ids)
        )
        hosts = []
        for i, name in enumerate(self.exec_hosts(hosts)):
            have = tuple(ids if i == 0 else ids[:-1])
            current = ids[1] if name in self.drifted and len(ids) > 1 else (ids[0] if ids else "")
            rev = next((r for r in revisions if r.release == current), None)
            hosts.append(
                HostStatus(
                    name,
                    current=current,
                    sha=rev.sha if rev else "",
                    subject=self._subjects().get(rev.sha, "") if rev else "",
                    deployed_by=rev.operator if rev else "",
                    deployed_at=rev.at if rev else "",
                    kind="deploy",
                    releases_kept=len(have),
                    releases=have,
                    revisions=revisions,
                )
            )
        return FleetStatus(hosts, mark_drift(hosts))

    def _subjects(self) -> dict[str, str]:
        ids = self.releases()
        return {rid.rpartition("-")[2]: f"Release {n}" for n, rid in enumerate(reversed(ids), 1)}

    async def probe_releases(self, prompter=None):
        """The picker's choices from the version map, as the engine's backend does."""
        status = await self.fleet_status(prompter)
        return status.rollback_choices(self._subjects())

    def history(self) -> FakeHistory:
        return self._history

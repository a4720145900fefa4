"""The shipdeck Textual app: stage tree, log of the selected node, chat.

Events from the engine (or a relay, or a scripted source) are buffered in a plain
:class:`~tui.model.DeckModel` and applied every ``flush_interval`` seconds inside
``batch_update()``; only dirty nodes on screen are relabelled.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from textual import on
from textual.app import App
from textual.widgets import Tree
from textual.worker import Worker, WorkerState

from engine.events import OK, ChatLine, MaintenanceChanged
from engine.freeze import Frozen
from engine.state import RunState
from tui import actions
from tui.app_fleet import FleetActions
from tui.backend import default_operator
from tui.chat import ChatBackend
from tui.commands import DeckCommands
from tui.fleetlines import FleetLines, StatusOf
from tui.messages import ChatReceived, ChatSubmitted, DeployDone, PresenceChanged, RelayStatus
from tui.model import DeckModel, LogEntry
from tui.render import control_note, maintenance_text
from tui.screens.main import MainScreen
from tui.screens.modals import TuiPrompter
from tui.widgets.chat_pane import ChatPane
from tui.widgets.fleet_log import FleetLogPane
from tui.widgets.header import HeaderFacts, identity_line, state_line
from tui.widgets.log_pane import LogPane
from tui.widgets.stage_tree import StageTree

#: tail lines kept between two flushes (a burst beyond it keeps the newest)
TAIL_PENDING = 20_000


class ShipdeckApp(FleetActions, App[int]):
    """Drives one backend (engine, fake) or watches a relay room (``backend=None``)."""

    CSS_PATH = "app.tcss"
    TITLE = "shipdeck"
    COMMANDS = App.COMMANDS | {DeckCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]

    def __init__(
        self,
        backend: Any = None,
        *,
        chat: ChatBackend | None = None,
        operator: str | None = None,
        clock: Callable[[], float] = time.time,
        flush_interval: float = 0.1,
        cursor_blink: bool = True,
        watch: str | None = None,
        start_message: str | None = None,
        tail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.chat = chat
        self.operator = operator or default_operator()
        self.clock = clock
        self.flush_interval = flush_interval
        self.cursor_blink = cursor_blink
        self.watch_room = watch
        self.start_message = start_message
        self.model = DeckModel(clock=clock)
        #: the merged fleet log's ring (every host's lines, bounded)
        self.fleet_lines = FleetLines()
        #: a tail's lines (shipdeck logs) waiting for the next flush, bounded
        self.tail_pending: deque[tuple[str, str, str, str, float]] = deque(maxlen=TAIL_PENDING)
        self.tail_worker: Worker | None = None
        #: hosts whose tail is disconnected now (the engine reconnects them)
        self.tail_down: set[str] = set()
        #: started by ``shipdeck logs``: q quits (stopping the tail)
        self.tail_only = tail is not None
        self._start_tail = tail
        #: node key -> (host, step) tags of the merged log, for the current plan
        self._tags: dict[str, tuple[str, str]] = {}
        self.prompter = TuiPrompter(self)
        self.runner: Any = None
        self.runner_used = False
        self.deploying = False
        self.last_exit: int | None = None
        self.last_status: str | None = None
        self.following = False
        self.filter_text = ""
        self.quit_pending = False
        self.relay_status = "not configured" if chat is None else "connecting"
        self.presence: list[str] = []
        self.flushes = 0
        #: the first paint is done: the tree is built and focused (tests wait for it)
        self.painted = False
        self._header_key: tuple | None = None
        #: the maintenance change a notice was shown for
        self._maintenance_noticed: Any = None
        #: relay spectator: ``async watcher(feed)`` delivering events to ``feed``
        self.watcher: Callable[[Callable[[Any], None]], Any] | None = None

    # -- widgets --------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """An action that does not work in this mode (a spectator cannot deploy) is
        neither in the footer nor run (tui/actions.py says which modes)."""
        known = actions.by_id(action)
        if known is not None and self.mode not in known.modes:
            return False
        return True

    @property
    def mode(self) -> str:
        """``operator`` (runs deploys) or ``spectator`` (watches a relay room)."""
        if self.backend is None or getattr(self.backend, "read_only", False):
            return actions.SPECTATOR
        return actions.OPERATOR

    @property
    def tree(self) -> StageTree:
        return self.main.stage_tree

    @property
    def log_pane(self) -> LogPane:
        return self.main.log_pane_w

    @property
    def chat_pane(self) -> ChatPane:
        return self.main.chat_pane_w

    @property
    def fleet_pane(self) -> FleetLogPane:
        return self.main.fleet_pane_w

    @property
    def fleet_shown(self) -> bool:
        """Whether the merged fleet log is shown (in the per-node log's place)."""
        return self.is_mounted_main and self.main.has_class("-fleet")

    def host_status_lookup(self) -> StatusOf:
        """host name -> its status now, in the shown run (the fleet log's status filter)."""
        status = {h.label: h.status for h in self.model.plan.hosts()}
        return status.get

    def _tag(self, key: str) -> tuple[str, str]:
        """(host, step) of a log line's node: a step's host and name, a host's name,
        a stage's name as the step."""
        tag = self._tags.get(key)
        if tag is None:
            plan = self.model.plan
            node = plan.nodes.get(key)
            if node is None:
                tag = (key, "")
            elif node.kind == "host":
                tag = (node.label, "")
            elif node.kind == "step" and node.parent in plan.nodes:
                tag = (plan.nodes[node.parent].label, node.label)
            else:
                tag = ("", node.label)
            if len(self._tags) > 50_000:
                self._tags.clear()
            self._tags[key] = tag
        return tag

    def _fleet_source(self) -> None:
        """The fleet log's title names the run its lines now come from."""
        meta = self.model.meta
        kind = str(meta.get("kind") or "deploy")
        command = str(meta.get("command") or "")
        source = f"{kind}: {command}" if command else kind
        if not self.tailing and self.fleet_pane.source != source:
            self.fleet_pane.source = source[:60]
            self.fleet_pane.update_title()

    def fleet_add(self, entries: list[LogEntry]) -> None:
        """A flush's log lines into the merged fleet log (kept when it is hidden)."""
        if not entries:
            return
        tag = self._tag
        self.fleet_pane.append((*tag(e.key), e.stream, e.text, e.at) for e in entries)

    def on_mount(self) -> None:
        self.main = MainScreen(self)
        self.push_screen(self.main)
        self.set_interval(self.flush_interval, self.flush, name="flush")
        self.set_interval(1.0, self.tick, name="tick")
        if (
            self.backend is not None
            and not getattr(self.backend, "read_only", False)
            and not self.tail_only  # shipdeck logs: no deploy planned until d
        ):
            self.prepare(lambda: self.backend.new_deploy(self.prompter))
        if self.watcher is not None:  # a spectator: the room's deploy events feed the tree
            self.run_worker(
                self.watcher(self.feed), group="relay", name="relay watch", exit_on_error=False
            )
        elif self.chat is not None and hasattr(self.chat, "set_feed"):
            # an operator's room: only its maintenance changes reach this tree
            self.chat.set_feed(self._room_feed)
        if self.chat is not None:
            self.run_worker(
                self._chat_loop(), group="relay", name="relay chat", exit_on_error=False
            )
        self.call_after_refresh(self._first_paint)

    def _first_paint(self) -> None:
        tree = self.tree
        tree.rebuild()
        tree.cursor_line = 0
        self.log_pane.show(tree.selected_key)
        tree.focus()
        if self.start_message:
            self.chat_pane.add_system(self.start_message)
        self.update_header()
        self.painted = True
        if self._start_tail is not None:  # shipdeck logs at a terminal
            self.start_tail(**self._start_tail)

    # -- runners ------------------------------------------------------------------

    def prepare(self, make: Callable[[], Any]) -> bool:
        """Create a runner (not started) and draw its plan."""
        try:
            runner = make()
        except Exception as exc:  # config/plan errors: a notice, never a traceback
            self.notify(
                str(exc) or type(exc).__name__, title="cannot plan", severity="error", timeout=10
            )
            return False
        self.runner = runner
        self.runner_used = False
        runner.subscribe(self.model.push)
        self.model.pending.clear()
        self.model.load(runner.plan)
        if self.is_mounted_main:
            self.tree.rebuild()
            self.tree.cursor_line = 0
            self.log_pane.show(self.tree.selected_key)
            self.update_header()
        return True

    @property
    def is_mounted_main(self) -> bool:
        return hasattr(self, "main") and self.main.is_mounted and not self._closing

    def start_runner(self) -> None:
        runner = self.runner
        self.runner_used = True
        self.deploying = True
        self.last_exit = None
        kind = self.model.meta.get("kind", "deploy")
        self.run_worker(self._run(runner), group="deploy", name=kind, exit_on_error=False)
        self.update_header()

    async def _run(self, runner: Any) -> None:
        detach = None
        try:
            attach = getattr(self.chat, "attach", None)
            if attach is not None and self.backend is not None:
                # with a relay: take the room's deploy lock and publish the run
                try:
                    detach = await attach(runner)
                except Exception as exc:
                    holder = getattr(exc, "holder", None) or {}
                    why = (
                        f"the room's deploy lock is held by {holder.get('operator')}: {holder.get('reason', '')}"
                        if holder
                        else str(exc)
                    )
                    self.notify(why, title="deploy refused", severity="error", timeout=10)
                    self.post_message(DeployDone("stopped", 3))
                    return
            try:
                result = await runner.run()
            except Frozen as exc:  # a [[freeze]] window: refused before anything ran
                self.notify(str(exc), title="deploy refused", severity="error", timeout=15)
                self.post_message(DeployDone("stopped", int(exc.exit_code)))
                return
            finally:
                if detach is not None:
                    await detach()
        finally:
            self.deploying = False
        self.post_message(DeployDone(str(result.status), int(result.exit_code)))

    @on(DeployDone)
    def _deploy_done(self, message: DeployDone) -> None:
        self.flush()
        self.last_exit = message.exit_code
        self.last_status = message.status
        kind = self.model.meta.get("kind", "deploy")
        if message.status == OK:
            self.notify(f"{kind} finished: every host ok", title=kind)
        elif message.status == "failed":
            failed = self.model.failed_hosts()
            self.notify(
                f"{kind} finished with {len(failed)} failed host(s): {', '.join(failed[:5])}",
                title=kind,
                severity="warning",
                timeout=8,
            )
        else:
            self.notify(
                f"{kind} stopped (exit {message.exit_code})", title=kind, severity="warning"
            )
        self.update_header()
        if self.quit_pending:
            self.exit(self.last_exit)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR:
            if worker.group == "deploy":
                self.deploying = False
                self.last_exit = 3
                self.last_status = "error"
                self.update_header()
            error = worker.error
            self.notify(
                f"{type(error).__name__}: {error}",
                title=f"{worker.name or worker.group} failed",
                severity="error",
                timeout=10,
            )
            if worker.group == "deploy" and self.quit_pending:
                self.exit(self.last_exit)

    # -- event feed -------------------------------------------------------------------

    def feed(self, event: Any) -> None:
        """Give the app one event from outside (relay spectator, benchmark)."""
        self.model.push(event)

    def _room_feed(self, item: Any) -> None:
        """The room as an operator's app reads it: maintenance switched on or off by
        anyone (``shipdeck maintenance``, another run) shows in the header while this
        app waits, as it does for a watcher; the room's deploys are not this tree's."""
        if isinstance(item, RunState):  # joining: the room's snapshot
            item = item.maintenance
        if isinstance(item, MaintenanceChanged):
            self.model.push(item)

    def flush(self) -> None:
        """Apply buffered events; relabel visible dirty nodes; append log lines."""
        model = self.model
        if self.tail_pending and self.is_mounted_main:
            lines = list(self.tail_pending)
            self.tail_pending.clear()
            self.fleet_pane.append(lines)
            self.fleet_pane.set_down(self.tail_down)
        if not model.pending or not self.is_mounted_main:
            return
        self.flushes += 1
        with self.batch_update():
            batch = model.apply_pending()
            tree = self.tree
            if batch.plan_changed:
                self._tags.clear()
                self._fleet_source()
                self._apply_filter(rebuild=False)
                tree.rebuild()
                self.log_pane.show(tree.selected_key)
            if self.following:
                self._follow()
            tree.relabel_visible()
            self.log_pane.add(batch.lines)
            self.fleet_add(batch.lines)
            if self.log_pane.key in batch.dirty:
                self.log_pane.refresh_title()
            for gate in batch.gates:
                node = model.plan.nodes.get(gate)
                self.notify(
                    f"{node.label if node else gate}: press g to approve the next wave",
                    title="gate waiting",
                    timeout=8,
                )
            for control in batch.controls:
                self.chat_pane.add(
                    ChatLine(
                        control.by or "?",
                        control_note(control),
                        at=control.at or time.time(),
                        system=True,
                    )
                )
            self._notice_maintenance()
            self.update_header()

    def _notice_maintenance(self) -> None:
        """A notice, once per change, when maintenance is on (the header keeps saying it)."""
        on = self.model.state.maintenance_on
        if on is not None and on is not self._maintenance_noticed:
            self._maintenance_noticed = on
            self.notify(maintenance_text(on), title="maintenance", severity="warning", timeout=10)

    def tick(self) -> None:
        """Once a second: elapsed times of running nodes, live status filters."""
        if not self.is_mounted_main:
            return
        if self.filter_text in ("failed", "running", "ok", "pending", "cancelled", "skipped"):
            keep = self.model.hosts_matching(self.filter_text)
            if keep != self.tree.host_filter:
                self.tree.host_filter = keep
                self.tree.rebuild()
        self.fleet_pane.refilter()
        with self.batch_update():
            self.tree.relabel_visible(running_too=True)
            self.update_header()

    def _follow(self) -> None:
        key = self.model.latest_running
        if not key:
            return
        target = self.model.state.host_of(key) or key
        if self.tree.selected_key != target:
            self.tree.select_key(target)

    # -- header -----------------------------------------------------------------------

    def update_header(self) -> None:
        """Redraw the header if what it says changed."""
        if not self.is_mounted_main:
            return
        facts = self.header_facts()
        ident, state = identity_line(facts), state_line(facts)
        key = (ident.plain, state.plain, len(ident.spans), len(state.spans))
        if key != self._header_key:
            self._header_key = key
            self.main.header_w.show(ident, state)

    def header_facts(self) -> HeaderFacts:
        """What the header says now, gathered from the model and the app's modes."""
        model = self.model
        meta = model.meta
        finished = model.finished
        watched = self.chat is not None or bool(self.watch_room)
        project, ref = self._project_ref()
        return HeaderFacts(
            operator=str(meta.get("operator") or self.operator),
            project=project,
            env=self._env(),
            ref=ref,
            sha=str(meta.get("sha") or ""),
            release_id=str(meta.get("release_id") or ""),
            relay=self.relay_status if watched else None,
            presence=tuple(self.presence),
            kind=meta.get("kind", "deploy"),
            command=str(meta.get("command") or ""),
            cwd=str(meta.get("cwd") or ""),
            finished=finished.status if finished is not None else None,
            exit_code=self._exit_code(),
            running=self.deploying or model.running,
            totals=model.host_totals() if model.plan.nodes else None,
            spectator=self.backend is None,
            elapsed=model.deploy_elapsed(),
            gate_waiting=bool(model.waiting_gate),
            following=self.following,
            filter_text=self.filter_text,
            filtered=len(self.tree.host_filter or ()),
            maintenance=model.state.maintenance_on,
        )

    def _env(self) -> str:
        """The environment of the run: the plan's, else the backend config's."""
        env = self.model.meta.get("env") or getattr(
            getattr(self.backend, "config", None), "env", ""
        )
        return str(env or "")

    def _exit_code(self) -> int | None:
        """The finished run's exit code, else the last command's."""
        finished = self.model.finished
        code = finished.report.exit_code if finished is not None else None
        return self.last_exit if code is None else code

    def _project_ref(self) -> tuple[str, str]:
        """The project and ref of the run: the plan's, else the backend's (else the
        watched room's name as the project)."""
        meta = self.model.meta
        backend = self.backend
        project = meta.get("project") or getattr(backend, "project", "") or self.watch_room
        ref = meta.get("ref") or getattr(backend, "ref", "")
        return str(project or ""), str(ref or "")

    # -- selection --------------------------------------------------------------------

    @on(Tree.NodeHighlighted, "#tree")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        if self.is_mounted_main:
            self.log_pane.show(event.node.data)

    # -- chat -----------------------------------------------------------------------------

    async def _chat_loop(self) -> None:
        chat = self.chat
        assert chat is not None
        await chat.start(
            lambda m: self.post_message(ChatReceived(m)),
            lambda names: self.post_message(PresenceChanged(list(names))),
            lambda status: self.post_message(RelayStatus(status)),
        )

    @on(ChatReceived)
    def _chat_received(self, message: ChatReceived) -> None:
        self.chat_pane.add(message.message)

    @on(PresenceChanged)
    def _presence(self, message: PresenceChanged) -> None:
        self.presence = message.names
        self.update_header()

    @on(RelayStatus)
    def _relay_status(self, message: RelayStatus) -> None:
        self.relay_status = message.status
        self.update_header()

    @on(ChatSubmitted)
    def _chat_submitted(self, message: ChatSubmitted) -> None:
        if self.chat is None:
            return
        self.run_worker(
            self.chat.send(message.text), group="relay", name="send chat", exit_on_error=False
        )

    async def action_quit(self) -> None:
        self.action_quit_safely()

"""What each key of the one action list (tui/actions.py) does: deploy, abort,
approve, roll back, filter, follow, chat, history, help and quit.

:class:`DeckActions` is a part of :class:`tui.app.ShipdeckApp` (which wires the
widgets, runners, event feed and chat); the state it reads and changes is the app's,
declared below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Input

from engine.approvals import ApprovalRefused
from engine.events import FAILED
from tui.render import plural
from tui.screens.help import HelpScreen
from tui.screens.history import HistoryScreen
from tui.screens.modals import ConfirmScreen, FilterScreen, RollbackScreen, gate_body

if TYPE_CHECKING:
    from tui.chat import ChatBackend
    from tui.model import DeckModel
    from tui.widgets.chat_pane import ChatPane
    from tui.widgets.stage_tree import StageTree


class DeckActions:
    """The app's ``action_*`` methods and the confirmations they ask for."""

    # the app's state, set by ShipdeckApp.__init__
    backend: Any
    chat: ChatBackend | None
    operator: str
    cursor_blink: bool
    model: DeckModel
    prompter: Any
    runner: Any
    runner_used: bool
    deploying: bool
    last_exit: int | None
    following: bool
    filter_text: str
    quit_pending: bool
    # the app's widgets and methods this part uses
    tree: StageTree
    log_pane: Any
    chat_pane: ChatPane
    mode: str
    notify: Callable[..., None]
    push_screen: Callable[..., Any]
    run_worker: Callable[..., Any]
    exit: Callable[..., None]
    prepare: Callable[[Callable[[], Any]], bool]
    start_runner: Callable[[], None]
    update_header: Callable[[], None]
    _follow: Callable[[], None]
    main: Any
    clock: Callable[[], float]
    tail_worker: Any
    tail_pending: Any
    tail_down: set[str]
    tail_only: bool
    fleet_lines: Any
    fleet_pane: Any
    fleet_shown: bool

    def _plan_summary(self, title: str) -> Text:
        model = self.model
        meta = model.meta
        hosts = model.plan.hosts()
        waves = model.plan.waves()
        text = Text()
        text.append(f"{meta.get('project', '')} ", style="bold")
        text.append(f"{meta.get('ref', '')}")
        if meta.get("sha"):
            text.append(f" ({str(meta['sha'])[:7]})", style="yellow")
        text.append(f"\n{plural(len(hosts), 'host')} in {plural(len(waves), 'wave')}\n", style="bold")
        for wave in waves:
            names = [model.plan.nodes[k].label for k in model.plan.children.get(wave.key, ())]
            shown = ", ".join(names[:6]) + (f", … +{len(names) - 6}" if len(names) > 6 else "")
            text.append(f"  {wave.label}: ", style="cyan")
            text.append(f"{shown}\n")  # the wave's label says how many hosts
        gates = [n for n in model.plan if n.kind == "gate"]
        if gates:
            text.append(f"  {len(gates)} approval gate(s)\n", style="magenta")
        text.append(f"\noperator {self.operator}", style="dim")
        text.append("\nEnter confirms · Esc cancels", style="bold")
        return text

    def _ready_runner(self, make: Callable[[], Any]) -> bool:
        if self.runner is not None and not self.runner_used:
            return True
        return self.prepare(make)

    def action_deploy(self) -> None:
        if self.backend is None or getattr(self.backend, "read_only", False):
            self.notify(
                "watching a relay room: only the operator running the deploy can start it",
                severity="warning",
            )
            return
        if self.deploying:
            self.notify("a deploy is already running", severity="warning")
            return
        if (
            self.runner is not None
            and not self.runner_used
            and self.model.meta.get("kind") != "deploy"
        ):
            self.runner = None
        if not self._ready_runner(lambda: self.backend.new_deploy(self.prompter)):
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.start_runner()

        outgoing = None
        preview = getattr(self.runner, "preview_outgoing", None)
        if preview is not None:  # what goes out, read while the question is asked
            self.run_worker(preview(), group="probe", name="what goes out", exit_on_error=False)
            outgoing = lambda: self.model.state.outgoing.get("release")  # noqa: E731
        self.push_screen(
            ConfirmScreen("Deploy?", self._plan_summary("Deploy"), "Deploy", outgoing=outgoing),
            confirmed,
        )

    def _watching(self) -> bool:
        return self.backend is None and getattr(self.chat, "control", None) is not None

    def _request(self, action: str, key: str | None = None) -> None:
        """A spectator's abort/approve: sent to the lock holder through the relay."""

        async def send() -> None:
            from relay.errors import RelayError

            try:
                await self.chat.control(action, key)  # type: ignore[union-attr]
            except RelayError as exc:  # refused by the relay: its words say why
                self.notify(exc.message, title=f"{action} refused", severity="error")
                return
            self.notify(f"{action} requested from the deploying operator")

        self.run_worker(send(), group="relay", name=f"request {action}", exit_on_error=False)

    def action_abort(self) -> None:
        if self._watching():

            def confirmed_remote(yes: bool | None) -> None:
                if yes:
                    self._request("abort")

            body = Text("Ask the operator running this deploy to stop it at the next safe point?")
            self.push_screen(ConfirmScreen("Abort?", body, "Abort", danger=True), confirmed_remote)
            return
        if not self.deploying or self.runner is None:
            self.notify("nothing is running", severity="information")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._abort()

        body = Text(
            "Stop the deploy at the next safe point?\n\nHosts already switched keep the new release; "
        )
        body.append("no host is left half-activated.", style="bold")
        self.push_screen(ConfirmScreen("Abort?", body, "Abort", danger=True), confirmed)

    def _abort(self) -> None:
        try:
            self.runner.abort(by=self.operator, reason="aborted from the TUI")
        except Exception as exc:
            self.notify(str(exc), title="abort failed", severity="error")
            return
        self.notify("abort requested: stopping at a safe point…", severity="warning")

    def action_approve(self) -> None:
        gate = self.model.waiting_gate
        if self._watching():
            if not gate:
                self.notify("no gate is waiting")
                return
            self._confirm_gate(gate, lambda: self._request("approve", gate))
            return
        if not gate or self.runner is None or not self.deploying:
            self.notify("no gate is waiting")
            return
        approve = getattr(self.runner, "approve", None)
        if approve is None:
            self.notify("this run has no gates", severity="warning")
            return

        def go() -> None:
            try:
                approve(by=self.operator, key=gate)
            except ApprovalRefused as exc:  # four eyes: the deployer's own does not count
                self.notify(str(exc), title="approval refused", severity="error")
                return
            self.notify(f"approved {gate}")

        self._confirm_gate(gate, go)

    def _confirm_gate(self, gate: str, go: Callable[[], None]) -> None:
        """The gate dialog: what approving starts and, when the engine sent it, what
        goes out to those hosts; Enter approves."""
        model = self.model

        def confirmed(yes: bool | None) -> None:
            if yes and model.state.waiting_gate == gate:  # nobody approved it meanwhile
                go()

        card = gate in model.state.outgoing
        outgoing = (lambda: model.state.outgoing.get(gate)) if card else None
        screen = ConfirmScreen(
            "Approve the gate?",
            gate_body(model.plan, gate),
            "Approve",
            outgoing=outgoing,
            outgoing_key=gate,
        )
        self.push_screen(screen, confirmed)

    def action_rollback(self) -> None:
        if self.backend is None or getattr(self.backend, "read_only", False):
            self.notify("watching a relay room: cannot roll back from here", severity="warning")
            return
        if self.deploying:
            self.notify(
                "wait for the running deploy to finish (or abort it) first", severity="warning"
            )
            return
        screen = RollbackScreen(len(self.model.plan.hosts()))

        def chosen(release: str | None) -> None:
            if not release:
                return
            if not self.prepare(lambda: self.backend.new_rollback(release, self.prompter)):
                return

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self.start_runner()

            self.push_screen(
                ConfirmScreen(
                    f"Roll back to {release}?",
                    self._plan_summary("Rollback"),
                    "Roll back",
                    danger=True,
                ),
                confirmed,
            )

        async def read_releases() -> None:
            try:
                choices = await self.backend.probe_releases(self.prompter)
            except Exception as exc:
                if screen.is_attached:
                    screen.dismiss(None)
                self.notify(
                    str(exc) or type(exc).__name__, title="cannot list releases", severity="error"
                )
                return
            if screen.is_attached:
                screen.show(choices)

        self.push_screen(screen, chosen)
        self.run_worker(read_releases(), group="probe", name="read releases", exit_on_error=False)

    def action_filter(self) -> None:
        def done(pattern: str | None) -> None:
            if pattern is None:
                return
            self.filter_text = pattern
            self._apply_filter()

        self.push_screen(FilterScreen(self.filter_text, cursor_blink=self.cursor_blink), done)

    def action_clear_filter(self) -> None:
        self.filter_text = ""
        self._apply_filter()

    def _apply_filter(self, rebuild: bool = True) -> None:
        tree = self.tree
        tree.host_filter = self.model.hosts_matching(self.filter_text) if self.filter_text else None
        if rebuild:
            tree.rebuild()
            if self.filter_text:
                n = len(tree.host_filter or ())
                self.notify(
                    f"{n} host(s) match “{self.filter_text}”"
                    if n
                    else f"no host matches “{self.filter_text}”"
                )
            self.log_pane.show(tree.selected_key)
            self.update_header()

    def action_follow(self) -> None:
        self.following = not self.following
        if self.following:
            self._follow()
        self.notify(
            "follow on: the cursor tracks what is running" if self.following else "follow off"
        )
        self.update_header()

    def action_fleet_log(self) -> None:
        """Show the merged fleet log in the per-node log's place (focused), or back."""
        self.show_fleet_log(not self.fleet_shown)

    def show_fleet_log(self, show: bool = True, *, focus: bool = True) -> None:
        main = self.main
        main.set_class(show, "-fleet")
        if show:
            pane = self.fleet_pane
            pane.log.reset()
            pane.update_title()
            if focus:
                pane.log.focus()
        elif focus:
            self.tree.focus()

    def action_focus_chat(self) -> None:
        if self.chat is None:
            self.notify("relay not configured: chat needs a [relay] section in shipdeck.toml")
            return
        self.chat_pane.query_one(Input).focus()

    def action_focus_tree(self) -> None:
        self.tree.focus()

    def action_expand_failed(self) -> None:
        for host in self.model.plan.hosts():
            if host.status == FAILED:
                self.tree.select_key(
                    host.key + "/health" if host.key + "/health" in self.model.plan else host.key
                )

    def action_history(self) -> None:
        history = None
        if self.backend is not None:
            try:
                history = self.backend.history()
            except Exception as exc:
                self.notify(str(exc), title="history unavailable", severity="error")
                return
        if history is None:
            self.notify("no history here (watching a relay room)")
            return
        self.push_screen(HistoryScreen(history))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.mode))

    def action_quit_safely(self) -> None:
        if self.tailing and not self.tail_only:  # q stops a tail first
            self.stop_tail()
            return
        if not self.deploying:
            self.exit(self.last_exit if self.last_exit is not None else 0)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.quit_pending = True
                self._abort()
                self.notify("quitting once the deploy has stopped safely…", severity="warning")

        body = Text(
            "A deploy is running. Abort it at the next safe point and quit when it has stopped?"
        )
        self.push_screen(ConfirmScreen("Quit?", body, "Abort and quit", danger=True), confirmed)

"""What each key of the one action list (tui/actions.py) does: deploy, abort,
approve, roll back, filter, follow, chat, history, help and quit.

:class:`DeckActions` is a part of :class:`tui.app.ShipdeckApp` (which wires the
widgets, runners, event feed and chat); the state it reads and changes is the app's,
declared below.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Input

from engine.events import FAILED
from tui.fleetlines import NOTE
from tui.render import plural
from tui.screens.exec import ExecScreen, LogsScreen, TypedConfirmScreen, hosts_text
from tui.screens.help import HelpScreen
from tui.screens.history import HistoryScreen
from tui.screens.modals import ConfirmScreen, FilterScreen, RollbackScreen, gate_body
from tui.screens.status import StatusScreen

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
            await self.chat.control(action, key)  # type: ignore[union-attr]
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
            approve(by=self.operator, key=gate)
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

    def action_exec(self) -> None:
        """A command on the selected hosts: typed in a dialog, confirmed naming the
        host count (typed too when deploy.confirm_exec = "typed"), drawn as a tree."""
        hosts = self._exec_hosts(None)
        if hosts is None:
            return

        def chosen(command: str | None) -> None:
            if command:
                self.confirm_exec(command, hosts)

        self.push_screen(ExecScreen(hosts, cursor_blink=self.cursor_blink), chosen)

    def _exec_hosts(self, pattern: str | None) -> list[str] | None:
        """The hosts an exec would run on (the backend's, or ``pattern``'s), or None
        after a notice saying why there is no exec here now."""
        backend = self.backend
        if backend is None or getattr(backend, "read_only", False):
            self.notify("watching a relay room: cannot run commands from here", severity="warning")
            return None
        if self.deploying:
            self.notify("wait for the running deploy to finish first", severity="warning")
            return None
        if getattr(backend, "new_exec", None) is None:
            self.notify("no engine here to run commands with", severity="warning")
            return None
        try:
            return list(backend.exec_hosts(pattern) if pattern else backend.exec_hosts())
        except Exception as exc:
            self.notify(str(exc) or type(exc).__name__, title="cannot exec", severity="error")
            return None

    def confirm_exec(
        self, command: str, hosts: list[str], *, pattern: str | None = None, cwd: str | None = None
    ) -> None:
        """Ask (naming the host count; the count typed when deploy.confirm_exec =
        "typed"), then run ``command`` on ``hosts`` (``pattern`` selected them)."""
        backend = self.backend
        n = len(hosts)
        extra = {k: v for k, v in (("hosts", pattern), ("cwd", cwd)) if v}

        def run() -> None:
            if self.prepare(lambda: backend.new_exec(command, self.prompter, **extra)):
                self.start_runner()

        def typed(yes: bool | None) -> None:
            if yes:
                run()

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            if getattr(backend, "confirm_exec", "") == "typed":
                self.push_screen(
                    TypedConfirmScreen(command, n, cursor_blink=self.cursor_blink), typed
                )
            else:
                run()

        body = Text()
        body.append(f"{command}\n", style="bold")
        body.append(f"on {n} host(s): ", style="bold")
        body.append(hosts_text(hosts))
        body.append(f"\nin {cwd or 'current'} · waves and deploy.max_fail apply", style="dim")
        body.append("\n\nEnter runs · Esc cancels", style="bold")
        self.push_screen(
            ConfirmScreen(f"Run on {n} host(s)?", body, f"Run on {n}", danger=True), confirmed
        )

    # -- aliases ----------------------------------------------------------------

    def aliases(self) -> dict[str, list[str]]:
        """The config's ``[aliases]`` (name -> words); {} when there are none or they
        cannot be read (``shipdeck`` itself says why)."""
        read = getattr(self.backend, "aliases", None)
        if read is None:
            return {}
        try:
            return dict(read())
        except Exception:
            return {}

    def run_alias(self, name: str) -> None:
        """Run an alias chosen in the palette: exec, logs and status in the TUI; any
        other command as ``shipdeck <words>``, its output in the fleet log, once confirmed."""
        from tui.aliasrun import alias_action

        words = self.aliases().get(name)
        if words is None:
            self.notify(f"no alias {name!r}", severity="warning")
            return
        action = alias_action(name, words)
        if action.error:
            self.notify(f"alias {name}: {action.error}", title="alias", severity="error")
        elif action.kind == "exec":
            hosts = self._exec_hosts(action.hosts)
            if hosts is not None:
                self.confirm_exec(action.command, hosts, pattern=action.hosts, cwd=action.cwd)
        elif action.kind == "logs":
            self.start_tail(
                action.path, lines=action.lines, follow=action.follow, grep=action.grep,
                hosts=action.hosts,
            )  # fmt: skip
        elif action.kind == "status":
            self.action_status(action.hosts)
        else:
            self._confirm_command(action.name, list(action.words))

    def _confirm_command(self, name: str, words: list[str]) -> None:
        import shlex

        line = "shipdeck " + shlex.join(words)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_command(name, words)

        body = Text.assemble((line, "bold"), "\n\nits output goes to the fleet log (L)")
        self.push_screen(ConfirmScreen(f"Run alias {name}?", body, "Run"), confirmed)

    def run_command(self, name: str, words: list[str]) -> None:
        """``shipdeck <words>`` (with this config) in a subprocess, its output lines
        into the fleet log tagged with the alias's name."""
        import asyncio
        import sys

        config = getattr(getattr(self.backend, "config", None), "path", None)
        argv = [words[0], *(["-c", str(config)] if config else []), *words[1:]]
        pending, clock = self.tail_pending, self.clock
        self.fleet_lines.mark(clock(), f"alias {name}")
        self.show_fleet_log(True)

        async def run() -> None:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tui.cli", *argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            assert proc.stdout is not None
            try:
                async for raw in proc.stdout:
                    text = raw.decode(errors="replace").rstrip("\n")[:1000]
                    pending.append(("", name, "stdout", text, clock()))
                code = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            pending.append(("", name, NOTE, f"exit {code}", clock()))
            self.notify(f"alias {name}: exit {code}", title="alias", timeout=5)

        self.run_worker(run(), group="alias", name=f"alias {name}", exit_on_error=False)

    # -- logs -------------------------------------------------------------------

    def action_logs(self) -> None:
        """``shipdeck logs`` from the palette: a file and a filter, then followed."""
        if getattr(self.backend, "tail", None) is None:
            self.notify("no fleet to read here (watching a relay room)")
            return
        try:
            hosts = len(self.backend.exec_hosts())
        except Exception:
            hosts = len(self.model.plan.hosts())

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer:
                path, grep = answer
                self.start_tail(path, grep=grep or None)

        self.push_screen(LogsScreen(hosts, cursor_blink=self.cursor_blink), chosen)

    @property
    def tailing(self) -> bool:
        worker = self.tail_worker
        return worker is not None and not worker.is_finished

    def start_tail(
        self,
        path: str,
        *,
        lines: int = 10,
        follow: bool = True,
        grep: str | None = None,
        hosts: str | None = None,
    ) -> bool:
        """Tail ``path`` on the selected hosts into the fleet log (shown); a host that
        disconnects is marked (and reconnected by the engine). Whether it started."""
        tail = getattr(self.backend, "tail", None)
        if tail is None:
            self.notify("no fleet to read here (watching a relay room)")
            return False
        if self.tailing:
            self.notify("already tailing: q stops it first", severity="warning")
            return False
        try:
            pattern = re.compile(grep) if grep else None
        except re.error as exc:
            self.notify(f"--grep {grep!r}: {exc}", title="logs", severity="error")
            return False
        pending, clock, down = self.tail_pending, self.clock, self.tail_down
        down.clear()

        def on_line(host: str, stream: str, text: str) -> None:
            if pattern is None or pattern.search(text):
                pending.append((host, "log", stream, text, clock()))

        def on_note(host: str, text: str) -> None:
            if text.startswith("disconnected"):
                down.add(host)
            elif text == "reconnected":
                down.discard(host)
            pending.append((host, "log", NOTE, text, clock()))

        async def run() -> None:
            failed = await tail(
                path, lines=lines, follow=follow, on_line=on_line, on_note=on_note,
                prompter=self.prompter, **({"hosts": hosts} if hosts else {}),
            )  # fmt: skip
            for host, why in failed.items():
                pending.append((host, "log", NOTE, f"cannot read {path}: {why}", clock()))
            if failed:
                self.notify(
                    f"{len(failed)} host(s) could not read {path}", title="logs", severity="warning"
                )

        what = f"logs {path}" + (f" /{grep}/" if grep else "")
        self.fleet_pane.source = what
        self.fleet_lines.mark(clock(), what)
        self.show_fleet_log(True)
        self.tail_worker = self.run_worker(run(), group="tail", name=what, exit_on_error=False)
        self.notify(f"{what}: q stops", title="logs", timeout=4)
        return True

    def stop_tail(self) -> None:
        worker = self.tail_worker
        if worker is not None and not worker.is_finished:
            worker.cancel()
            self.notify(f"stopped: {worker.name}", title="logs", timeout=4)
        self.tail_down.clear()

    def action_status(self, hosts: str | None = None) -> None:
        read = getattr(self.backend, "fleet_status", None)
        if read is None:
            self.notify("no fleet to read here (watching a relay room)")
            return
        try:
            n = len(self.backend.exec_hosts(hosts) if hosts else self.backend.exec_hosts())
        except Exception:
            n = len(self.model.plan.hosts())
        extra = {"hosts": hosts} if hosts else {}
        self.push_screen(StatusScreen(lambda: read(self.prompter, **extra), n))

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

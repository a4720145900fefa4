"""The fleet's ad-hoc commands from the TUI: ``x`` exec on the selected hosts (a
dialog, a confirmation naming the host count), the config's aliases and "Tail a log
file" (the palette: a file followed on every host into the fleet log), ``v`` the
fleet's versions (the status screen).

:class:`FleetActions` is the part of :class:`tui.app.ShipdeckApp` that runs them;
it builds on :class:`tui.app_actions.DeckActions` (the state both read is declared
there).
"""

from __future__ import annotations

import re

from rich.text import Text

from tui.app_actions import DeckActions
from tui.fleetlines import NOTE
from tui.screens.exec import ExecScreen, LogsScreen, TypedConfirmScreen, hosts_text
from tui.screens.modals import ConfirmScreen
from tui.screens.status import StatusScreen


class FleetActions(DeckActions):
    """exec, aliases, logs and status: commands across the fleet."""

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

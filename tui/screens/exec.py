"""Exec dialogs: type a command for the selected hosts, and (when the config says
``deploy.confirm_exec = "typed"``) type the host count to confirm it."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from tui.widgets.inputs import blinking


def hosts_text(names: list[str], shown: int = 6) -> str:
    """``web1, web2, … +6``."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f", … +{more}" if more > 0 else "")


class ExecScreen(ModalScreen[str | None]):
    """The command to run on the selected hosts; Enter goes on to the confirmation."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="exec.cancel")]

    def __init__(self, hosts: list[str], *, cursor_blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.hosts = hosts
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        n = len(self.hosts)
        with Vertical(classes="dialog -wide"):
            yield Static(f"Run a command on {n} host(s)", classes="dialog-title")
            yield Static(
                Text.assemble(
                    ("hosts: ", "bold"),
                    hosts_text(self.hosts),
                    "\nrun with /bin/sh in current (the live release), stdin from /dev/null;"
                    " waves and deploy.max_fail apply",
                ),
                classes="dialog-body",
            )
            yield blinking(self.cursor_blink, placeholder="uptime", id="exec-command")
            yield Static("Enter: confirm next · Esc cancels", classes="dialog-hint")

    @on(Input.Submitted, "#exec-command")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        command = event.value.strip()
        if not command:
            self.notify("type a command first", severity="warning", timeout=3)
            return
        self.dismiss(command)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TypedConfirmScreen(ModalScreen[bool]):
    """``deploy.confirm_exec = "typed"``: the host count typed to confirm."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="typed.cancel")]

    def __init__(self, command: str, hosts: int, *, cursor_blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.command = command
        self.hosts = hosts
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -danger"):
            yield Static("Type to confirm", classes="dialog-title")
            body = Text()
            body.append("This environment asks for a typed confirmation")
            body.append(' (deploy.confirm_exec = "typed").\n\n', style="dim")
            body.append(f"{self.command}\n", style="bold")
            body.append(f"on {self.hosts} host(s): type {self.hosts} to run it.")
            yield Static(body, classes="dialog-body")
            yield blinking(self.cursor_blink, placeholder=str(self.hosts), id="typed-count")
            yield Static("Enter runs · Esc cancels", classes="dialog-hint")

    @on(Input.Submitted, "#typed-count")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == str(self.hosts):
            self.dismiss(True)
            return
        self.notify(f"type {self.hosts} to run it (or Esc)", severity="warning", timeout=4)

    def action_cancel(self) -> None:
        self.dismiss(False)


class LogsScreen(ModalScreen["tuple[str, str] | None"]):
    """``shipdeck logs`` from the palette: the file (relative to deploy.path) and an
    optional regular expression; the tail follows into the fleet log until ``q``."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="logs.cancel")]

    def __init__(self, hosts: int, *, cursor_blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.hosts = hosts
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -wide"):
            yield Static(f"Tail a file on {self.hosts} host(s)", classes="dialog-title")
            yield Static(
                "relative to deploy.path (shared/log/app.log), ~/..., or absolute;"
                " followed into the fleet log until q",
                classes="dialog-body",
            )
            yield blinking(self.cursor_blink, placeholder="shared/log/app.log", id="logs-path")
            yield blinking(
                self.cursor_blink, placeholder="only lines matching (a regular expression)",
                id="logs-grep",
            )  # fmt: skip
            yield Static("Enter follows · Esc cancels", classes="dialog-hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        path = self.query_one("#logs-path", Input).value.strip()
        if not path:
            self.query_one("#logs-path", Input).focus()
            self.notify("which file?", severity="warning", timeout=3)
            return
        self.dismiss((path, self.query_one("#logs-grep", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)

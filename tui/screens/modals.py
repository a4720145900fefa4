"""Small modals: confirm, filter, host key, password, rollback chooser."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.widgets.inputs import blinking


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; Enter confirms, Esc cancels."""

    BINDINGS = [
        Binding("enter", "confirm", "Confirm", id="confirm.yes", priority=True),
        Binding("escape,n", "cancel", "Cancel", id="confirm.no"),
    ]

    def __init__(
        self, title: str, body: Text | str, confirm: str = "Confirm", *, danger: bool = False
    ) -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.body = body
        self.confirm_label = confirm
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog" + (" -danger" if self.danger else "")):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    f"{self.confirm_label} ⏎",
                    id="yes",
                    variant="error" if self.danger else "primary",
                )
                yield Button("Cancel (Esc)", id="no")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class FilterScreen(ModalScreen[str | None]):
    """Filter hosts by a name glob (web1*, *eu*) or a status word (failed, running)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="filter.cancel")]

    def __init__(self, current: str = "", *, cursor_blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.current = current
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Filter hosts", classes="dialog-title")
            yield Static(
                "a name glob (web1*, *eu*) or a status: failed running ok pending cancelled.\n"
                "Empty clears the filter.",
                classes="dialog-body",
            )
            yield blinking(
                self.cursor_blink, value=self.current, placeholder="failed", id="filter-input"
            )

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class HostKeyScreen(ModalScreen[bool]):
    """An unknown host key: show the fingerprint, accept or reject (never silent)."""

    BINDINGS = [
        Binding("y", "accept", "Accept key", id="hostkey.accept"),
        Binding("escape,n", "reject", "Reject", id="hostkey.reject"),
    ]

    def __init__(self, host: str, fingerprint: str, key_type: str) -> None:
        super().__init__(classes="modal")
        self.host, self.fingerprint, self.key_type = host, fingerprint, key_type

    def compose(self) -> ComposeResult:
        body = Text()
        body.append("The authenticity of host ")
        body.append(self.host, style="bold")
        body.append(" can't be established.\n\n")
        body.append(f"{self.key_type} key fingerprint:\n")
        body.append(self.fingerprint, style="bold yellow")
        body.append(
            "\n\nCompare it with the server's key before accepting.\nAccepting records it in known_hosts."
        )
        with Vertical(classes="dialog -danger"):
            yield Static("Unknown host key", classes="dialog-title")
            yield Static(body, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Accept (y)", id="accept", variant="warning")
                yield Button("Reject (n)", id="reject", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#reject", Button).focus()

    def action_accept(self) -> None:
        self.dismiss(True)

    def action_reject(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#accept")
    def _accept(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#reject")
    def _reject(self) -> None:
        self.dismiss(False)


class PasswordScreen(ModalScreen[str | None]):
    """The server asks for a password: a masked input; Esc gives none."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="password.cancel")]

    def __init__(self, host: str, user: str, *, cursor_blink: bool = True) -> None:
        super().__init__(classes="modal")
        self.host, self.user = host, user
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        prompt = Text()
        prompt.append("Password for ")
        prompt.append(f"{self.user}@{self.host}", style="bold")
        with Vertical(classes="dialog"):
            yield Static("Password", classes="dialog-title")
            yield Static(prompt, classes="dialog-body")
            yield blinking(self.cursor_blink, password=True, id="password-input")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RollbackScreen(ModalScreen[str | None]):
    """Choose the release to roll back to (newest first)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="rollback.cancel")]

    def __init__(self, releases: list[str], current: str | None = None) -> None:
        super().__init__(classes="modal")
        self.releases = releases
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Roll back to…", classes="dialog-title")
            if not self.releases:
                yield Static(
                    "No earlier release was deployed ok from this machine.", classes="dialog-body"
                )
            options = []
            for rid in self.releases:
                label = Text(rid)
                if rid == self.current:
                    label.append("  (current)", style="dim")
                options.append(Option(label, id=rid))
            yield OptionList(*options, id="releases")
            yield Static("Enter rolls every host back · Esc cancels", classes="dialog-hint")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)

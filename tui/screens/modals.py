"""Small modals: confirm (with what goes out, when there is a card to show), filter,
host key, password, rollback chooser; and the engine's Prompter, answered by them."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from tui.render import outgoing_card
from tui.widgets.inputs import blinking

if TYPE_CHECKING:
    from tui.app import ShipdeckApp


#: How each role of a card's lines (tui.render.CARD_ROLES) is styled.
CARD_STYLES = {
    "title": "bold",
    "warn": "bold black on yellow",
    "group": "bold cyan",
    "hosts": "dim",
    "back": "magenta",
    "more": "dim italic",
    "note": "red",
}
_COMMIT = re.compile(r"^(\s+(?:↩ )?)([0-9a-f]{7})(  \S*  )")
_FILE = re.compile(r"^(\s+)(\+\S+)( )(−\S+)")


def card_text(changes: dict[str, Any] | None, key: str = "release") -> Text:
    """What goes out (:func:`tui.render.outgoing_card`) as styled text: the no-op
    warning stands out, shas in yellow, lines added in green and removed in red."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if changes is None:
        text.append("reading what each host runs…", style="dim italic")
        return text
    for i, (role, line) in enumerate(outgoing_card(changes, key)):
        if i:
            text.append("\n")
        if role in ("commit", "back") and (m := _COMMIT.match(line)):
            style = CARD_STYLES.get(role, "")
            text.append(m.group(1), style=style)
            text.append(m.group(2), style="yellow")
            text.append(m.group(3), style="dim")
            text.append(line[m.end() :], style=style)
        elif role == "file" and (m := _FILE.match(line)):
            text.append(m.group(1))
            text.append(m.group(2), style="green")
            text.append(m.group(3))
            text.append(m.group(4), style="red")
            text.append(line[m.end() :])
        else:
            text.append(line, style=CARD_STYLES.get(role, ""))
    return text


class OutgoingCard(VerticalScroll):
    """What goes out, read from ``source()`` (a card's dict, or None while it is being
    worked out) and redrawn when that changes; scrolls when it is long."""

    DEFAULT_CSS = """
    OutgoingCard { height: auto; max-height: 40vh; margin-bottom: 1;
                   border-top: solid $panel-lighten-2; }
    OutgoingCard > Static { height: auto; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(
        self, source: Callable[[], dict[str, Any] | None], key: str = "release", **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.source = source
        self.key = key
        self.shown: Any = ()  # the card last drawn (compared by identity)

    def compose(self) -> ComposeResult:
        yield Static(card_text(None), id="outgoing-text")

    def on_mount(self) -> None:
        self.refresh_card()
        self.set_interval(0.2, self.refresh_card)

    def refresh_card(self) -> None:
        changes = self.source()
        if changes is self.shown:
            return
        self.shown = changes
        self.query_one("#outgoing-text", Static).update(card_text(changes, self.key))

    @property
    def lines(self) -> list[str]:
        """The card as it is shown now, as plain lines (what a person reads)."""
        return card_text(self.shown if self.shown != () else None, self.key).plain.split("\n")


def gate_body(plan: Any, gate: str) -> Text:
    """What approving ``gate`` starts: the waves it lets run and their hosts."""
    from engine.outgoing import waves_after_gate

    text = Text()
    waves = waves_after_gate(plan, gate)
    node = plan.nodes.get(gate)
    text.append(f"{node.label if node else gate}: ", style="bold")
    if not waves:
        text.append("approving lets the deploy go on.")
        return text
    text.append("approving starts\n")
    for wave in waves:
        names = [n.label for n in plan.kids(wave.key) if n.kind == "host"]
        shown = ", ".join(names[:6]) + (f", … +{len(names) - 6}" if len(names) > 6 else "")
        text.append(f"  {wave.label}: ", style="cyan")
        text.append(f"{shown}\n")
    text.append("Enter approves · Esc cancels", style="bold")
    return text


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; Enter confirms, Esc cancels. With ``outgoing`` (a callable
    returning a what-goes-out card's dict, or None until it is known), the card is
    shown under the question and follows it as it arrives."""

    BINDINGS = [
        Binding("enter", "confirm", "Confirm", id="confirm.yes", priority=True),
        Binding("escape,n", "cancel", "Cancel", id="confirm.no"),
    ]

    def __init__(
        self,
        title: str,
        body: Text | str,
        confirm: str = "Confirm",
        *,
        danger: bool = False,
        outgoing: Callable[[], dict[str, Any] | None] | None = None,
        outgoing_key: str = "release",
    ) -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.body = body
        self.confirm_label = confirm
        self.danger = danger
        self.outgoing = outgoing
        self.outgoing_key = outgoing_key

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog" + (" -danger" if self.danger else "")) as dialog:
            if self.outgoing is not None:
                dialog.styles.width = 100  # commit lines are long
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            if self.outgoing is not None:
                yield OutgoingCard(self.outgoing, self.outgoing_key, id="outgoing")
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

    def __init__(
        self, host: str, user: str, *, cursor_blink: bool = True, key_file: str = ""
    ) -> None:
        super().__init__(classes="modal")
        self.host, self.user = host, user
        self.key_file = key_file  # set: the passphrase of this encrypted key file
        self.cursor_blink = cursor_blink

    def compose(self) -> ComposeResult:
        prompt = Text()
        if self.key_file:
            prompt.append("Passphrase for the key ")
            prompt.append(self.key_file, style="bold")
        else:
            prompt.append("Password for ")
            prompt.append(f"{self.user}@{self.host}", style="bold")
        with Vertical(classes="dialog"):
            yield Static("Passphrase" if self.key_file else "Password", classes="dialog-title")
            yield Static(prompt, classes="dialog-body")
            yield blinking(self.cursor_blink, password=True, id="password-input")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RollbackScreen(ModalScreen[str | None]):
    """Choose the release to roll back to: releases newest first, read from every
    selected host. Only a release every host has can be chosen; one that cleanup
    removed from some hosts is greyed with how many still have it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="rollback.cancel")]

    def __init__(self, hosts: int, choices: Any = None) -> None:
        super().__init__(classes="modal")
        self.hosts = hosts
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -wide"):
            yield Static("Roll back to…", classes="dialog-title")
            yield Static(
                f"reading the releases on {self.hosts} host(s)…",
                id="rollback-status",
                classes="dialog-body",
            )
            yield OptionList(id="releases")
            yield Static(
                "Enter chooses · Esc cancels · greyed: not on every host",
                classes="dialog-hint",
            )

    def on_mount(self) -> None:
        if self.choices is not None:
            self.show(self.choices)

    def show(self, choices: Any) -> None:
        """Fill the list from the probe's :class:`engine.releases.Choices`."""
        self.choices = choices
        status = self.query_one("#rollback-status", Static)
        options = self.query_one("#releases", OptionList)
        options.clear_options()
        notes = Text()
        if choices.errors:
            notes.append(f"{len(choices.errors)} host(s) could not be read:\n", style="bold red")
            for name, why in list(choices.errors.items())[:3]:
                notes.append(f"  {name}: {why[:120]}\n", style="red")
        if not choices.releases:
            notes.append("No release found on these hosts.")
        elif choices.default is None:
            notes.append("No earlier release is on every host.", style="yellow")
        else:
            notes.append(f"{len(choices.releases)} release(s) on {choices.hosts_total} host(s)")
        status.update(notes)
        default_index = None
        for info in choices.releases:
            selectable = info.everywhere and info.current_on < info.hosts_total
            if info.release_id == choices.default:
                default_index = options.option_count
            options.add_option(
                Option(release_label(info), id=info.release_id, disabled=not selectable)
            )
        if default_index is not None:
            options.highlighted = default_index
        options.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


def release_label(info: Any) -> Text:
    """Two lines: id, short sha, subject / when, who, how many hosts, current."""
    dim = not info.everywhere
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(info.release_id, style="dim" if dim else "bold")
    if info.sha:
        text.append(f"  {info.sha[:7]}", style="dim" if dim else "yellow")
    if info.subject:
        subject = info.subject if len(info.subject) <= 32 else info.subject[:31] + "…"
        text.append(f"  {subject}", style="dim")
    text.append("\n  ")
    if info.is_current:
        where = (
            ""
            if info.current_on == info.hosts_total
            else f" on {info.current_on}/{info.hosts_total}"
        )
        text.append(f"◀ current{where}  ", style="bold cyan")
    when = info.deployed_at.replace("T", " ").removesuffix("Z")[:16]
    if when:
        text.append(f"deployed {when} UTC", style="dim")
    if info.operator:
        text.append(f" by {info.operator}", style="dim")
    if dim:
        text.append(f"  on {info.hosts_with}/{info.hosts_total} hosts only", style="dim italic")
    return text


class TuiPrompter:
    """The engine's Prompter, answered by modals on the app."""

    def __init__(self, app: ShipdeckApp) -> None:
        self.app = app

    async def _ask(self, screen) -> Any:
        future: asyncio.Future = asyncio.get_running_loop().create_future()

        def done(result: Any) -> None:
            if not future.done():
                future.set_result(result)

        self.app.push_screen(screen, callback=done)
        return await future

    async def confirm_host_key(self, host: str, fingerprint: str, key_type: str) -> bool:
        return bool(await self._ask(HostKeyScreen(host, fingerprint, key_type)))

    async def ask_password(self, host: str, user: str) -> str | None:
        return await self._ask(PasswordScreen(host, user, cursor_blink=self.app.cursor_blink))

    async def ask_passphrase(self, path: str) -> str | None:
        return await self._ask(
            PasswordScreen("", "", cursor_blink=self.app.cursor_blink, key_file=path)
        )

"""Which keys the footer shows, from plain bindings (no app)."""

from __future__ import annotations

from textual.binding import Binding

from tui import actions
from tui.widgets.footer import footer_keys


def active(*extra: Binding) -> list[tuple[None, Binding, bool, str]]:
    return [(None, b, True, b.tooltip) for b in [*actions.bindings(), *extra]]


def test_a_narrow_footer_keeps_the_essential_keys_and_help_and_quit():
    shown = footer_keys(active(), wide=False, typing=False)
    assert [b.id for b, _, _ in shown.values()] == [
        "deploy",
        "abort",
        "rollback",
        "approve",
        "focus_chat",
        "help",
        "quit_safely",
    ]


def test_a_wide_footer_shows_every_footer_action_in_order():
    shown = footer_keys(active(), wide=True, typing=False)
    assert [b.id for b, _, _ in shown.values()] == [
        a.id for a in actions.ACTIONS if a.keys and a.footer is not None
    ]


def test_while_typing_only_the_way_back_is_a_key():
    shown = footer_keys(active(), wide=True, typing=True)
    assert list(shown) == ["app.focus_tree"]


def test_a_binding_outside_the_action_list_is_shown_unless_hidden_and_the_first_wins():
    mine = Binding("x", "app.deploy", "Other deploy", id="other")
    extra = Binding("y", "app.extra", "Extra", id="extra")
    hidden = Binding("z", "app.hidden", "Hidden", show=False, id="hidden")
    shown = footer_keys(active(mine, extra, hidden), wide=False, typing=False)
    assert shown["app.deploy"][0].key == "d"  # the action list's binding came first
    assert "app.extra" in shown and "app.hidden" not in shown

"""The footer of the one action list (tui/actions.py).

Below 100 columns it shows only the essential keys, so ``?`` and ``q`` always fit
(every key is in ``?`` and the palette); while the operator types in an input, only
the way back is a key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input
from textual.widgets._footer import FooterKey

from tui import actions

#: columns from which every footer key of the action list is shown
WIDE_COLUMNS = 100

#: ``(binding, enabled, tooltip)`` of one footer key
Shown = tuple[Binding, bool, str]


def footer_keys(
    active: Iterable[tuple[Any, Binding, bool, str]], *, wide: bool, typing: bool
) -> dict[str, Shown]:
    """The keys the footer shows, by action, from a screen's active bindings
    (``(node, binding, enabled, tooltip)``, the first binding of an action wins)."""
    keep = {a.id for a in actions.ACTIONS if a.footer == actions.ALWAYS or wide}
    shown: dict[str, Shown] = {}
    for _, binding, enabled, tooltip in active:
        if shows(binding, keep, typing=typing):
            shown.setdefault(binding.action, (binding, enabled, tooltip))
    return shown


def shows(binding: Binding, keep: set[str], *, typing: bool) -> bool:
    """Whether a binding is in the footer: while typing only the way back to the tree;
    else a shown binding the action list keeps at this width (or one it does not list)."""
    if typing:  # keys type text now: only the way back is a key
        return binding.id == "focus_tree"
    return binding.show and (binding.id in keep or binding.id not in actions.IDS)


class DeckFooter(Footer):
    """The footer of the one action list: below 100 columns only the essential keys,
    so ``?`` and ``q`` always fit (every key is in ``?`` and the palette)."""

    _wide: bool | None = None

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        active = self.screen.active_bindings
        shown = footer_keys(
            active.values(),
            wide=self.app.size.width >= WIDE_COLUMNS,
            typing=isinstance(self.app.focused, Input),
        )
        self.styles.grid_size_columns = len(shown)
        for binding, enabled, tooltip in shown.values():
            yield FooterKey(
                binding.key,
                self.app.get_key_display(binding),
                binding.description,
                binding.action,
                disabled=not enabled,
                tooltip=tooltip,
            ).data_bind(compact=Footer.compact)
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        if self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE and palette:
            yield self._palette_key(palette[1], palette[2])

    def _palette_key(self, binding: Binding, enabled: bool) -> FooterKey:
        return FooterKey(
            binding.key,
            self.app.get_key_display(binding),
            binding.description,
            binding.action,
            classes="-command-palette",
            disabled=not enabled,
            tooltip=binding.tooltip or binding.description,
        )

    async def on_resize(self) -> None:
        wide = self.app.size.width >= WIDE_COLUMNS
        if wide != self._wide:
            self._wide = wide
            await self.recompose()

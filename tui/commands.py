"""Command palette (ctrl+p): every shipdeck action, searchable."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui import actions


class DeckCommands(Provider):
    """Every action of the main screen that works in this mode (tui/actions.py)."""

    def _commands(self):
        app = self.app
        mode = getattr(app, "mode", actions.OPERATOR)
        for action in actions.for_mode(mode):
            keys = f" ({action.key_text()})" if action.keys else ""
            yield action.title, action.explain(mode) + keys, partial(app.run_action, action.id)

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(f"{title} {help_text}")
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)

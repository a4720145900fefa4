"""Command palette (ctrl+p): every shipdeck action, and the config's ``[aliases]``
(runnable: tui/aliasrun.py says what each does), searchable."""

from __future__ import annotations

import shlex
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

    def _aliases(self):
        """The config's ``[aliases]``: ``alias NAME``, its command line as the help."""
        app = self.app
        if getattr(app, "mode", actions.OPERATOR) != actions.OPERATOR:
            return
        found = getattr(app, "aliases", dict)()
        for name, words in sorted(found.items()):
            line = "shipdeck " + shlex.join(words)
            yield f"alias {name}", line, partial(app.run_alias, name)

    def _all(self):
        yield from self._commands()
        yield from self._aliases()

    async def discover(self) -> Hits:
        for title, help_text, callback in self._all():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._all():
            score = matcher.match(f"{title} {help_text}")
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)

"""Command palette (ctrl+p): every shipdeck action, searchable."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

#: (action name on the app, title, help) — the same actions the keys run.
ACTIONS: list[tuple[str, str, str]] = [
    ("deploy", "Deploy", "show the plan and deploy it (d)"),
    ("abort", "Abort deploy", "stop the running deploy at a safe point (a)"),
    ("rollback", "Roll back", "choose an earlier release and switch every host to it (r)"),
    ("approve", "Approve gate", "let the next wave start (g)"),
    ("filter", "Filter hosts", "by name glob or status word (/)"),
    ("clear_filter", "Clear host filter", "show every host again"),
    ("follow", "Toggle follow", "keep the cursor on what is running (f)"),
    ("focus_chat", "Chat", "focus the chat input (c)"),
    ("focus_tree", "Stage tree", "focus the stage tree"),
    ("expand_failed", "Show failed hosts", "open every failed host in the tree"),
    ("history", "History", "past deploys, per-host outcomes, transcripts (h)"),
    ("help", "Help", "keys and glyphs (?)"),
    ("quit_safely", "Quit", "quit; while deploying, abort safely first (q)"),
]


class DeckCommands(Provider):
    """Every action of the main screen."""

    def _commands(self):
        app = self.app
        for action, title, help_text in ACTIONS:
            yield title, help_text, partial(app.run_action, action)

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(f"{title} {help_text}")
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)

"""The one list of actions: the footer, the key bindings, the command palette, the
help screen and the README's key table all come from here, so they cannot drift.

A *mode* is what the app is doing: ``operator`` (it runs deploys: ``shipdeck deploy``,
``shipdeck demo``) or ``spectator`` (``shipdeck watch``: a relay room, no engine).
An action lists the modes it works in; in any other mode it is neither shown nor run.
No textual at import time beyond ``Binding`` (a plain dataclass).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

OPERATOR, SPECTATOR = "operator", "spectator"
BOTH = frozenset({OPERATOR, SPECTATOR})

#: footer ranks: 0 always shown, 1 from 100 columns, None never (help and palette only)
ALWAYS, WIDE = 0, 1


@dataclass(frozen=True)
class Action:
    id: str  # the app's action name (``action_<id>``)
    keys: str  # Textual key names, comma-separated ("" = palette only)
    title: str  # footer and palette title
    help: str  # the help screen's and the palette's explanation
    modes: frozenset[str] = BOTH
    footer: int | None = ALWAYS
    display: str | None = None  # how the key is written (help, footer)
    spectator_help: str | None = None  # a different explanation when watching

    def key_text(self) -> str:
        return self.display or " ".join(self.keys.split(","))

    def explain(self, mode: str) -> str:
        return self.spectator_help if mode == SPECTATOR and self.spectator_help else self.help


ACTIONS: tuple[Action, ...] = (
    Action(
        "deploy", "d", "Deploy", "deploy: shows the plan, Enter confirms", frozenset({OPERATOR})
    ),
    Action(
        "abort",
        "a",
        "Abort",
        "abort the running deploy (asks first; stops at a safe point)",
        spectator_help="ask the operator running the deploy to abort it (asks first)",
    ),
    Action(
        "rollback",
        "r",
        "Rollback",
        "roll back to a release every selected host has (a picker)",
        frozenset({OPERATOR}),
    ),
    Action(
        "approve",
        "g",
        "Approve",
        "approve the waiting gate: the next wave starts",
        spectator_help="ask the deploying operator's run to pass the waiting gate",
    ),
    Action(
        "filter",
        "slash",
        "Filter",
        "filter hosts: name glob or status (failed, running…)",
        footer=WIDE,
        display="/",
    ),
    Action(
        "fleet_log",
        "L",
        "Fleet log",
        "merged fleet log (again: the selected node's log): / filter, s search, n N, m mark, t times",
        footer=WIDE,
    ),
    Action("follow", "f", "Follow", "follow: keep the cursor on what is running", footer=WIDE),
    Action("focus_chat", "c", "Chat", "chat: type, Enter sends; Esc returns to the tree"),
    Action(
        "history",
        "h",
        "History",
        "history of deploys on this machine, per-host outcomes, transcripts",
        frozenset({OPERATOR}),
        footer=WIDE,
    ),
    Action(
        "exec",
        "x",
        "Exec",
        "run a command on the selected hosts: a dialog, a confirmation naming the host count",
        frozenset({OPERATOR}),
        footer=None,
    ),
    Action(
        "status",
        "v",
        "Fleet status",
        "fleet status: which release runs where (read-only), drift highlighted",
        frozenset({OPERATOR}),
        footer=None,
    ),
    Action("help", "question_mark", "Help", "this help: keys and glyphs", display="?"),
    Action(
        "quit_safely",
        "q",
        "Quit",
        "quit (while deploying: abort safely first)",
        spectator_help="quit (the deploy goes on without you)",
    ),
    Action(
        "focus_tree", "escape", "Stage tree", "back to the stage tree", footer=None, display="esc"
    ),
    Action(
        "logs",
        "",
        "Tail a log file",
        "tail a file on every selected host into the fleet log, merged (q stops)",
        frozenset({OPERATOR}),
        footer=None,
    ),
    Action("clear_filter", "", "Clear host filter", "show every host again", footer=None),
    Action(
        "expand_failed", "", "Show failed hosts", "move to each failed host's step", footer=None
    ),
)

IDS = frozenset(a.id for a in ACTIONS)

#: the stage tree's own keys (help and README only; bound in StageTree)
NAVIGATION: tuple[tuple[str, str], ...] = (
    ("↑ ↓  j k", "move in the tree"),
    ("→  l", "open a host, wave or stage (again: its first child)"),
    ("←", "close it; on a closed node or a step: go to its parent"),
    ("enter  space", "open or close"),
    ("tab", "next pane (tree, log, chat)"),
    ("ctrl+p", "command palette: every action, searchable"),
)

#: the merged fleet log's own keys, when it has the focus (help and README only;
#: bound in tui/widgets/fleet_log.py)
FLEET_LOG: tuple[tuple[str, str], ...] = (
    ("/ s n N m t end", "in the fleet log: filter, search, next, previous, mark, times, follow"),
)


def for_mode(mode: str) -> list[Action]:
    """The actions that work in ``mode``, in footer order."""
    return [a for a in ACTIONS if mode in a.modes]


#: actions a relay ``observer`` may not use (the relay refuses them anyway)
OPERATOR_ONLY = frozenset({"deploy", "abort", "rollback", "approve", "exec"})


def role_allows(action_id: str, role: str) -> bool:
    """Whether a relay member of ``role`` (observer, operator, admin) may use the action."""
    return role != "observer" or action_id not in OPERATOR_ONLY


def by_id(action_id: str) -> Action | None:
    for action in ACTIONS:
        if action.id == action_id:
            return action
    return None


def bindings() -> list[Binding]:
    """Every action with a key, as bindings on the app's actions (the screen hides
    those that do not work in the current mode with ``check_action``)."""
    return [
        Binding(
            a.keys,
            f"app.{a.id}",
            a.title,
            show=a.footer is not None,
            key_display=a.display,
            id=a.id,
            tooltip=a.help,
        )
        for a in ACTIONS
        if a.keys
    ]


def key_table(mode: str = OPERATOR) -> list[tuple[str, str]]:
    """(keys, what) rows for the help screen and the README."""
    rows = [(a.key_text(), a.explain(mode)) for a in for_mode(mode) if a.keys]
    return rows + list(NAVIGATION) + list(FLEET_LOG)

"""Who is deploying: the one rule for the operator's name.

The name recorded and shown everywhere (history, ``revisions.log``, host locks, the
TUI header, the chat) is, in this order:

1. ``SHIPDECK_OPERATOR`` (set and not blank);
2. the operator the relay confirmed for the token (``confirmed``), when there is one;
3. ``user@hostname`` of this process.

Pure standard library: asking the relay who a token belongs to is the caller's job
(``tui.cli.operator``); this module only applies the rule to the answer.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Callable

__all__ = ["ENV", "default_operator", "local_operator", "resolve_operator"]

#: the environment variable that names the operator, ahead of anything else
ENV = "SHIPDECK_OPERATOR"


def local_operator() -> str:
    """``user@hostname`` of this process (``unknown@hostname`` when the user has no
    name, e.g. a container's uid without a passwd entry). Never raises."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def resolve_operator(
    confirmed: str | None = None, *, warn: Callable[[str], None] | None = None
) -> str:
    """The operator's name: ``$SHIPDECK_OPERATOR``, else ``confirmed`` (the name the
    relay confirmed for the token), else :func:`local_operator`.

    ``warn`` is called with one sentence when ``SHIPDECK_OPERATOR`` names someone other
    than the relay confirmed (the environment still wins; the room's chat and lock show
    the relay's name). Raises nothing.
    """
    name = os.environ.get(ENV, "").strip()
    if name:
        if confirmed and confirmed != name and warn is not None:
            warn(
                f"operator {name!r} ({ENV}); the relay knows this token as"
                f" {confirmed!r}, which is what the room's chat and lock show"
            )
        return name
    return confirmed or local_operator()


def default_operator() -> str:
    """The operator's name when no relay was asked: ``$SHIPDECK_OPERATOR``, else
    ``user@hostname``. Raises nothing."""
    return resolve_operator(None)

"""Input helpers."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input


def blinking(blink: bool, *args: Any, **kwargs: Any) -> Input:
    """An ``Input`` whose cursor blinks or not (snapshots freeze it)."""
    widget = Input(*args, **kwargs)
    widget.cursor_blink = blink
    return widget

"""Small shell building blocks shared by the remote scripts."""

from __future__ import annotations

import time

from engine.session import q

__all__ = ["q", "utc_stamp", "iso", "resolve_path_sh"]


def utc_stamp(at: float | None = None) -> str:
    """``YYYYmmddTHHMMSSZ`` (UTC) of ``at`` (default: now): release ids start with it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(at if at is not None else time.time()))


def iso(at: float | None = None) -> str:
    """ISO 8601 UTC of ``at`` (default: now), to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at if at is not None else time.time()))


def resolve_path_sh(path: str) -> str:
    """Shell that sets $P to the absolute deploy path (relative and ~/ are under $HOME)."""
    return (
        f"P={q(path)}\n"
        'case "$P" in /*) ;; "~") P="$HOME" ;; "~/"*) P="$HOME/${P#"~/"}" ;; *) P="${HOME:-$(pwd)}/$P" ;; esac\n'
    )

"""Bounded text and JSON: what a run's state, a snapshot and a relay frame keep of
whatever a host or a peer sent (:class:`Bounds`), and the helpers that cut it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine.plan import Node


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (what the relay sends)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))


def cut_text(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to ``limit`` code points (plus a marker); and how many were cut."""
    if len(text) <= limit:
        return text, 0
    return text[:limit] + " [...]", len(text) - limit


def shrink_json(value: Any, budget: int, *, chars: int = 256, items: int = 200) -> Any:
    """``value`` made to fit ``budget`` bytes: long strings cut to ``chars``, lists and
    objects to their first ``items`` entries; ``{"cut": true}`` if that is not enough."""
    if json_size(value) <= budget:
        return value

    def walk(v: Any, depth: int) -> Any:
        if isinstance(v, str):
            return cut_text(v, chars)[0]
        if depth > 8:
            return None
        if isinstance(v, list):
            return [walk(x, depth + 1) for x in v[:items]]
        if isinstance(v, dict):
            return {str(k)[:chars]: walk(x, depth + 1) for k, x in list(v.items())[:items]}
        return v

    small = walk(value, 0)
    return small if json_size(small) <= budget else {"cut": True}


@dataclass(frozen=True, slots=True)
class Bounds:
    """How much of each thing a bounded :class:`RunState` keeps (code points for
    text, bytes for JSON). :meth:`relay` gives the relay's snapshot limits."""

    label_chars: int = 256
    detail_chars: int = 1000
    log_chars: int = 2000
    meta_bytes: int = 16 * 1024
    finished_bytes: int = 64 * 1024
    outgoing_bytes: int = 24 * 1024
    #: what-goes-out cards kept (the release's and the gates'); the oldest go first
    outgoing_cards: int = 8

    @classmethod
    def relay(cls) -> Bounds:
        return cls()

    def node(self, node: Node) -> None:
        node.label = cut_text(node.label, self.label_chars)[0]
        node.detail = cut_text(node.detail, self.detail_chars)[0]
        node.kind = node.kind[:32]
        node.status = node.status[:32]

    def log(self, data: dict[str, Any]) -> dict[str, Any]:
        """A log event's dict with its text cut (what was cut counted in ``cut``)."""
        text = data.get("text")
        if not isinstance(text, str) or len(text) <= self.log_chars:
            return data
        short, cut = cut_text(text, self.log_chars)
        return {**data, "text": short, "cut": cut + int(data.get("cut") or 0)}

"""The four-eyes rule of a run's gates: how many distinct approvals open a gate, and
whether the deploying operator's own counts.

``deploy.approvers = N`` (N >= 2) opens a gate only once N distinct operators approved
it, none of them the deploying operator; ``deploy.require_distinct_approver = true``
asks for one approver who is not the deployer. The rule rides in the plan's meta
(``approvers``), so everyone holding the run's state reads the same one: the engine
(:class:`engine.gates.Gates`) and the relay (its ``control`` handling) refuse the same
approvals with the same words (:meth:`ApprovalRule.refusal`), and the one reducer
(:mod:`engine.state`) keeps a gate waiting until enough approvals came.

Pure and standard library only: part of the vocabulary the relay shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import ShipdeckError

__all__ = ["META_KEY", "ApprovalRefused", "ApprovalRule"]

#: where a plan's meta carries the rule (absent: one approval, anyone's)
META_KEY = "approvers"


class ApprovalRefused(ShipdeckError):
    """An approval the four-eyes rule does not count (the deploying operator's own,
    or a second one by the same operator); the message says why and names the rule."""


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """How many distinct approvals open a gate, and whether the deploying operator's
    own counts (``distinct``: it does not)."""

    count: int = 1
    distinct: bool = False

    @classmethod
    def of(cls, deploy: Any) -> ApprovalRule:
        """The rule of a ``[deploy]`` section (``approvers``, ``require_distinct_approver``)."""
        count = max(1, int(deploy.approvers))
        return cls(count, count > 1 or bool(deploy.require_distinct_approver))

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> ApprovalRule:
        """The rule a plan's meta carries (:meth:`to_meta`); the default one when absent
        or malformed (never raises)."""
        data = (meta or {}).get(META_KEY)
        if not isinstance(data, dict):
            return cls()
        count = data.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            count = 1
        return cls(min(count, 100), data.get("distinct") is True)

    def to_meta(self) -> dict[str, Any] | None:
        """What a plan's meta carries (None for the default rule: nothing to say)."""
        if self == ApprovalRule():
            return None
        return {"count": self.count, "distinct": self.distinct}

    @property
    def four_eyes(self) -> bool:
        return self.distinct

    def text(self) -> str:
        """The rule as the config says it."""
        if self.count > 1:
            return f"deploy.approvers = {self.count}"
        return "deploy.require_distinct_approver = true" if self.distinct else "one approval"

    def needs(self) -> str:
        """``2 approvals from operators other than the deployer``."""
        n = f"{self.count} approval{'s' if self.count > 1 else ''}"
        return f"{n} from operators other than the deployer" if self.distinct else n

    def refusal(self, deployer: str, by: str, given: Sequence[str]) -> str | None:
        """Why ``by``'s approval does not count on a gate of ``deployer``'s run that
        ``given`` already approved, else None."""
        if self.distinct and by == deployer:
            return (
                f"{by} cannot approve their own deploy: {self.text()} (four eyes) needs "
                f"{self.needs()}"
            )
        if self.count > 1 and by in given:
            return (
                f"{by} has already approved this gate: {self.text()} needs {self.count} "
                f"distinct operators ({len(given)} so far: {', '.join(given)})"
            )
        return None

"""Deploy freezes: ``[[freeze]]`` windows in which a deploy or rollback is refused.

A window is one-off (``from``/``until``: TOML date-times, or dates meaning whole days)
or weekly (``days = ["fri"]``, ``after = "16:00"``, ``before = "09:00"``), read in
``tz`` (an IANA zone, default UTC; a date-time with an offset keeps its own). Each
needs a ``reason``; ``name`` is what messages call it (default: its span). Windows are
per environment: the top level's hold everywhere, ``[[env.<name>.freeze]]`` adds more.

Everything here is pure (a clock is passed in): :func:`active` says which window covers
a moment and until when the freeze lasts; :func:`check` applies the override rule: a
run inside a window is refused (:class:`Frozen`, exit 3) unless overridden with a
reason by an ``admin`` (the role the relay confirmed) when a relay is configured, or
by any operator when none is.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.configschema import key
from engine.errors import ExitCode, ShipdeckError

__all__ = ["ADMIN", "DAYS", "FREEZE_OVERRIDE", "FreezeWindow", "Frozen", "Hit", "Override", "active", "check"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: the role that may override a freeze when a relay is configured
ADMIN = "admin"
#: the action of the control event announcing an override (``Control.action``)
FREEZE_OVERRIDE = "freeze_override"
#: windows followed when working out until when a freeze lasts (back-to-back windows);
#: a longer chain (every day of the week) is reported as lasting until it is removed
_CHAIN = 64


_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(value: str) -> None:
    if value.strip().lower() not in (*DAYS, *_FULL):
        raise ValueError(f"{value!r} is not a day (expected one of {', '.join(DAYS)})")


def _clock(value: str) -> str:
    m = re.match(r"^([01]?\d|2[0-3]):([0-5]\d)(?::00)?$", str(value).strip())
    if m is None:
        raise ValueError(f'{value!r} is not a time of day (expected "HH:MM", e.g. "16:00")')
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not a time zone (expected an IANA name like Europe/Berlin)") from None
    return value


def _reason(value: str) -> str:
    if not value.strip():
        raise ValueError("must say why (it is shown to whoever is refused)")
    return " ".join(value.split())


_FROM = "start: a TOML date-time (`2026-12-24T18:00:00+01:00`; without an offset: in `tz`) or a date (its midnight)"
_UNTIL = "end (not included): a date-time, or a date (through that whole day); absent: until the entry is removed"
_DAYS = 'weekly: the days it holds, `["fri", "sat", "sun"]` (in `tz`)'
_AFTER = 'weekly: from this time on those days (`"16:00"`)'
_BEFORE = 'weekly: until this time (`"09:00"`; not after `after`: the next morning)'


@dataclass(frozen=True, kw_only=True)
class FreezeWindow:
    """``[[freeze]]``: when deploys and rollbacks are refused, and why."""

    reason: str = key(..., "why: shown to whoever is refused, recorded with an override", check=_reason)
    name: str | None = key(None, "what messages call it", shown="its span")
    from_: dt.datetime | dt.date | None = key(None, _FROM, name="from")
    until: dt.datetime | dt.date | None = key(None, _UNTIL)
    days: tuple[str, ...] = key((), _DAYS, each=_day)
    after: str | None = key(None, _AFTER, accepts=(dt.time,), check=_clock, shown="midnight")
    before: str | None = key(None, _BEFORE, accepts=(dt.time,), check=_clock, shown="midnight")
    tz: str = key("UTC", "the IANA time zone of `days`, `after`, `before` and of times without an offset", check=_zone)

    def __post_init__(self) -> None:
        """Raises ValueError for a window that is neither one-off nor weekly, or both,
        or that ends before it starts."""
        object.__setattr__(self, "days", tuple(d.strip().lower()[:3] for d in self.days))
        self._check_kind()
        if self.after and self.after == self.before:
            raise ValueError(f"after and before are both {self.after}: an empty window")
        start, end = self.span()
        if start is not None and end is not None and end <= start:
            raise ValueError(f"until ({self.until}) is not after from ({self.from_})")

    def _check_kind(self) -> None:
        """One-off (from/until) or weekly (days, after/before), never both nor neither."""
        one_off = self.from_ is not None or self.until is not None
        if one_off and (self.days or self.after or self.before):
            raise ValueError("from/until and days/after/before: a window is one-off or weekly, not both")
        if not one_off and not self.days:
            if self.after or self.before:
                raise ValueError('after/before need days (e.g. days = ["fri"])')
            raise ValueError('expected from and/or until, or days (a weekly window, e.g. days = ["fri"])')

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def span(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        """A one-off window's start and end as aware date-times (None: open)."""
        return _moment(self.from_, self.zone, end=False), _moment(self.until, self.zone, end=True)

    @property
    def title(self) -> str:
        """What messages call the window: its name, else its span."""
        return self.name or self.describe()

    def describe(self) -> str:
        """``fri 16:00-24:00 Europe/Berlin``; ``2026-12-20 00:00 - 2027-01-04 00:00 UTC``."""
        if self.days:
            days = ",".join(self.days)
            return f"{days} {self.after or '00:00'}-{self.before or '24:00'} {self.tz}"
        start, end = self.span()
        shown = [_shown(m, self.zone) if m else "..." for m in (start, end)]
        return f"{shown[0]} - {shown[1]} {self.tz}"

    def covering(self, at: dt.datetime) -> tuple[dt.datetime, dt.datetime | None] | None:
        """(start, end) of this window's occurrence covering ``at`` (aware), or None."""
        if not self.days:
            start, end = self.span()
            if (start is None or start <= at) and (end is None or at < end):
                return (start or at, end)
            return None
        zone = self.zone
        local = at.astimezone(zone)
        for back in (0, 1):  # today's occurrence, or yesterday's running past midnight
            day = local.date() - dt.timedelta(days=back)
            if DAYS[day.weekday()] not in self.days:
                continue
            start = _at(day, self.after, zone)
            end_day = day if self.before and self.before > (self.after or "00:00") else day + dt.timedelta(days=1)
            end = _at(end_day, self.before, zone)
            if start <= at < end:
                return start, end
        return None


def _at(day: dt.date, clock: str | None, zone: ZoneInfo) -> dt.datetime:
    hour, minute = map(int, (clock or "00:00").split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=zone)


def _moment(value: dt.date | None, zone: ZoneInfo, *, end: bool) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=zone)
    day = value + dt.timedelta(days=1) if end else value  # a date: that whole day
    return dt.datetime.combine(day, dt.time(), tzinfo=zone)


def _shown(moment: dt.datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Hit:
    """The window covering a moment: which (``index`` in the config's list), and until
    when the freeze lasts (``until``: back-to-back windows followed; None: open)."""

    window: FreezeWindow
    index: int
    until: dt.datetime | None

    def until_text(self) -> str:
        if self.until is None:
            return "until the window is removed from the config"
        return f"until {_shown(self.until, self.window.zone)} {self.window.tz}"

    def text(self) -> str:
        """``freeze window 'friday' (fri 16:00-24:00 Europe/Berlin): no Friday releases``."""
        w = self.window
        span = f" ({w.describe()})" if w.name else ""
        return f"freeze window {w.title!r}{span}: {w.reason}"

    def to_json(self) -> dict[str, object]:
        return {
            "window": self.window.title,
            "reason": self.window.reason,
            "until": self.until.isoformat() if self.until else None,
        }


def active(windows: tuple[FreezeWindow, ...] | list[FreezeWindow], at: dt.datetime) -> Hit | None:
    """The first window covering ``at`` (an aware date-time), with the end of the
    freeze it starts (windows that begin where it ends are followed); None: not frozen."""
    for index, window in enumerate(windows):
        span = window.covering(at)
        if span is None:
            continue
        end = span[1]
        for _ in range(_CHAIN):
            if end is None:
                break
            later = [s[1] for w in windows if (s := w.covering(end)) is not None]
            if not later:
                break
            end = None if None in later else max(later)  # type: ignore[type-var]
        else:  # back-to-back for longer than anyone plans: as good as open
            end = None
        return Hit(window, index, end)
    return None


@dataclass(frozen=True)
class Override:
    """``--override-freeze --reason TEXT``: who asks, and the role the relay confirmed
    for their token (None: no relay was asked)."""

    reason: str
    by: str
    role: str | None = None


class Frozen(ShipdeckError):
    """A deploy or rollback refused by a freeze window (``hit``); exit 3. The message
    names the window, why, until when, and how to override (or why the override given
    is not allowed)."""

    exit_code = ExitCode.STOPPED

    def __init__(self, message: str, hit: Hit) -> None:
        super().__init__(message)
        self.hit = hit


def check(
    windows: tuple[FreezeWindow, ...] | list[FreezeWindow],
    at: dt.datetime,
    *,
    kind: str = "deploy",
    override: Override | None = None,
    relay: bool = False,
) -> Hit | None:
    """Whether a ``kind`` (deploy, rollback) may start at ``at``: None when no window
    covers it; the :class:`Hit` when one does and ``override`` is allowed (recorded by
    the caller). ``relay``: a relay is configured (then only an ``admin`` overrides).

    Raises :class:`Frozen` when a window covers ``at`` and there is no override, its
    reason is empty, or its author may not override.
    """
    hit = active(windows, at)
    if hit is None:
        return None
    head = f"{kind} refused: {hit.text()}; frozen {hit.until_text()}"
    if override is None:
        who = "an admin (with the relay)" if relay else "the operator"
        raise Frozen(f"{head}. To go ahead anyway, {who} passes --override-freeze --reason TEXT", hit)
    if not override.reason.strip():
        raise Frozen(f"{head}. --override-freeze needs --reason TEXT (recorded)", hit)
    if relay and override.role != ADMIN:
        if override.role is None:
            why = "the relay must confirm an admin role (not with --without-relay)"
        else:
            why = f"the relay knows {override.by} as {override.role}, not {ADMIN}"
        raise Frozen(f"{head}. Overriding a freeze needs the {ADMIN} role: {why}", hit)
    return hit

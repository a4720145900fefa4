"""Freeze windows on fixed clocks: one-off and weekly windows, time zones, back-to-back
windows, the override rule; [[freeze]] in the config, per environment."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from engine.config import ConfigError, parse_config
from engine.freeze import FreezeWindow, Frozen, Override, active, check

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, tz=UTC) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz)


FRIDAY = FreezeWindow(reason="no Friday-evening releases", name="friday", days=("fri",), after="16:00", tz="Europe/Berlin")


def test_a_weekly_window_holds_on_its_days_after_its_time_in_its_zone() -> None:
    # 2026-12-04 is a Friday; Berlin is UTC+1 in December
    assert active([FRIDAY], at("2026-12-04 14:59")) is None  # 15:59 in Berlin
    hit = active([FRIDAY], at("2026-12-04 15:00"))  # 16:00 in Berlin
    assert hit is not None and hit.window is FRIDAY and hit.index == 0
    assert hit.until == at("2026-12-05 00:00", BERLIN)
    assert active([FRIDAY], at("2026-12-04 23:30", BERLIN)) is not None
    assert active([FRIDAY], at("2026-12-05 00:00", BERLIN)) is None  # Saturday
    assert active([FRIDAY], at("2026-12-03 17:00", BERLIN)) is None  # Thursday
    # in summer Berlin is UTC+2: the window still starts at 16:00 local
    assert active([FRIDAY], at("2026-07-03 13:59")) is None
    assert active([FRIDAY], at("2026-07-03 14:00")) is not None


def test_an_overnight_window_runs_into_the_next_morning() -> None:
    nights = FreezeWindow(reason="night", days=("mon", "tue"), after="22:00", before="06:00")
    assert active([nights], at("2026-11-30 21:59")) is None  # Monday
    assert active([nights], at("2026-11-30 22:00")).until == at("2026-12-01 06:00")
    assert active([nights], at("2026-12-01 05:59")) is not None  # Tuesday morning: Monday's night
    assert active([nights], at("2026-12-01 06:00")) is None
    assert active([nights], at("2026-12-02 05:00")) is not None  # Wednesday morning: Tuesday's night
    assert active([nights], at("2026-12-03 05:00")) is None  # Thursday morning: no Wednesday night


def test_back_to_back_windows_say_when_the_whole_freeze_ends() -> None:
    weekend = FreezeWindow(reason="weekend", days=("sat", "sun"), tz="Europe/Berlin")
    monday = FreezeWindow(reason="monday morning", days=("mon",), before="09:00", tz="Europe/Berlin")
    hit = active([FRIDAY, weekend, monday], at("2026-12-04 17:00", BERLIN))
    assert hit.window is FRIDAY and hit.until == at("2026-12-07 09:00", BERLIN)
    assert hit.until_text() == "until 2026-12-07 09:00 Europe/Berlin"


def test_a_window_on_every_day_lasts_until_it_is_removed() -> None:
    always = FreezeWindow(reason="r", days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    hit = active([always], at("2026-12-04 12:00"))
    assert hit.until is None and hit.until_text() == "until the window is removed from the config"


def test_one_off_windows_from_date_times_or_whole_days() -> None:
    xmas = FreezeWindow(reason="holidays", name="xmas", from_=dt.date(2026, 12, 24), until=dt.date(2026, 12, 26), tz="Europe/Berlin")
    assert active([xmas], at("2026-12-23 23:59", BERLIN)) is None
    assert active([xmas], at("2026-12-24 00:00", BERLIN)) is not None
    assert active([xmas], at("2026-12-26 23:59", BERLIN)).until == at("2026-12-27 00:00", BERLIN)
    assert active([xmas], at("2026-12-27 00:00", BERLIN)) is None
    launch = FreezeWindow(reason="launch", from_=at("2026-12-01 10:00"))  # open-ended
    assert active([launch], at("2030-01-01 00:00")).until is None
    local = FreezeWindow(reason="r", from_=dt.datetime(2026, 12, 1, 10), until=dt.datetime(2026, 12, 1, 12), tz="Europe/Berlin")
    assert active([local], at("2026-12-01 09:30")) is not None  # 10:30 in Berlin


def test_check_refuses_with_exit_3_naming_the_window_and_how_to_override() -> None:
    now = at("2026-12-04 16:30", BERLIN)
    assert check([FRIDAY], at("2026-12-04 10:00")) is None
    with pytest.raises(Frozen) as e:
        check([FRIDAY], now, kind="rollback", relay=True)
    assert e.value.exit_code == 3 and e.value.hit.window is FRIDAY
    assert str(e.value) == (
        "rollback refused: freeze window 'friday' (fri 16:00-24:00 Europe/Berlin): no "
        "Friday-evening releases; frozen until 2026-12-05 00:00 Europe/Berlin. To go ahead "
        "anyway, an admin (with the relay) passes --override-freeze --reason TEXT"
    )


def test_who_may_override() -> None:
    now = at("2026-12-04 16:30", BERLIN)
    # with a relay: only the role the relay confirmed as admin
    assert check([FRIDAY], now, override=Override("hotfix", "alice", "admin"), relay=True).window is FRIDAY
    with pytest.raises(Frozen, match="needs the admin role: the relay knows bob as operator, not admin"):
        check([FRIDAY], now, override=Override("hotfix", "bob", "operator"), relay=True)
    with pytest.raises(Frozen, match=r"must confirm an admin role \(not with --without-relay\)"):
        check([FRIDAY], now, override=Override("hotfix", "bob", None), relay=True)
    # without a relay: any operator, with a reason
    assert check([FRIDAY], now, override=Override("hotfix", "bob"), relay=False) is not None
    with pytest.raises(Frozen, match="needs --reason TEXT"):
        check([FRIDAY], now, override=Override("  ", "bob"))


BASE = """
[project]
name = "web"
repo = "/srv/git/web.git"

[deploy]
path = "/srv/web"

[hosts]
web = ["web1"]
"""


def test_freeze_entries_in_the_config_and_per_environment() -> None:
    text = BASE + """
[[freeze]]
name = "xmas"
from = 2026-12-24
until = 2026-12-26
reason = "holidays"

[env.staging]
default = true

[[env.production.freeze]]
days = ["Friday"]
after = 16:00:00
tz = "Europe/Berlin"
reason = "no Friday releases"
"""
    staging = parse_config(text, "x.toml")
    assert [w.title for w in staging.freeze] == ["xmas"]
    prod = parse_config(text, "x.toml", "production")
    assert [w.title for w in prod.freeze] == ["xmas", "fri 16:00-24:00 Europe/Berlin"]
    assert prod.freeze[1].days == ("fri",) and prod.freeze[1].after == "16:00"


@pytest.mark.parametrize(
    ("entry", "where", "message"),
    [
        ('days = ["fri"]\nafter = "4pm"\nreason = "r"', "after", "'4pm' is not a time of day"),
        ('days = ["fr"]\nreason = "r"', "days[0]", "'fr' is not a day (expected one of mon, tue"),
        ('days = ["fri"]\ntz = "Mars/Olympus"\nreason = "r"', "tz", "'Mars/Olympus' is not a time zone"),
        ('days = ["fri"]', "", "missing required key 'reason'"),
        ('reason = "r"', "", "expected from and/or until, or days"),
        ('from = 2026-12-24\ndays = ["fri"]\nreason = "r"', "", "from/until and days/after/before: a window is one-off or weekly, not both"),
        ('from = 2026-12-24\nuntil = 2026-12-20\nreason = "r"', "", "until (2026-12-20) is not after from (2026-12-24)"),
        ('from = "tomorrow"\nreason = "r"', "from", "expected a date-time (2026-12-24T18:00:00+01:00) or a date (2026-12-24), got str 'tomorrow'"),
        ('dayz = ["fri"]\nreason = "r"', "dayz", "unknown key (did you mean 'days'?)"),
    ],
)
def test_a_bad_freeze_entry_names_entry_key_and_line(entry: str, where: str, message: str) -> None:
    head = BASE + '\n[[freeze]]\ndays = ["sat"]\nreason = "ok"\n\n[[freeze]]\n'
    text = head + entry + "\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.toml")
    header = head.count("\n")  # the second [[freeze]]
    key = where.split("[")[0]
    own = [i for i, ln in enumerate(entry.splitlines(), header + 1) if key and ln.startswith(key + " ")]
    label = "[[freeze]][1]" + (f" {where}" if where else "")
    assert str(e.value).startswith(f"x.toml:{own[0] if own else header}: {label}: {message}")


def test_a_bad_entry_of_an_environment_names_it() -> None:
    text = BASE + '\n[[env.production.freeze]]\ndays = ["fri"]\nreason = ""\n'
    with pytest.raises(ConfigError) as e:
        parse_config(text, "x.toml")
    line = text.splitlines().index('reason = ""') + 1
    assert str(e.value) == (
        f"x.toml:{line}: [[env.production.freeze]][0] reason: must say why (it is shown to whoever is refused)"
    )

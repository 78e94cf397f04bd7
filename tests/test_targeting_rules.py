"""Targeting and pacing rules without I/O: windows (time zones, midnight, DST), versions, rates (the precedence of
pins, waypoints, assignments, rollouts and channels: tests/test_offer.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ovota.server.fleet.policy import PolicyError
from ovota.server.fleet.targeting import parse_rate, parse_schedule, parse_target, parse_versions

BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()


def test_a_window_is_open_on_its_days_in_its_time_zone() -> None:
    schedule = parse_schedule(["Mon-Fri 01:00-05:00"], "Europe/Berlin")
    monday = (2026, 11, 30)  # a Monday
    assert not schedule.is_open(at(BERLIN, *monday, 0, 59))
    assert schedule.is_open(at(BERLIN, *monday, 1, 0)) and schedule.is_open(at(BERLIN, *monday, 4, 59))
    assert not schedule.is_open(at(BERLIN, *monday, 5, 0))
    assert not schedule.is_open(at(BERLIN, 2026, 12, 5, 2, 0))  # Saturday
    # 01:00 in Berlin is 00:00 UTC in winter: the same instant read in UTC.
    assert parse_schedule(["Mon 00:00-01:00"]).is_open(at(BERLIN, *monday, 1, 30))
    week = at(BERLIN, *monday, 0, 0)
    assert schedule.open_seconds(week, week + 7 * 86400) == 5 * 4 * 3600


def test_a_window_past_midnight_and_over_a_dst_change() -> None:
    night = parse_schedule(["Sat 22:00-02:00"], "Europe/Berlin")
    assert night.is_open(at(BERLIN, 2026, 12, 6, 1, 30))  # Sunday 01:30 belongs to Saturday's window
    assert not night.is_open(at(BERLIN, 2026, 12, 7, 1, 30))  # Monday: no window on Sunday
    # The night clocks go forward (29 March 2026, 02:00 -> 03:00): 01:00-04:00 lasts two hours.
    spring = parse_schedule(["01:00-04:00"], "Europe/Berlin")
    day = at(BERLIN, 2026, 3, 29, 0, 0)
    assert spring.open_seconds(day, day + 12 * 3600) == 2 * 3600
    assert parse_schedule([]).open_seconds(10.0, 70.0) == 60.0 and parse_schedule([]).is_open(0)


@pytest.mark.parametrize(
    ("windows", "zone", "message"),
    [
        (["Mon-Fri 1-5"], "UTC", "invalid window"),
        (["Xyz 01:00-02:00"], "UTC", "invalid day"),
        (["01:00-01:00"], "UTC", "opens and closes at the same time"),
        (["01:61-02:00"], "UTC", "invalid time"),
        (["01:00-02:00"], "Mars/Olympus", "unknown time zone"),
        (["01:00-02:00"], "../../etc/passwd", "unknown time zone"),
    ],
)
def test_bad_windows_are_refused_with_a_reason(windows: list[str], zone: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_schedule(windows, zone)


def test_versions_are_compared_as_ovms_does() -> None:
    older = parse_versions("<3.3.006")
    assert older.accepts("3.3.005-14-gabcdef") and older.accepts("3.3.004/ota_0/main")
    assert not older.accepts("3.3.006") and not older.accepts("3.3.010")
    between = parse_versions(">=3.3.005,<3.3.007")
    assert between.accepts("3.3.005") and between.accepts("3.3.006-2-g1") and not between.accepts("3.3.007")
    assert parse_versions("3.3.006").accepts("3.3.006") and not parse_versions("!=3.3.006").accepts("3.3.006")
    for bad in ("<", "<3.3.006,,", "<3.3 006"):
        with pytest.raises(PolicyError):
            parse_versions(bad)


def test_targets_take_groups_or_patterns_and_versions() -> None:
    target = parse_target(["canaries"], ["TEST*"], "<3.3.006")
    members = {"CAR1"}
    assert target.takes("CAR1", "3.3.005", members, "3.3.007")
    assert target.takes("TEST42", "3.3.005", members, "3.3.007")
    assert not target.takes("CAR2", "3.3.005", members, "3.3.007")  # not named
    assert not target.takes("TEST42", "3.3.006", members, "3.3.007")  # version outside the spec
    assert target.takes("TEST42", "3.3.007", members, "3.3.007")  # already on the new build: still its
    assert not target.takes("", "3.3.005", members, "3.3.007")  # no vehicle id: never named
    assert parse_target().whole_channel and parse_target(versions="<3.3.006").takes("", "3.3.005", (), "x")
    with pytest.raises(PolicyError):
        parse_target(["bad name"])


def test_rates_and_their_growth() -> None:
    rate = parse_rate("100/h")
    assert rate is not None and rate.period == 3600 and [rate.allowance(k) for k in range(3)] == [100, 100, 100]
    growing = parse_rate("5/m", 2.0)
    assert growing is not None and [growing.allowance(k) for k in range(4)] == [5, 10, 20, 40]
    assert growing.allowance(10_000) == 10_000_000  # capped, never infinite
    assert parse_rate("") is None
    for bad, growth in (("0/h", 1.0), ("100", 1.0), ("100/y", 1.0), ("10/h", 0.5), ("", 2.0)):
        with pytest.raises(PolicyError):
            parse_rate(bad, growth)

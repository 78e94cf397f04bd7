"""POSIX TZ strings against glibc: ``time.localtime`` in a child process started with ``TZ=<string>``.

One child per TZ string evaluates a batch of instants (JSON on stdin); the test process never calls
``time.tzset``. The child gets ``TZDIR=/dev/null`` (never a directory) so glibc reads no tz database
file, neither the string as a zone name (``EST5EDT``, ``CET``) nor ``posixrules`` for a dst name
without rules: the module's C library has no database either (see the module docstring). The child can
also scan a span itself, bisect every change of ``(tm_isdst, tm_gmtoff)`` to the second and return the
instants around it, so transitions are probed where glibc has them, not only where we put them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ovota.formats.posix_tz import PosixTz, Rule, parse_tz

LO = int(datetime(1971, 1, 1, tzinfo=UTC).timestamp())
HI = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) - 1
AROUND = (-7200, -3601, -3600, -3599, -1800, -1, 0, 1, 1800, 3599, 3600, 3601, 7200)
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

REAL_WORLD = [
    "CET-1CEST,M3.5.0,M10.5.0/3",
    "EST5EDT,M3.2.0,M11.1.0",
    "PST8PDT,M3.2.0,M11.1.0",
    "AEST-10AEDT,M10.1.0,M4.1.0/3",
    "NZST-12NZDT,M9.5.0,M4.1.0/3",
    "WET0WEST,M3.5.0/1,M10.5.0",
    "GMT0BST,M3.5.0/1,M10.5.0",
    "<-03>3<-02>,M3.5.0/-2,M10.5.0/-1",  # America/Nuuk
    "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",  # Australia/Lord_Howe: a half-hour DST
    "IST-2IDT,M3.4.4/26,M10.5.0",  # Asia/Jerusalem: the Friday before the last Sunday, at 02:00
    "<+0530>-5:30",
    "IST-5:30",
    "<-03>3",
    "UTC0",
    "",
    "EST5EDT",  # a dst name without rules: M3.2.0,M11.1.0
    "HST10HDT,J60/1:30,300/-1:15:30",
    "XST3XDT,J1/-1,J365/26",
    "SST-3SDT,330/3,50/167",  # southern hemisphere, in day numbers
]

GARBAGE = [
    ":",
    ":CET-1CEST,M3.5.0,M10.5.0/3",
    "ab",
    "12",
    "abc",
    "garbage!",
    "CET-1x",
    "CET-1,M3.5.0,M10.5.0/3",
    "EST5EDT M3.2.0,M11.1.0",
    "EST5EDT,",
    "EST5EDT,M4.1.0",
    "EST5EDT,M3.2.0,M11.1.0 and some junk",
    "CET-1CEST,M3.5",
    "CET-1CEST,M3.5.9,M10.5.0",
    "CET-1CEST,M3.6.0,M10.5.0",
    "CET-1CEST,M3.5.0,J0",
    "CET-1CEST,J,M10.5.0",
    "CET-1CEST,366,M10.5.0",
    "CET-1CEST,M3.5.0/,M10.5.0",
    "CET-1CEST,M3.5.0/x,M10.5.0",
    "CET-1CEST,M3.5.0/3:,M10.5.0",
    "CET-25:70:99CEST--3,M3.5.0,M10.5.0",
    "CET- 1CEST+ 2,M3. 5.0/ -3,M10.5.0/1:+2",
    "CET-1CEST-70000,M3.5.0,M10.5.0",
    "<AB>3<ABCD>,M3.5.0,M10.5.0",
    "<ABC3",
    "CET+",
]

_CHILD = r"""
import json, sys, time
request = json.load(sys.stdin)
def at(t):
    tm = time.localtime(t)
    return [t, tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_isdst, tm.tm_zone]
def key(t):
    tm = time.localtime(t)
    return tm.tm_isdst, tm.tm_gmtoff
stamps = list(request["stamps"])
if request["scan"]:
    lo, hi, step = request["scan"]
    before = key(lo)
    for t in range(lo + step, hi, step):
        now = key(t)
        stamps.append(t)
        if now != before:
            a, b = t - step, t  # key(a) == before != key(b): find the first second of the new state
            while b - a > 1:
                m = (a + b) // 2
                a, b = (m, b) if key(m) == before else (a, m)
            stamps.extend(b + d for d in request["around"])
        before = now
print(json.dumps([at(t) for t in stamps]))
"""


def glibc(text: str, stamps: list[int], scan: tuple[int, int, int] | None = None) -> list[list[object]]:
    """glibc's localtime of each stamp (and of the scan's grid and transitions) under ``TZ=text``."""
    request = {"stamps": stamps, "scan": scan, "around": AROUND}
    env = {"TZ": text, "TZDIR": "/dev/null"}
    run = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD], input=json.dumps(request), env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    result: list[list[object]] = json.loads(run.stdout)
    return result


def ours(tz: PosixTz, t: int) -> list[object]:
    utc = datetime.fromtimestamp(t, UTC)
    lt = tz.local(utc)
    return [t, lt.year, lt.month, lt.day, lt.hour, lt.minute, lt.second, int(tz.is_dst(utc)), tz.zone_name(utc)]


def near_transitions(tz: PosixTz, years: range | list[int], around: tuple[int, ...] = AROUND) -> list[int]:
    return [t + d for y in years for t in tz.transitions(y) for d in around]


def agree(text: str, stamps: list[int], scan: tuple[int, int, int] | None = None) -> int:
    """Assert that we agree with glibc on every instant it evaluated; the number of instants."""
    tz = parse_tz(text)
    theirs = glibc(text, stamps, scan)
    wrong = [(g, m) for g in theirs if (m := ours(tz, cast(int, g[0]))) != g]
    assert not wrong, f"{text!r} = {tz}: {len(wrong)} differ, first (glibc, ours): {wrong[:3]}"
    return len(theirs)


# -- fixed strings, every transition 1971-2099 ------------------------------------------------------------


@pytest.mark.parametrize("text", REAL_WORLD)
def test_real_world_strings_match_glibc_at_every_transition(text: str) -> None:
    tz = parse_tz(text)
    # A grid every ~6 days at a drifting time of day, glibc's own transitions and ours, each +- 2 h.
    count = agree(text, near_transitions(tz, range(1971, 2100)), (LO, HI, 6 * 86400 + 3907))
    assert count > 7_000


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_is_read_as_glibc_reads_it(text: str) -> None:
    tz = parse_tz(text)
    agree(text, near_transitions(tz, range(1971, 2100, 7), (-1, 0, 1)), (LO, HI, 13 * 86400 + 3907))


# -- hypothesis: random instants, random strings, mutated strings ----------------------------------------

instants = st.lists(st.integers(LO, HI), min_size=1, max_size=100)
nearby = st.lists(st.tuples(st.integers(1971, 2099), st.sampled_from([0, 1]), st.integers(-7200, 7200)), max_size=40)


def near(tz: PosixTz, picks: list[tuple[int, int, int]]) -> list[int]:
    return [tz.transitions(year)[which] + delta for year, which, delta in picks]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(REAL_WORLD), instants, nearby)
def test_random_instants_match_glibc(text: str, stamps: list[int], picks: list[tuple[int, int, int]]) -> None:
    agree(text, stamps + near(parse_tz(text), picks))


def hms(draw: st.DrawFn, hours: int) -> str:
    """``[+-]hh[:mm[:ss]]``, hours up to ``hours``."""
    text = draw(st.sampled_from(["", "+", "-"])) + draw(st.sampled_from(["{}", "{:02}"])).format(
        draw(st.integers(0, hours))
    )
    for _ in range(draw(st.integers(0, 2))):
        text += f":{draw(st.integers(0, 59)):02}"
    return text


@st.composite
def tz_strings(draw: st.DrawFn) -> str:
    """Well-formed POSIX TZ strings: names plain or quoted, offsets, M/J/n rules with times."""

    def name() -> str:
        plain = st.text(LETTERS, min_size=3, max_size=6)
        quoted = st.text(LETTERS + "0123456789+-", min_size=3, max_size=6).map(lambda s: f"<{s}>")
        return draw(st.one_of(plain, quoted))

    def rule() -> str:
        date = draw(st.one_of(
            st.builds("M{}.{}.{}".format, st.integers(1, 12), st.integers(1, 5), st.integers(0, 6)),
            st.builds("J{}".format, st.integers(1, 365)),
            st.builds(str, st.integers(0, 365)),
        ))  # fmt: skip
        return date + (f"/{hms(draw, 167)}" if draw(st.booleans()) else "")

    text = name() + hms(draw, 24)
    shape = draw(st.sampled_from(["std", "dst", "rules", "rules", "rules", "rules"]))
    if shape != "std":
        text += name() + (hms(draw, 24) if draw(st.booleans()) else "")
    if shape == "rules":
        text += f",{rule()},{rule()}"
    return text


@settings(max_examples=80, deadline=None)
@given(tz_strings(), instants, st.lists(st.integers(1971, 2099), min_size=1, max_size=6))
def test_random_tz_strings_match_glibc(text: str, stamps: list[int], years: list[int]) -> None:
    tz = parse_tz(text)
    assert tz.std_name != "" and tz.dst_name != ""  # well formed: glibc reads both names
    agree(text, stamps + near_transitions(tz, years))


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(REAL_WORLD + GARBAGE),
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from("AMJaz019<>+-:,./ "), st.integers(0, 2)), max_size=4),
    instants,
)
def test_mutated_strings_match_glibc(text: str, edits: list[tuple[int, str, int]], stamps: list[int]) -> None:
    for at, char, how in edits:
        at %= len(text) + 1
        text = text[:at] + char * (how > 0) + text[at + (how != 1) :]  # delete, insert or replace
    tz = parse_tz(text)
    # glibc reads outside its month table for a half-read M rule with a month outside 1..12: not ours.
    assume(all(r.kind != "M" or 1 <= r.month <= 12 for r in (tz.start, tz.end)))
    agree(text, stamps + near_transitions(tz, [1971, 1988, 2023, 2024, 2099], (-1, 0, 1)))


# -- invariants and the API, no glibc ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.one_of(tz_strings(), st.sampled_from(REAL_WORLD + GARBAGE)), st.integers(LO, HI), st.integers(0, 999_999))
def test_invariants(text: str, t: int, micro: int) -> None:
    tz = parse_tz(text)
    utc = datetime.fromtimestamp(t, UTC).replace(microsecond=micro)
    offset = tz.utcoffset(utc)
    assert tz.local(utc) - utc.replace(tzinfo=None) == offset
    assert offset == timedelta(seconds=tz.dst_offset if tz.is_dst(utc) else tz.std_offset)
    assert tz.zone_name(utc) == (tz.dst_name if tz.is_dst(utc) else tz.std_name)
    if tz.start == tz.end == Rule() and tz.std_offset == tz.dst_offset:  # no DST part: a constant offset
        assert not tz.is_dst(utc) and offset == timedelta(seconds=tz.std_offset)


def test_parse_examples() -> None:
    assert parse_tz("CET-1CEST,M3.5.0,M10.5.0/3") == PosixTz(
        "CET", 3600, "CEST", 7200, Rule("M", 0, 3, 5, 7200), Rule("M", 0, 10, 5, 10800)
    )
    assert parse_tz("<+0530>-5:30") == PosixTz("+0530", 19800, "+0530", 19800)
    assert parse_tz("EST5EDT") == parse_tz("EST5EDT4,M3.2.0/2,M11.1.0/2:00:00")
    assert parse_tz("XST3XDT,J60/-1,300/26") == PosixTz(
        "XST", -10800, "XDT", -7200, Rule("J", 60, secs=-3600), Rule("n", 300, secs=26 * 3600)
    )
    assert parse_tz("") == PosixTz("Universal", 0, "", 0)
    assert parse_tz("ab") == PosixTz("", 0, "", 0)
    assert parse_tz("garbage!") == PosixTz("garbage", 0, "", 0)
    assert parse_tz("EST5EDT M3.2.0,M11.1.0") == PosixTz("EST", -18000, "EDT", -14400)  # rules never read


def test_local_time_of_an_instant() -> None:
    berlin = parse_tz("CET-1CEST,M3.5.0,M10.5.0/3")
    assert berlin.local(datetime(2024, 3, 31, 0, 59, 59, 5, tzinfo=UTC)) == datetime(2024, 3, 31, 1, 59, 59, 5)
    assert berlin.local(datetime(2024, 3, 31, 1, 0, tzinfo=UTC)) == datetime(2024, 3, 31, 3, 0)
    assert berlin.is_dst(datetime(2024, 10, 27, 0, 59, 59, tzinfo=UTC))
    assert not berlin.is_dst(datetime(2024, 10, 27, 1, 0, tzinfo=UTC))
    new_york = datetime(2024, 7, 1, 4, tzinfo=timezone(timedelta(hours=-4)))  # any aware datetime will do
    assert berlin.local(new_york) == datetime(2024, 7, 1, 10)
    with pytest.raises(ValueError):
        berlin.local(datetime(2024, 7, 1))


@pytest.mark.skipif(not Path("/usr/share/zoneinfo/posixrules").exists(), reason="no posixrules in the tz database")
def test_why_the_child_gets_no_tz_database() -> None:
    """With the host's database, glibc gives a dst name without rules New York's history, not M3.2.0,M11.1.0."""
    t = int(datetime(2004, 3, 20, 12, tzinfo=UTC).timestamp())  # between M3.2.0 (Mar 14) and 2004's Apr 4
    child = f"import time; print(time.localtime({t}).tm_isdst)"
    host = subprocess.run([sys.executable, "-I", "-S", "-c", child], env={"TZ": "XYZ3ABC"},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert host.stdout.strip() == "0"
    assert parse_tz("XYZ3ABC").is_dst(datetime.fromtimestamp(t, UTC))

"""Which modules a rollout targets, when it may offer its build and how fast: the rules, without I/O.

Target. A rollout without a target is for its whole channel. With groups or vehicle patterns it is for the
modules those name (either); with a version specification, only for modules running a version it accepts
(OVMS's ``buildverscmp``), and for modules already running the rollout's build (they got there through it).

Windows. ``Mon-Fri 01:00-05:00`` in the rollout's time zone (IANA, default UTC); a window whose end is not after
its start runs past midnight into the next day. A rollout with windows offers its build to nobody new while
every window is closed, and its step interval and rate count only the time some window was open.

Rate. ``N/h`` (``/m``, ``/d``): at most N modules are newly offered the build in any period of window time;
with a growth factor F, period k allows N·F^k.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ovota.formats import FormatError
from ovota.formats.versions import buildverscmp, check_version
from ovota.server.fleet.policy import PolicyError

MAX_PATTERNS = 64
MAX_PATTERN = 64
MAX_RATE = 10_000_000
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"(?:(?P<days>[A-Za-z,\-]+)\s+)?(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})")
_RATE = re.compile(r"(\d+)\s*/\s*([mhd])")
_PERIODS = {"m": 60.0, "h": 3600.0, "d": 86400.0}
_CLAUSE = re.compile(r"(<=|>=|==|!=|<|>|=)?\s*([0-9A-Za-z][^\s,<>=!]*)")
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# -- versions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionSpec:
    """``<3.3.006`` or ``>=3.3.005,<3.3.007``: every clause must hold (compared with ``buildverscmp``)."""

    text: str
    clauses: tuple[tuple[str, str], ...]

    def accepts(self, version: str) -> bool:
        return all(_holds(op, buildverscmp(version, bound)) for op, bound in self.clauses)


def _holds(op: str, cmp: int) -> bool:
    return {"<": cmp < 0, "<=": cmp <= 0, ">": cmp > 0, ">=": cmp >= 0, "==": cmp == 0, "!=": cmp != 0}[op]


def parse_versions(text: str) -> VersionSpec:
    clauses = []
    for part in text.split(","):
        match = _CLAUSE.fullmatch(part.strip())
        if match is None:
            raise PolicyError(f"invalid versions {text!r}: use e.g. '<3.3.006' or '>=3.3.005,<3.3.007'")
        try:
            check_version(match.group(2))
        except (FormatError, UnicodeEncodeError):
            raise PolicyError(f"invalid version {match.group(2)!r} in {text!r}") from None
        op = match.group(1) or "=="
        clauses.append(("==" if op == "=" else op, match.group(2)))
    if len(clauses) > MAX_PATTERNS:
        raise PolicyError(f"invalid versions {text!r}: at most {MAX_PATTERNS} clauses")
    return VersionSpec(text.strip(), tuple(clauses))


# -- target --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The modules a rollout is for (all of its channel's when empty)."""

    groups: tuple[str, ...] = ()
    vehicles: tuple[str, ...] = ()  # fnmatch patterns, case-sensitive like vehicle ids
    versions: VersionSpec | None = None

    @property
    def whole_channel(self) -> bool:
        return not self.groups and not self.vehicles and self.versions is None

    @property
    def named(self) -> bool:
        """Whether it names vehicles (groups or patterns), not only versions."""
        return bool(self.groups or self.vehicles)

    def selects(self, vehicle_id: str, members: Collection[str]) -> bool:
        """Whether the groups and patterns take this vehicle (``members``: the ids of the target's groups)."""
        if not self.named:
            return True
        return bool(vehicle_id) and (
            vehicle_id in members or any(fnmatch.fnmatchcase(vehicle_id, p) for p in self.vehicles)
        )

    def takes(self, vehicle_id: str, version: str, members: Collection[str], new_version: str) -> bool:
        """Whether a module running ``version`` is in the target (running the rollout's ``new_version``
        counts: that is where the target's modules end up)."""
        if not self.selects(vehicle_id, members):
            return False
        return self.versions is None or version == new_version or self.versions.accepts(version)

    def describe(self) -> str:
        parts = [f"group {g}" for g in self.groups] + [f"vehicles {v}" for v in self.vehicles]
        if self.versions is not None:
            parts.append(f"versions {self.versions.text}")
        return ", ".join(parts) or "whole channel"

    def to_json(self) -> dict[str, object]:
        return {"groups": list(self.groups), "vehicles": list(self.vehicles),
                "versions": self.versions.text if self.versions else ""}  # fmt: skip


def parse_target(groups: Collection[str] = (), vehicles: Collection[str] = (), versions: str = "") -> Target:
    for name in groups:
        if not GROUP_NAME.fullmatch(name):
            raise PolicyError(f"invalid group name {name!r}: letters, digits, '.', '_', '-', at most 64")
    for pattern in vehicles:
        if not pattern or len(pattern) > MAX_PATTERN or not pattern.isprintable():
            raise PolicyError(f"invalid vehicle pattern {pattern!r}: 1 to {MAX_PATTERN} printable characters")
    if len(groups) + len(vehicles) > MAX_PATTERNS:
        raise PolicyError(f"too many groups and patterns: at most {MAX_PATTERNS}")
    spec = parse_versions(versions) if versions.strip() else None
    return Target(tuple(dict.fromkeys(groups)), tuple(dict.fromkeys(vehicles)), spec)


# -- windows -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Weekly hours: on each of ``days`` (0 = Monday) from ``start`` to ``end`` minutes past local midnight."""

    text: str
    days: frozenset[int]
    start: int
    end: int  # not after start: it ends on the next day

    def spans(self, day: date, zone: ZoneInfo) -> Iterator[tuple[float, float]]:
        """The window's opening that starts on ``day``, as UTC timestamps (none if ``day`` is not one of its)."""
        if day.weekday() not in self.days:
            return
        begin = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(minutes=self.start)
        end_day = day if self.end > self.start else day + timedelta(days=1)
        finish = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone) + timedelta(minutes=self.end)
        # Adding a timedelta to an aware datetime is wall-clock arithmetic: a DST change that night shortens or
        # lengthens the window, as the local clocks the modules check by do.
        yield begin.timestamp(), finish.timestamp()


def parse_window(text: str) -> Window:
    match = _WINDOW.fullmatch(text.strip())
    if match is None:
        raise PolicyError(f"invalid window {text!r}: use e.g. 'Mon-Fri 01:00-05:00' or '22:00-02:00'")
    days = _parse_days(match.group("days") or "mon-sun", text)
    start, end = _minutes(match.group("start"), text), _minutes(match.group("end"), text)
    if start >= 24 * 60:
        raise PolicyError(f"invalid window {text!r}: it must start before 24:00")
    if start == end:
        raise PolicyError(f"invalid window {text!r}: it opens and closes at the same time")
    return Window(text.strip(), days, start, end)


def _minutes(clock: str, text: str) -> int:
    hours, minutes = (int(part) for part in clock.split(":"))
    if minutes > 59 or hours * 60 + minutes > 24 * 60:
        raise PolicyError(f"invalid time {clock!r} in window {text!r}")
    return hours * 60 + minutes


def _parse_days(text: str, window: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.partition("-")
        a = _day(first, window)
        b = _day(last, window) if last else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str, window: str) -> int:
    if len(name) < 3 or name[:3] not in _DAYS:
        raise PolicyError(f"invalid day {name!r} in window {window!r}: use Mon, Tue, … Sun or ranges like Mon-Fri")
    return _DAYS.index(name[:3])


@dataclass(frozen=True)
class Schedule:
    """When a rollout may offer its build: always without windows."""

    windows: tuple[Window, ...] = ()
    timezone: str = "UTC"
    _memo: dict[int, bool] = field(default_factory=dict, compare=False, repr=False)

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def is_open(self, now: float) -> bool:
        """Whether some window is open at ``now`` (windows change at whole minutes: memoised per minute)."""
        if not self.windows:
            return True
        minute = int(now // 60)
        found = self._memo.get(minute)
        if found is None:
            if len(self._memo) > 4096:
                self._memo.clear()
            found = self._memo[minute] = self.open_seconds(minute * 60.0, minute * 60.0 + 1.0) > 0
        return found

    def open_seconds(self, start: float, end: float) -> float:
        """Seconds between ``start`` and ``end`` during which some window was open (all of them without windows)."""
        if not self.windows:
            return max(0.0, end - start)
        total, reached = 0.0, start
        for begin, finish in self._openings(start, end):
            begin, finish = max(begin, reached), min(finish, end)
            if finish > begin:
                total += finish - begin
                reached = finish
        return total

    def _openings(self, start: float, end: float) -> list[tuple[float, float]]:
        zone = self.zone
        first = datetime.fromtimestamp(start, zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(end, zone).date()
        spans: list[tuple[float, float]] = []
        day = first
        while day <= last:
            for window in self.windows:
                spans.extend(window.spans(day, zone))
            day += timedelta(days=1)
        return sorted(spans)

    def describe(self) -> str:
        if not self.windows:
            return "any time"
        return f"{'; '.join(w.text for w in self.windows)} ({self.timezone})"


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_schedule(windows: Collection[str] = (), timezone: str = "UTC") -> Schedule:
    if len(windows) > MAX_PATTERNS:
        raise PolicyError(f"too many windows: at most {MAX_PATTERNS}")
    try:
        if not timezone or len(timezone) > 64 or ".." in timezone:
            raise ZoneInfoNotFoundError(timezone)
        _zone(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(f"unknown time zone {timezone!r}: use an IANA name such as Europe/Berlin") from None
    return Schedule(tuple(parse_window(w) for w in windows), timezone)


# -- rate ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """At most ``count`` modules newly offered per ``period`` seconds, times ``growth`` per period passed."""

    count: int
    period: float
    growth: float = 1.0
    text: str = ""

    def period_of(self, window_time: float) -> int:
        return int(window_time // self.period)

    def allowance(self, period: int) -> int:
        """How many modules period ``period`` (0 the first) may newly offer the build to."""
        scaled = self.count * self.growth ** min(period, 1000)
        return MAX_RATE if not math.isfinite(scaled) or scaled >= MAX_RATE else int(scaled)

    def describe(self) -> str:
        return self.text + (f", x{self.growth:g} per period" if self.growth != 1.0 else "")


def parse_rate(text: str, growth: float = 1.0) -> Rate | None:
    """``100/h`` as a Rate, None for no rate (an empty text)."""
    if not text.strip():
        if growth != 1.0:
            raise PolicyError("a rate growth needs a rate (--rate N/h)")
        return None
    match = _RATE.fullmatch(text.strip())
    if match is None or not 0 < int(match.group(1)) <= MAX_RATE:
        raise PolicyError(f"invalid rate {text!r}: use modules per period, e.g. 100/h, 5/m, 1000/d")
    if not 1.0 <= growth <= 10.0:
        raise PolicyError(f"invalid rate growth {growth}: from 1 to 10")
    return Rate(int(match.group(1)), _PERIODS[match.group(2)], growth, text.strip())


def utc_text(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")

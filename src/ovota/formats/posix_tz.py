"""POSIX ``TZ`` strings, evaluated as glibc's ``tzset`` and ``localtime_r`` do, without touching the process's TZ.

The OVMS module takes its local time zone from the config param ``vehicle timezone``, a POSIX ``TZ``
string such as ``CET-1CEST,M3.5.0,M10.5.0/3``; its daily auto-update fires when the local hour is
``ota auto.hour``. :func:`parse_tz` reads such a string the way glibc's ``time/tzset.c`` does, step for
step, and :class:`PosixTz` answers ``localtime_r`` for any UTC instant. Grammar::

    std offset [dst [offset] [,start[/time],end[/time]]]

- a name is >= 3 ASCII letters, or ``<...>`` around >= 3 letters, digits, ``+`` and ``-``;
- an offset is ``[+-]hh[:mm[:ss]]`` *west* of UTC (``CET-1`` is UTC+1), clamped to 24:59:59; the dst
  offset defaults to std + 1 h;
- a rule is ``Jn`` (1..365, Feb 29 never counted), ``n`` (0..365, Feb 29 counted) or ``Mm.w.d`` (day d,
  0 = Sunday, of week w, 5 = last, of month m); its time ``[+-]hh[:mm[:ss]]`` (hours up to 65535, in
  the local time then in force) defaults to 02:00; a missing start / end rule is ``M3.2.0`` / ``M11.1.0``.
- glibc decides DST from the two rules' instants in the *UTC* year of the instant; when the start falls
  after the end (southern hemisphere) DST is the outside of the pair.

Invariants, for every aware ``utc``: ``local(utc) - utc`` (both naive UTC) ``== utcoffset(utc)``;
``utcoffset(utc)`` is ``dst_offset`` seconds when ``is_dst(utc)`` and ``std_offset`` otherwise; a text
that ends after the std offset, or has no std name or offset, gives a constant offset and never DST
(both rules are the zero rule, both offsets equal).
Microseconds pass through; the DST decision uses whole seconds, like ``time_t``. Never raises.

glibc on garbage: it stops at the first character it does not understand and keeps what it has:
``""`` is UTC named ``Universal`` and one leading ``:`` is dropped (``":"`` is UTC named ``UTC``); an
unreadable std name (``ab``, ``12``) is UTC named ``""``; a std name with no offset (``abc``,
``garbage!``) is UTC under that name; a bad dst name still lets the rules be read, with a dst of
offset 0 named ``""`` (``CET-1,M3.5.0,M10.5.0/3`` is UTC all summer); a bad rule is left half-filled,
the fields not yet read being zero (``EST5EDT M3`` is DST all year but one hour); junk after the end
rule is ignored. All of that is reproduced here (the ``Rule``s keep the half-filled values).

Deliberate differences: glibc first tries the text as a file of the tz database (``$TZDIR/EST5EDT``,
``GMT0``, ``CET``, ...), and for a dst name without rules takes the transitions of
``$TZDIR/posixrules`` (America/New_York: the pre-2007 US rules before 2007). The module's C library has
no tz database, so no file is ever read here: we match glibc run with ``TZDIR`` naming no directory,
where the default is ``M3.2.0,M11.1.0`` at 02:00. A month outside 1..12 (left only by a
rejected rule such as ``M13.1.0`` or ``Mx``) makes glibc read outside its month table; here such a
rule acts as ``n`` day 0.
"""

from __future__ import annotations

from calendar import isleap, monthrange
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal

__all__ = ["PosixTz", "Rule", "parse_tz"]

DAY = 86400
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Rule:
    """One start or end rule: ``J`` day (1..365), ``n`` day (0..365) or ``M`` month.week.day, at ``secs``.

    The zero rule (``n`` day 0 at 00:00) is what glibc leaves in a rule it never read.
    """

    kind: Literal["J", "n", "M"] = "n"
    day: int = 0  # Jn / n day number; the weekday (0 = Sunday) of Mm.w.d
    month: int = 0
    week: int = 0
    secs: int = 0  # local time of day of the change; may be negative or past 24 h

    def change(self, year: int, offset: int) -> int:
        """The POSIX time of this rule in ``year``, for a wall clock ``offset`` seconds east of UTC."""
        t = (date(year, 1, 1) - EPOCH.date()).days * DAY if year > 1970 else 0  # glibc: 0 for <= 1970
        if self.kind == "J":
            t += (self.day - 1 + (self.day >= 60 and isleap(year))) * DAY
        elif self.kind == "n" or not 1 <= self.month <= 12:
            t += self.day * DAY if self.kind == "n" else 0
        else:
            first = date(year, self.month, 1)
            length = monthrange(year, self.month)[1]
            d = self.day - (first.weekday() + 1) % 7  # the first such weekday, 0-based; unread days >= 7 stay
            d += 7 if d < 0 else 0
            for _ in range(1, self.week):
                if d + 7 >= length:
                    break
                d += 7
            t += ((first - date(year, 1, 1)).days + d) * DAY
        return t - offset + self.secs


_US_START = Rule("M", 0, 3, 2, 7200)
_US_END = Rule("M", 0, 11, 1, 7200)


@dataclass(frozen=True)
class PosixTz:
    """A parsed TZ string; offsets are seconds *east* of UTC (``tm_gmtoff``), names as ``tm_zone``."""

    std_name: str
    std_offset: int
    dst_name: str
    dst_offset: int
    start: Rule = Rule()
    end: Rule = Rule()

    def transitions(self, year: int) -> tuple[int, int]:
        """The POSIX times at which glibc puts DST's start and end for instants in UTC ``year``."""
        return _transitions(self, year)

    def is_dst(self, utc: datetime) -> bool:
        """``tm_isdst`` for the aware instant ``utc``."""
        ts = _seconds(utc)
        start, end = _transitions(self, (EPOCH + timedelta(seconds=ts)).year)
        return (ts < end or ts >= start) if start > end else start <= ts < end

    def utcoffset(self, utc: datetime) -> timedelta:
        """``tm_gmtoff`` for the aware instant ``utc``: local minus UTC."""
        return timedelta(seconds=self.dst_offset if self.is_dst(utc) else self.std_offset)

    def zone_name(self, utc: datetime) -> str:
        """``tm_zone`` for the aware instant ``utc``."""
        return self.dst_name if self.is_dst(utc) else self.std_name

    def local(self, utc: datetime) -> datetime:
        """The naive local wall-clock time ``localtime_r`` gives for the aware instant ``utc``."""
        return (utc.astimezone(UTC) + self.utcoffset(utc)).replace(tzinfo=None)


@lru_cache(maxsize=4096)
def _transitions(tz: PosixTz, year: int) -> tuple[int, int]:
    return tz.start.change(year, tz.std_offset), tz.end.change(year, tz.dst_offset)


def _seconds(utc: datetime) -> int:
    if utc.utcoffset() is None:
        raise ValueError("a naive datetime is not an instant: give it a tzinfo (UTC)")
    return (utc - EPOCH) // timedelta(seconds=1)


def _scan(s: str, i: int, sep: str) -> tuple[list[int], int]:
    """``sscanf(s + i, "%hu%n<sep>%hu%n<sep>%hu%n")``: the values read and the end of the last one."""
    values: list[int] = []
    end = i
    while len(values) < 3:
        j = i if not values else end + 1
        if values and s[end : end + 1] != sep:
            break
        while j < len(s) and s[j] in " \t\n\v\f\r":  # %hu skips white space, takes a sign
            j += 1
        negative = s[j : j + 1] == "-"
        j += s[j : j + 1] in ("+", "-")
        k = j
        while k < len(s) and s[k] in _DIGITS:
            k += 1
        if k == j:
            break
        value = int(s[j:k])  # strtoul (saturating, negated modulo 2**64), then cut to unsigned short
        values.append(65535 if value >= 2**64 else (-value if negative else value) % 65536)
        end = k
    return values, end


def _name(s: str, i: int) -> tuple[str, int] | None:
    j = i
    while j < len(s) and s[j] in _LETTERS:
        j += 1
    if j - i >= 3:
        return s[i:j], j
    if s[i : i + 1] != "<":
        return None
    j = i + 1
    while j < len(s) and s[j] in _LETTERS + _DIGITS + "+-":
        j += 1
    return (s[i + 1 : j], j + 1) if s[j : j + 1] == ">" and j - i - 1 >= 3 else None


def _offset(s: str, i: int, default: int | None) -> tuple[int, int] | None:
    """parse_offset: seconds east and the new position; None (std only) when no number follows."""
    sign = -1
    if s[i : i + 1] in ("+", "-"):
        sign = 1 if s[i] == "-" else -1
        i += 1
    values, end = _scan(s, i, ":")
    if not values:
        return None if default is None else (default, i)
    hh, mm, ss = [*values, 0, 0][:3]
    return sign * (min(hh, 24) * 3600 + min(mm, 59) * 60 + min(ss, 59)), end


def _rule(s: str, i: int, first: bool) -> tuple[Rule, int | None]:
    """parse_rule: the rule (half-filled on failure) and the new position, or None on failure."""
    i += s[i : i + 1] == ","
    c = s[i : i + 1]
    if c == "J" or (c and c in _DIGITS):
        rule = Rule("J" if c == "J" else "n")
        i += c == "J"
        j = i
        while j < len(s) and s[j] in _DIGITS:
            j += 1
        if j == i or int(s[i:j]) > 365 or (c == "J" and int(s[i:j]) == 0):
            return rule, None
        rule, i = replace(rule, day=int(s[i:j])), j
    elif c == "M":
        values, end = _scan(s, i + 1, ".")
        month, week, day = [*values, 0, 0, 0][:3]
        rule = Rule("M", day, month, week)
        if len(values) < 3 or not (1 <= month <= 12 and 1 <= week <= 5 and day <= 6):
            return rule, None
        i = end
    elif not c:
        return (_US_START if first else _US_END), i
    else:
        return Rule(), None
    if s[i : i + 1] not in ("", "/", ","):
        return rule, None
    if s[i : i + 1] != "/":
        return replace(rule, secs=7200), i
    i += 1
    if i == len(s):
        return rule, None
    negative = s[i] == "-"
    values, i = _scan(s, i + negative, ":")
    hh, mm, ss = [*values, 0, 0][:3] if values else [2, 0, 0]
    return replace(rule, secs=(-1 if negative else 1) * (hh * 3600 + mm * 60 + ss)), i


def parse_tz(text: str) -> PosixTz:
    """The zone glibc's tzset makes of ``text``, reading no tz database file; never raises (garbage: above)."""
    text = text.split("\0", 1)[0]
    text = "Universal" if not text else text[1:] if text[0] == ":" else text
    if not text:
        return PosixTz("UTC", 0, "UTC", 0)
    std = _name(text, 0)
    if std is None:
        return PosixTz("", 0, "", 0)
    offset = _offset(text, std[1], None) if text[std[1] : std[1] + 1] in tuple("+-" + _DIGITS) else None
    if offset is None:
        return PosixTz(std[0], 0, "", 0)
    (std_name, _), (std_offset, i) = std, offset
    if i == len(text):
        return PosixTz(std_name, std_offset, std_name, std_offset)
    dst_name, dst_offset = "", 0
    dst = _name(text, i)
    if dst is not None:
        dst_name, i = dst
        dst_offset, i = _offset(text, i, std_offset + 3600) or (0, i)
    start, j = _rule(text, i, True)
    end = Rule() if j is None else _rule(text, j, False)[0]
    return PosixTz(std_name, std_offset, dst_name, dst_offset, start, end)

"""Small server-rendered SVG charts for the console: no JavaScript library, readable without scripts.

Text sizes are in the SVG's own units. The bar chart's CSS keeps it at least 36rem wide (scrolling sideways on a
phone) so that its 14-unit labels never shrink below about 11 px. The rollout chart is drawn TIME_WIDTH (440) units
wide with 13-unit text and its CSS lets it shrink to the page: on a 390 px phone it is about 346 px wide, so its text
stays near 10.2 px (9.3 px on a 360 px one); at most 36rem wide, its text is about 17 px. Where each text goes is
computed here from its estimated width (``text_width``: at least CHAR, 0.6, font sizes per character, more for wide
characters such as DejaVu Sans's digits and "%"), so that no label leaves the viewBox or overlaps another.
Legends are HTML beside the chart, in each series' colour, so no stylesheet rule for SVG text can grey them out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

PALETTE = {"updated": "#1a7f37", "failed": "#b42318", "silent": "#6e7781", "updating": "#1f6feb", "pending": "#9a6700"}
SERIES = ("pending", "updating", "updated", "failed", "silent")  # the order of a rollout sample's counts
FONT = 14
TIME_FONT = 13
TIME_WIDTH = 440
CHAR = 0.6  # estimated width of a character, in font sizes
WIDE, NARROW = frozenset("%mwMW"), frozenset(" ()-.,:;'!|fijlrtI")  # about 0.98 and at most 0.42 font sizes
MINUTE, HOUR, DAY = 60, 3600, 86400
STEPS = (MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR,
         12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 28 * DAY)  # fmt: skip
MONDAY = 4 * DAY  # 1970-01-05 was a Monday: week ticks fall on Mondays
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MIN_SPAN = 10 * MINUTE  # a younger rollout's chart shows its first ten minutes
MAX_ROWS = 3  # rows of mark labels before the marks are numbered instead, with a list below
# kind: (colour, stroke-dasharray, stroke width); each kind of mark is drawn differently
MARK_STYLE = {"start": ("#57606a", "5 4", 1.5), "step": ("#57606a", "5 4", 1.5), "halt": ("#b42318", "", 2.5),
              "pause": ("#9a6700", "2 3", 2.0), "resume": ("#1a7f37", "9 3 2 3", 2.0),
              "abort": ("#1b1f24", "", 2.5), "complete": ("#1a7f37", "", 2.5)}  # fmt: skip
BANDS = {"halt": ("#fde8e7", "halted"), "pause": ("#fff4d6", "paused")}  # shading while halted or paused
ENDS = ("resume", "abort", "complete")  # kinds of mark that end a halt or a pause


@dataclass(frozen=True)
class Mark:
    """A vertical line on a time chart: when, what kind (a key of MARK_STYLE), its short label, and its tooltip."""

    at: float
    kind: str
    label: str
    detail: str


def bar_chart(title: str, rows: Sequence[tuple[str, int]], width: int = 640) -> str:
    """Horizontal bars, one per (label, value), labelled with the value."""
    bar_height, label_width, gap = 24, 220, 6
    height = max(1, len(rows)) * (bar_height + gap) + gap
    top = max((value for _, value in rows), default=0) or 1
    parts = []
    for index, (label, value) in enumerate(rows):
        y = gap + index * (bar_height + gap)
        length = (width - label_width - 70) * value / top
        parts.append(
            f'<g class="bar"><text x="{label_width - 8}" y="{y + 17}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="#1f6feb">'
            f"<title>{escape(label)}: {value}</title></rect>"
            f'<text x="{label_width + length + 6:.1f}" y="{y + 17}">{value}</text></g>'
        )
    return (
        f'<div class="chart-box"><svg class="chart" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" font-size="{FONT}" preserveAspectRatio="xMinYMin meet">'
        f"<title>{escape(title)}</title>{''.join(parts)}</svg></div>"
    )


def event_mark(at: float, message: str, actor: str = "") -> Mark | None:
    """The mark for one rollout log message (as control.py and decisions.py write them): started, step N, halted,
    pause, resume, abort or aborted by ..., completed. None for messages that change nothing drawn (rate admits)."""
    detail = f"{message} ({actor})" if actor else message
    if message.startswith("started"):
        found = re.search(r"step 1 \((\d+)%\)", message)
        return Mark(at, "start", f"started {found.group(1)}%" if found else "started", detail)
    if found := re.match(r"step \d+ \((\d+)%\)", message):
        return Mark(at, "step", f"{found.group(1)}%", detail)
    for word, kind, label in (("halted", "halt", "halted"), ("pause", "pause", "paused"),
                              ("resume", "resume", "resumed"), ("abort", "abort", "aborted"),
                              ("completed", "complete", "completed")):  # fmt: skip
        if message.startswith(word):
            return Mark(at, kind, label, detail)
    return None


def rollout_chart(title: str, samples: Sequence[tuple[float, int, int, int, int, int]],
                  events: Sequence[tuple[float, str, str]], now: float, width: int = TIME_WIDTH) -> str:  # fmt: skip
    """A rollout's counts over time from its ``samples`` rows (time, pending, updating, updated, failed, silent),
    with a mark for each start, step, halt, pause, resume, abort and completion in its ``events`` rows (time,
    message, actor), and the time halted or paused shaded. Counts are kept between samples (one is taken when
    they change), so each series is drawn as steps and, while the rollout is active (no abort or completion among
    the events), carried forward to ``now`` (the server's clock); an ended rollout's chart ends at its last sample
    or event. Ticks fall on round UTC times; see ``time_chart``."""
    marks = [m for at, message, actor in events if (m := event_mark(at, message, actor)) is not None]
    times = [float(s[0]) for s in samples]
    series = {name: [int(s[index]) for s in samples] for index, name in enumerate(SERIES, start=1)}
    moments = [*times, *(m.at for m in marks)]
    ended = any(m.kind in ("abort", "complete") for m in marks)
    last = max(moments, default=now) if ended else max([*moments, now])
    return time_chart(title, times, series, marks, last, live=not ended, width=width)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(t: float) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    return f"{MONTHS[moment.month - 1]} {moment.day}"


def tick_label(t: float, step: int) -> str:
    """A tick's text: its UTC hour and minute ("06:30") for steps under a day, else its day ("Dec 2")."""
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M") if step < DAY else _day(t)


def _steps() -> Iterator[int]:
    yield from STEPS
    step = STEPS[-1]
    while True:
        step *= 2
        yield step


def time_ticks(start: float, end: float, plot_width: float, char: float) -> tuple[int, list[float]]:
    """The smallest round step (1 to 30 minutes, 1, 2, 3, 6 or 12 hours, 1, 2, 7, 14, 28 days, then doubling)
    whose ticks lie at least 7.5 characters apart in ``plot_width`` (room for a 6-character label and a gap), and
    its multiples within [start, end]: whole UTC minutes, hours, midnights, and Mondays for weeks."""
    span = max(end - start, 1.0)
    step = next(s for s in _steps() if s / span * plot_width >= 7.5 * char)
    offset = MONDAY if step % (7 * DAY) == 0 else 0
    first = math.ceil((start - offset) / step) * step + offset
    return step, [float(t) for t in range(first, math.floor(end) + 1, step)]


def _value_step(top: int) -> int:
    """The round step (1, 2 or 5 times a power of ten) that reaches ``top`` in at most four steps."""
    power = 1
    while True:
        for factor in (1, 2, 5):
            if factor * power * 4 >= top:
                return factor * power
        power *= 10


def text_width(text: str, font: float) -> float:
    """An upper estimate of a text's width: CHAR font sizes a character, or more where its characters are as wide
    as in DejaVu Sans (digits 0.64, capitals up to 0.79, "%" 0.95, "m" 0.97 font sizes)."""
    ems = sum(0.98 if c in WIDE else 0.42 if c in NARROW else 0.79 if c.isupper() else 0.64 for c in text)
    return max(len(text) * CHAR, ems) * font


def place_labels(items: Sequence[tuple[float, str]], width: float, font: float,
                 low: float = 2) -> list[tuple[int, float, str]]:  # fmt: skip
    """For each (line x, text) in order, its label's row (0 next to the plot), x and text-anchor: beside its line
    on the right ("start") or, where that would pass the right edge or the row has no room, on the left ("end");
    always inside [low, width - 2] if the text fits beside its line there. No two labels of a row come within half
    a character of each other; where it can be had within MAX_ROWS rows, no label is crossed by another mark's line
    either (a line runs up to its own label's row)."""
    placed: list[tuple[int, float, float, float]] = []  # row, line x, label's left, label's right
    gap = CHAR * font / 2
    out = []
    for x, text in items:
        w = text_width(text, font)
        sides = [(lo, anchor) for lo, anchor in ((x + 3, "start"), (x - 3 - w, "end")) if low <= lo <= width - 2 - w]
        sides = sides or [(min(max(low, x - 3 - w), width - 2 - w), "end")]

        def free(row: int, strict: bool, lo: float, x: float = x, w: float = w) -> bool:
            for r, line, left, right in placed:
                if r == row and lo < right + gap and left < lo + w + gap:
                    return False
                if strict and ((r < row and left - 2 <= x <= right + 2) or (r > row and lo - 2 <= line <= lo + w + 2)):
                    return False
            return True

        tries = [(r, True) for r in range(MAX_ROWS)] + [(r, False) for r in range(len(items) + 1)]
        row, lo, anchor = next((r, lo, a) for r, strict in tries for lo, a in sides if free(r, strict, lo))
        placed.append((row, x, lo, lo + w))
        out.append((row, lo if anchor == "start" else lo + w, anchor))
    return out


def _bands(marks: Sequence[Mark], last: float) -> list[tuple[str, float, float]]:
    """(kind, from, to) for each time halted or paused: from the halt or pause to the next resume, abort or
    completion, or to ``last``."""
    bands, opened = [], None
    for mark in sorted(marks, key=lambda m: m.at):
        if mark.kind in BANDS and opened is None:
            opened = (mark.kind, mark.at)
        elif mark.kind in ENDS and opened is not None:
            bands.append((*opened, mark.at))
            opened = None
    if opened is not None:
        bands.append((*opened, last))
    return bands


def time_chart(title: str, times: Sequence[float], series: Mapping[str, Sequence[int]], marks: Sequence[Mark],
               last: float, live: bool = False, width: int = TIME_WIDTH) -> str:  # fmt: skip
    """One stepped line per series (each value kept until the next time, the last one until ``last``) over a
    time axis whose ticks fall on round UTC times (``time_ticks``) and say that time ("06:00", with the day below
    at the first tick and at each new day; "Dec 2" for day steps), under a caption with the chart's first and
    last times in UTC ("(now)" after the last when ``live``). A mark is a line at its time's x with its label
    placed by ``place_labels``; over MAX_ROWS rows of labels, marks are numbered and listed below the chart.
    The legend below gives each series' last value. Every text lies within the viewBox (at 0.6 font sizes per
    character). Nothing to draw gives an empty frame that says so."""
    font, char = TIME_FONT, CHAR * TIME_FONT
    open_svg = (f'<div class="chart-box"><svg class="chart timeline" role="img" aria-label="{escape(title)}" '
                f'font-size="{font}" preserveAspectRatio="xMinYMin meet" ')  # fmt: skip
    moments = [*times, *(m.at for m in marks)]
    if not moments:
        return (f'{open_svg}viewBox="0 0 {width} 60"><title>{escape(title)}</title><rect x="1" y="1" '
                f'width="{width - 2}" height="58" fill="none" stroke="#8c959f"/><text x="{width / 2}" y="35" '
                'text-anchor="middle">No samples yet</text></svg></div>')  # fmt: skip
    start = min(moments)
    last = max(last, *moments)
    end = max(last, start + MIN_SPAN)
    top = max((max(values, default=0) for values in series.values()), default=0)
    value_step = _value_step(top)
    axis_top = max(1, math.ceil(top / value_step)) * value_step
    left = max(text_width(str(axis_top), font) + 10, 3 * char + 6)
    plot_w = width - left - (3 * char + 6)

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * plot_w

    numbered = False
    rows = place_labels([(x(m.at), m.label) for m in marks], width, font, left)
    if max((r for r, _, _ in rows), default=0) >= MAX_ROWS:
        numbered = True
        rows = place_labels([(x(m.at), str(i)) for i, m in enumerate(marks, start=1)], width, font, left)
    row_h = font + 4
    plot_top = 6 + (max(r for r, _, _ in rows) + 1) * row_h if rows else font
    plot_h, plot_bottom = 150, plot_top + 150
    step, stamps = time_ticks(start, end, plot_w, char)
    row1 = plot_bottom + 8 + font  # clear of the "0" beside the axis when a tick is at its left end
    row2 = row1 + font + 2 if step < DAY else row1
    caption_y = row2 + font + 6
    height = math.ceil(caption_y + 0.3 * font + 3)

    def y(v: float) -> float:
        return plot_top + plot_h - v / axis_top * plot_h

    parts = [f'{open_svg}viewBox="0 0 {width} {height}"><title>{escape(title)}</title>']
    for kind, begin, until in _bands(marks, last):
        colour, word = BANDS[kind]
        parts.append(f'<rect class="band band-{kind}" x="{x(begin):.1f}" y="{plot_top}" '
                     f'width="{x(until) - x(begin):.1f}" height="{plot_h}" fill="{colour}"><title>{word} from '
                     f"{_iso(begin)} to {_iso(until)}</title></rect>")  # fmt: skip
    for value in range(0, axis_top + 1, value_step):
        parts.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{left + plot_w:.1f}" y2="{y(value):.1f}" '
                     f'stroke="{"#8c959f" if value == 0 else "#e3e6ea"}"/><text class="value" x="{left - 6:.1f}" '
                     f'y="{y(value) + 0.35 * font:.1f}" text-anchor="end">{value}</text>')  # fmt: skip
    day = ""
    for t in stamps:
        parts.append(f'<g class="tick" data-time="{_iso(t)}"><line x1="{x(t):.1f}" y1="{plot_top}" x2="{x(t):.1f}" '
                     f'y2="{plot_bottom}" stroke="#eef0f2"/><line x1="{x(t):.1f}" y1="{plot_bottom}" x2="{x(t):.1f}" '
                     f'y2="{plot_bottom + 4}" stroke="#8c959f"/><text class="tick-time" x="{x(t):.1f}" y="{row1}" '
                     f'text-anchor="middle">{tick_label(t, step)}</text>')  # fmt: skip
        if step < DAY and _day(t) != day:
            day = _day(t)
            parts.append(f'<text class="tick-day" x="{x(t):.1f}" y="{row2}" text-anchor="middle">{day}</text>')
        parts.append("</g>")
    parts.append(f'<line x1="{left}" y1="{plot_top}" x2="{left}" y2="{plot_bottom}" stroke="#8c959f"/>')
    for name, values in series.items():
        points: list[tuple[float, float]] = []
        for t, v in zip(times, values, strict=True):
            if points:
                points.append((t, points[-1][1]))
            points.append((t, v))
        if points:
            points.append((last, points[-1][1]))
        drawn = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline class="series series-{escape(name)}" fill="none" stroke="{PALETTE.get(name, "#000")}" '
                     f'stroke-width="2.5" stroke-linejoin="round" points="{drawn}"><title>{escape(name)}'
                     "</title></polyline>")  # fmt: skip
    for index, (mark, (row, label_x, anchor)) in enumerate(zip(marks, rows, strict=True), start=1):
        colour, dashes, stroke = MARK_STYLE[mark.kind]
        baseline = plot_top - 5 - row * row_h
        weight = ";font-weight:600" if mark.kind in ("halt", "abort") else ""
        parts.append(f'<g class="mark mark-{mark.kind}" data-time="{_iso(mark.at)}"><line x1="{x(mark.at):.1f}" '
                     f'y1="{baseline - font + 2}" x2="{x(mark.at):.1f}" y2="{plot_bottom}" stroke="{colour}" '
                     f'stroke-width="{stroke}" stroke-dasharray="{dashes or "none"}"/><text x="{label_x:.1f}" '
                     f'y="{baseline}" text-anchor="{anchor}" style="fill:{colour}{weight}">'
                     f"{index if numbered else escape(mark.label)}</text><title>{escape(mark.detail)} at "
                     f"{_iso(mark.at)}</title></g>")  # fmt: skip
    caption = f"UTC, {_iso(start)[:16].replace('T', ' ')} to {_iso(last)[:16].replace('T', ' ')}"
    caption += " (now)" if live else ""
    caption_x = left if left + text_width(caption, font) <= width - 2 else 2
    parts.append(f'<text class="caption" x="{caption_x:.1f}" y="{caption_y}">{caption}</text></svg></div>')
    legend = "".join(
        f'<li><span class="swatch" style="background:{PALETTE.get(name, "#000")}"></span>{escape(name)} '
        f"{values[-1] if values else 0}</li>"
        for name, values in series.items()
    )
    parts.append(f'<ul class="legend" aria-label="Legend">{legend}</ul>')
    if numbered:
        listed = "".join(f"<li>{escape(m.label)}, {_iso(m.at)[:16].replace('T', ' ')} UTC</li>" for m in marks)
        parts.append(f'<ol class="chart-marks" aria-label="Marks">{listed}</ol>')
    return "".join(parts)

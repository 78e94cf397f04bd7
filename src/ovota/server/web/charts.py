"""Small server-rendered SVG charts for the console: no JavaScript library, readable without scripts.

Text sizes are in the SVG's own units; the CSS keeps a chart at least 36rem wide (scrolling sideways on a phone)
so that its 14-unit labels never shrink below about 11 px. Legends are HTML beside the chart, in each series'
colour, so no stylesheet rule for SVG text can grey them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape

PALETTE = {"updated": "#1a7f37", "failed": "#b42318", "silent": "#6e7781", "updating": "#1f6feb", "pending": "#9a6700"}
FONT = 14


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


def _time_ticks(start: float, end: float, count: int = 5) -> list[float]:
    if end <= start:
        return [start]
    step = (end - start) / (count - 1)
    return [start + i * step for i in range(count)]


def _label(t: float, span: float) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%m-%d %H:%M") if span < 3 * 86400 else moment.strftime("%Y-%m-%d")


def line_chart(title: str, times: Sequence[float], series: Mapping[str, Sequence[int]],
               marks: Sequence[tuple[float, str, str]] = (), width: int = 640) -> str:  # fmt: skip
    """One polyline per series over time, with a time axis (UTC), a value axis, and vertical ``marks``
    ``(time, label, kind)`` (kind ``step`` or ``halt``); the legend below it. Empty data gives an empty frame."""
    height, left, bottom, top_margin, right = 260, 52, 40, 22, 16
    plot_w, plot_h = width - left - right, height - bottom - top_margin
    moments = [*times, *(t for t, _, _ in marks)]
    start, end = (min(moments), max(moments)) if moments else (0.0, 1.0)
    span = (end - start) or 1.0
    top = max((max(values, default=0) for values in series.values()), default=0) or 1

    def x(t: float) -> float:
        return left + (t - start) / span * plot_w

    def y(v: float) -> float:
        return top_margin + plot_h - v / top * plot_h

    lines = []
    for name, values in series.items():
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in zip(times, values, strict=True))
        lines.append(f'<polyline class="series-{escape(name)}" fill="none" stroke="{PALETTE.get(name, "#000")}" '
                     f'stroke-width="2.5" points="{points}"><title>{escape(name)}</title></polyline>')  # fmt: skip
    stamps = _time_ticks(start, end) if moments else []
    anchors = ["start", *["middle"] * (len(stamps) - 2), "end"] if len(stamps) > 1 else ["start"] * len(stamps)
    ticks = "".join(
        f'<line x1="{x(t):.1f}" y1="{top_margin + plot_h}" x2="{x(t):.1f}" y2="{top_margin + plot_h + 5}" '
        f'stroke="#8c959f"/><text class="tick" x="{x(t):.1f}" y="{height - 20}" text-anchor="{anchor}">'
        f"{_label(t, span)}</text>"
        for t, anchor in zip(stamps, anchors, strict=True)
    )
    flags = "".join(
        f'<g class="mark mark-{escape(kind)}"><line x1="{x(t):.1f}" y1="{top_margin}" x2="{x(t):.1f}" '
        f'y2="{top_margin + plot_h}" stroke="{PALETTE["failed"] if kind == "halt" else "#57606a"}" '
        f'stroke-dasharray="5 4"/><text x="{x(t) + 3:.1f}" y="{top_margin - 6}">{escape(label)}</text>'
        f"<title>{escape(label)} at {_label(t, 0)} UTC</title></g>"
        for t, label, kind in marks
    )
    axes = (
        f'<line x1="{left}" y1="{top_margin}" x2="{left}" y2="{top_margin + plot_h}" stroke="#8c959f"/>'
        f'<line x1="{left}" y1="{top_margin + plot_h}" x2="{left + plot_w}" y2="{top_margin + plot_h}" '
        f'stroke="#8c959f"/><text x="{left - 6}" y="{top_margin + 10}" text-anchor="end">{top}</text>'
        f'<text x="{left - 6}" y="{top_margin + plot_h}" text-anchor="end">0</text>'
        f'<text x="{left + plot_w}" y="{height - 3}" text-anchor="end">time (UTC)</text>'
    )
    legend = "".join(
        f'<li><span class="swatch" style="background:{PALETTE.get(name, "#000")}"></span>{escape(name)}</li>'
        for name in series
    )
    return (
        f'<div class="chart-box"><svg class="chart" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" font-size="{FONT}" preserveAspectRatio="xMinYMin meet">'
        f"<title>{escape(title)}</title>{axes}{ticks}{flags}{''.join(lines)}</svg></div>"
        f'<ul class="legend" aria-label="Legend">{legend}</ul>'
    )

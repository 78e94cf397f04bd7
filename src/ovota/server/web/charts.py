"""Small server-rendered SVG charts for the console: no JavaScript library, readable without scripts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

PALETTE = {"updated": "#1a7f37", "failed": "#b42318", "silent": "#6e7781", "updating": "#1f6feb", "pending": "#d4a72c"}


def bar_chart(title: str, rows: Sequence[tuple[str, int]], width: int = 640) -> str:
    """Horizontal bars, one per (label, value), labelled with the value."""
    bar_height, label_width, gap = 22, 220, 6
    height = max(1, len(rows)) * (bar_height + gap) + gap
    top = max((value for _, value in rows), default=0) or 1
    parts = []
    for index, (label, value) in enumerate(rows):
        y = gap + index * (bar_height + gap)
        length = (width - label_width - 70) * value / top
        parts.append(
            f'<g class="bar"><text x="{label_width - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="#1f6feb">'
            f"<title>{escape(label)}: {value}</title></rect>"
            f'<text x="{label_width + length + 6:.1f}" y="{y + 16}">{value}</text></g>'
        )
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet"><title>{escape(title)}</title>{"".join(parts)}</svg>'
    )


def line_chart(title: str, times: Sequence[float], series: Mapping[str, Sequence[int]], width: int = 640) -> str:
    """One polyline per series over time, with a legend; empty data gives an empty frame."""
    height, left, bottom, top_margin = 220, 44, 24, 10
    plot_w, plot_h = width - left - 10, height - bottom - top_margin
    start, end = (times[0], times[-1]) if times else (0.0, 1.0)
    span = (end - start) or 1.0
    top = max((max(values, default=0) for values in series.values()), default=0) or 1

    def point(t: float, v: int) -> str:
        return f"{left + (t - start) / span * plot_w:.1f},{top_margin + plot_h - v / top * plot_h:.1f}"

    lines = []
    for name, values in series.items():
        points = " ".join(point(t, v) for t, v in zip(times, values, strict=True))
        color = PALETTE.get(name, "#000")
        lines.append(f'<polyline class="series-{escape(name)}" fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{points}"><title>{escape(name)}</title></polyline>')  # fmt: skip
    legend = "".join(
        f'<text x="{left + i * 100}" y="{height - 4}" fill="{PALETTE.get(name, "#000")}">■ {escape(name)}</text>'
        for i, name in enumerate(series)
    )
    axes = (
        f'<line x1="{left}" y1="{top_margin}" x2="{left}" y2="{top_margin + plot_h}" stroke="#8c959f"/>'
        f'<line x1="{left}" y1="{top_margin + plot_h}" x2="{left + plot_w}" y2="{top_margin + plot_h}" '
        f'stroke="#8c959f"/><text x="{left - 6}" y="{top_margin + 10}" text-anchor="end">{top}</text>'
        f'<text x="{left - 6}" y="{top_margin + plot_h}" text-anchor="end">0</text>'
    )
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMinYMin meet"><title>{escape(title)}</title>{axes}{"".join(lines)}{legend}</svg>'
    )

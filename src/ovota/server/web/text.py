"""How the console writes times, sizes and notices."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from aiohttp import web

from ovota.server.store.repository import Build


def when(timestamp: float | None) -> str:
    """A UTC time to the minute; an em dash for none."""
    if not timestamp:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def size(count: int) -> str:
    """Bytes as people read them: 812 B, 64.0 KiB, 2.0 MiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


def duration(seconds: float) -> str:
    """Seconds as a setting is written: 90s, 10m, 6h, 2d."""
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds / length:g}{unit}"
    return f"{seconds:g}s"


def build_options(builds: list[tuple[Build, frozenset[str]]]) -> str:
    """``<option>``s naming each build by version, products and SHA-256 prefix (one version may exist per
    product)."""
    return "".join(
        f'<option value="{b.sha256}">{escape(b.version)} for {escape(", ".join(sorted(products)))} '
        f"({b.sha256[:12]})</option>"
        for b, products in builds
    )


def selected(options: str, value: str) -> str:
    """``<option>``s with the one whose value is ``value`` (already HTML-escaped) marked selected: a refused form
    drawn again keeps what was picked."""
    return options.replace(f'value="{value}"', f'value="{value}" selected', 1) if value else options


def notice(request: web.Request) -> str:
    """The ``?ok=`` or ``?error=`` message an action redirected with."""
    if "error" in request.query:
        return f'<p class="error" role="alert">{escape(request.query["error"])}</p>'
    if "ok" in request.query:
        return f'<p class="ok" role="status">{escape(request.query["ok"])}</p>'
    return ""

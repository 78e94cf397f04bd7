"""The rollout chart (issue 28): round UTC ticks that say their time, marks at their times and in their own
styles, series carried forward to now, and every label inside the viewBox without overlapping another; in
Chromium, a 3-day chart fits a desktop and a 390 (and 360) px phone with text no smaller than 9 px, no two texts
overlapping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from playwright.sync_api import Browser

from ovota.server.web.charts import CHAR, DAY, HOUR, MINUTE, STEPS, TIME_FONT, rollout_chart

CSS = Path(__file__).resolve().parent.parent / "src" / "ovota" / "server" / "web" / "static" / "site.css"
T0 = datetime(2026, 12, 1, 9, 17, tzinfo=UTC).timestamp()  # the rollout starts at an uneven time
STARTED = "started: 3.3.005 -> 3.3.006, matches 1000 known modules; step 1 (1%)"
HALT_AT = datetime(2026, 12, 3, tzinfo=UTC).timestamp()  # a midnight: a tick for any step up to a day
NOW = datetime(2026, 12, 4, 10, 5, tzinfo=UTC).timestamp()
EVENTS = [
    (T0, STARTED, "alice"),
    (T0 + 600, "offered to 12 more modules (rate)", "server"),
    (T0 + DAY, "step 2 (10%)", "server"),
    (HALT_AT, "halted at step 2 (10%): 6 of 100 failed (6%) >= 5%", "server"),
    (HALT_AT + 6 * HOUR + 40 * MINUTE, "resume", "alice"),
    (HALT_AT + 20 * HOUR, "step 3 (50%)", "server"),
]
SAMPLES = [
    (T0 + 60, 10, 0, 0, 0, 0),
    (T0 + 3 * HOUR, 2, 3, 5, 0, 0),
    (T0 + DAY + 600, 80, 10, 10, 0, 0),
    (HALT_AT - 2 * HOUR, 20, 10, 64, 6, 0),
    (HALT_AT + 22 * HOUR, 300, 100, 90, 6, 4),
]


def svg_of(html: str) -> ET.Element:
    found = re.search(r"<svg.*</svg>", html, re.S)
    assert found, html
    return ET.fromstring(found.group(0))


def utc(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def child(element: ET.Element, tag: str) -> ET.Element:
    found = element.find(tag)
    assert found is not None, (element.attrib, tag)
    return found


def ticks(svg: ET.Element) -> list[tuple[float, float, list[str]]]:
    """(time, x, texts) per tick."""
    return [
        (utc(g.attrib["data-time"]), float(child(g, "line").attrib["x1"]), [t.text or "" for t in g.iter("text")])
        for g in svg.iter("g")
        if g.attrib.get("class") == "tick"
    ]


def marks(svg: ET.Element) -> list[tuple[str, float, float, ET.Element]]:
    """(kind, time, x, label) per mark."""
    found = []
    for g in svg.iter("g"):
        if g.attrib.get("class", "").startswith("mark "):
            line, text = child(g, "line"), child(g, "text")
            kind = g.attrib["class"].split()[1].removeprefix("mark-")
            found.append((kind, utc(g.attrib["data-time"]), float(line.attrib["x1"]), text))
    return found


def scale(svg: ET.Element) -> tuple[float, float]:
    """(x of time 0, units per second), from the first and last ticks."""
    (t1, x1, _), *_, (t2, x2, _) = ticks(svg)
    per = (x2 - x1) / (t2 - t1)
    return x1 - t1 * per, per


def extent(text: ET.Element, font: float) -> tuple[float, float]:
    """A text's left and right, at CHAR font sizes per character."""
    width = len(text.text or "") * CHAR * font
    x, anchor = float(text.attrib["x"]), text.attrib.get("text-anchor", "start")
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return left, left + width


def assert_texts_inside(svg: ET.Element) -> None:
    _, _, width, height = map(float, svg.attrib["viewBox"].split())
    font = float(svg.attrib["font-size"])
    for text in svg.iter("text"):
        left, right = extent(text, font)
        y = float(text.attrib["y"])
        assert left >= 0 and right <= width, f"{text.text!r} spans {left:.1f}..{right:.1f} of {width}"
        assert y - 0.8 * font >= 0 and y + 0.25 * font <= height, f"{text.text!r} at y {y} of {height}"


def assert_texts_apart(svg: ET.Element) -> None:
    """No two texts' boxes (CHAR font sizes a character, 0.8 above the baseline and 0.25 below) overlap."""
    font = float(svg.attrib["font-size"])
    boxes = [(*extent(t, font), float(t.attrib["y"]) - 0.8 * font, float(t.attrib["y"]) + 0.25 * font, t.text)
             for t in svg.iter("text")]  # fmt: skip
    for i, (left, right, top, bottom, text) in enumerate(boxes):
        for left2, right2, top2, bottom2, text2 in boxes[i + 1 :]:
            assert right <= left2 or right2 <= left or bottom <= top2 or bottom2 <= top, (text, text2)


def assert_marks_apart(svg: ET.Element) -> None:
    font = float(svg.attrib["font-size"])
    rows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for _, _, _, text in marks(svg):
        rows[text.attrib["y"]].append(extent(text, font))
    for row in rows.values():
        row.sort()
        for (_, right), (left, _) in pairwise(row):
            assert right < left, f"mark labels overlap: {row}"


def test_ticks_are_round_utc_times_that_say_their_time() -> None:
    svg = svg_of(rollout_chart("Rollout 7 over time", SAMPLES, EVENTS, NOW))
    found = ticks(svg)
    times = [t for t, _, _ in found]
    step = times[1] - times[0]
    assert step in STEPS and step >= HOUR and 4 <= len(found) <= 8
    assert times == sorted(times) and all(t % step == 0 for t in times)
    assert all(b - a == step for a, b in pairwise(times))
    assert [x for _, x, _ in found] == sorted(x for _, x, _ in found)
    day = ""
    for t, _, texts in found:
        moment = datetime.fromtimestamp(t, UTC)
        assert texts[0] == moment.strftime("%H:%M")
        if moment.strftime("%b %-d") != day:  # the day under the first tick and at each new day
            day = moment.strftime("%b %-d")
            assert texts[1:] == [day]
        else:
            assert texts[1:] == []
    caption = [t.text for t in svg.iter("text") if t.attrib.get("class") == "caption"]
    assert caption == ["UTC, 2026-12-01 09:17 to 2026-12-04 10:05 (now)"]


def test_marks_sit_at_their_times_in_their_own_styles() -> None:
    svg = svg_of(rollout_chart("Rollout 7 over time", SAMPLES, EVENTS, NOW))
    origin, per = scale(svg)
    found = marks(svg)
    assert [(kind, text.text) for kind, _, _, text in found] == [
        ("start", "started 1%"),
        ("step", "10%"),
        ("halt", "halted"),
        ("resume", "resumed"),
        ("step", "50%"),
    ]
    for _, t, x, _ in found:
        assert abs(x - (origin + t * per)) < 0.15
    halt = next(x for kind, _, x, _ in found if kind == "halt")
    assert halt == next(x for t, x, _ in ticks(svg) if t == HALT_AT)  # at the midnight tick, not left of it
    styles = {
        kind: (child(g, "line").attrib["stroke"], child(g, "line").attrib["stroke-dasharray"])
        for g in svg.iter("g")
        if (kind := g.attrib.get("class", "")).startswith("mark ")
    }
    assert len(set(styles.values())) == len(styles) - 1  # start and step look alike; halt, resume differ
    band = next(r for r in svg.iter("rect") if r.attrib.get("class") == "band band-halt")
    assert abs(float(band.attrib["x"]) - halt) < 0.15
    assert abs(float(band.attrib["x"]) + float(band.attrib["width"]) - (origin + found[3][1] * per)) < 0.3
    assert_texts_inside(svg)
    assert_marks_apart(svg)
    assert_texts_apart(svg)


def test_an_active_rollout_is_carried_forward_to_now() -> None:
    html = rollout_chart("Rollout 7 over time", SAMPLES, EVENTS, NOW)
    svg = svg_of(html)
    origin, per = scale(svg)
    lines = [p for p in svg.iter("polyline") if "series" in p.attrib.get("class", "")]
    assert len(lines) == 5
    for line in lines:
        points = [tuple(map(float, p.split(","))) for p in line.attrib["points"].split()]
        assert abs(points[-1][0] - (origin + NOW * per)) < 0.15
        assert points[-1][1] == points[-2][1]  # the last sample's value, held
        assert all(a[0] <= b[0] for a, b in pairwise(points))
    assert "(now)" in html and "updated 90</li>" in html


def test_an_aborted_rollout_ends_at_its_abort() -> None:
    aborted = T0 + 2 * DAY
    events = [*EVENTS[:4], (aborted, "abort", "bob")]
    svg = svg_of(rollout_chart("Rollout 7 over time", SAMPLES[:4], events, NOW))
    origin, per = scale(svg)
    assert [kind for kind, *_ in marks(svg)] == ["start", "step", "halt", "abort"]
    for line in svg.iter("polyline"):
        last_x = float(line.attrib["points"].split()[-1].split(",")[0])
        assert abs(last_x - (origin + aborted * per)) < 0.15
    assert "(now)" not in ET.tostring(svg, encoding="unicode")
    assert_texts_inside(svg)


def test_pause_resume_abort_and_completion_are_marked() -> None:
    events = [
        (T0, STARTED, "a"),
        (T0 + HOUR, "pause", "a"),
        (T0 + 2 * HOUR, "resume", "a"),
        (T0 + 3 * HOUR, "aborted by promote", "a"),
        (T0 + 4 * HOUR, "completed: 3.3.006 is the channel's build", "s"),
    ]
    svg = svg_of(rollout_chart("r", SAMPLES[:2], events, NOW))
    assert [(kind, text.text) for kind, _, _, text in marks(svg)] == [
        ("start", "started 1%"),
        ("pause", "paused"),
        ("resume", "resumed"),
        ("abort", "aborted"),
        ("complete", "completed"),
    ]
    assert [r.attrib["class"] for r in svg.iter("rect")] == ["band band-pause"]


def test_marks_at_the_right_edge_are_anchored_end() -> None:
    late = NOW - 20 * MINUTE
    events = [*EVENTS, (late, "halted at step 3 (50%): silent", "server"), (late + 60, "resume", "alice")]
    svg = svg_of(rollout_chart("Rollout 7 over time", SAMPLES, events, NOW))
    labels = {text.text: text for _, _, _, text in marks(svg)}
    assert labels["halted"].attrib["text-anchor"] == labels["resumed"].attrib["text-anchor"] == "end"
    assert labels["halted"].attrib["y"] != labels["resumed"].attrib["y"]
    assert_texts_inside(svg)
    assert_marks_apart(svg)
    assert_texts_apart(svg)


def test_too_many_marks_are_numbered_and_listed() -> None:
    late = NOW - 20 * MINUTE
    events = [*EVENTS, *((late + i * 60, m, "a") for i, m in enumerate(["halted at x", "resume", "pause", "resume"]))]
    html = rollout_chart("Rollout 7 over time", SAMPLES, [*events, (late + 300, "abort", "alice")], NOW)
    svg = svg_of(html)
    assert [text.text for *_, text in marks(svg)] == [str(n) for n in range(1, 11)]
    listed = re.findall(r"<li>([^<]*)</li>", html.split('class="chart-marks"')[1])
    assert listed[0] == "started 1%, 2026-12-01 09:17 UTC" and listed[-1] == "aborted, 2026-12-04 09:50 UTC"
    assert len(listed) == 10
    assert len({text.attrib["y"] for *_, text in marks(svg)}) <= 3
    assert_texts_inside(svg)
    assert_marks_apart(svg)
    assert_texts_apart(svg)


MESSAGES = ["halted at x", "pause", "resume", "abort", "step 2 (10%)", STARTED, "completed: x", "offered to 3 more"]


@given(
    st.lists(st.integers(0, 30 * DAY), min_size=1, max_size=12),
    st.lists(st.tuples(st.sampled_from(MESSAGES), st.integers(0, 2 * DAY)), max_size=12),
    st.integers(0, 40 * DAY),
    st.integers(1, 10_000),
)
def test_any_chart_keeps_its_text_inside_and_apart(
    offsets: list[int], messages: list[tuple[str, int]], after: int, most: int
) -> None:
    times = sorted(T0 + o for o in offsets)
    samples = [(t, most * i // 12, i, most * (12 - i) // 12, i * 3, 0) for i, t in enumerate(times)]
    events = sorted((times[i % len(times)] + late, m, "x") for i, (m, late) in enumerate(messages))
    svg = svg_of(rollout_chart("r", samples, events, times[-1] + after))
    assert_texts_inside(svg)
    assert_marks_apart(svg)
    assert_texts_apart(svg)
    found = ticks(svg)
    assert found and all(t % MINUTE == 0 for t, _, _ in found)


def test_nothing_yet() -> None:
    assert "No samples yet" in rollout_chart("r", [], [], NOW)


def test_a_three_day_chart_fits_a_desktop_and_a_phone(browser: Browser) -> None:
    chart = rollout_chart("Rollout 7 over time", SAMPLES, EVENTS, NOW)
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><style>{CSS.read_text()}</style></head><body><main>'
        f'<section class="rollout state-running"><h2>Rollout 7</h2>{chart}</section></main></body></html>'
    )
    for name, width, height in (("desktop", 1366, 768), ("phone", 390, 844), ("small-phone", 360, 740)):
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            page.set_content(html)
            page.screenshot(path=f"/tmp/chart-{name}.png", full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
            box = page.locator("svg.chart").bounding_box()
            assert box is not None and box["width"] <= width
            texts = page.evaluate("""() => [...document.querySelectorAll('svg.chart text')].map((t) => {
                const r = t.getBoundingClientRect(); return [t.textContent, r.left, r.right, r.top, r.bottom,
                r.height, parseFloat(getComputedStyle(t).fontSize)]; })""")
            assert len(texts) > 10
            for text, left, right, top, bottom, high, _ in texts:
                assert box["x"] - 0.5 <= left and right <= box["x"] + box["width"] + 0.5, (name, text)
                assert box["y"] - 0.5 <= top and bottom <= box["y"] + box["height"] + 0.5, (name, text)
                assert high >= 9, (name, text, high)
            for i, (text, left, right, top, bottom, *_) in enumerate(texts):  # no two texts overlap
                for other, left2, right2, top2, bottom2, *_ in texts[i + 1 :]:
                    apart = right <= left2 + 0.5 or right2 <= left + 0.5 or bottom <= top2 + 0.5 or bottom2 <= top + 0.5
                    assert apart, (name, text, other)
            scaled = box["width"] / float((page.locator("svg.chart").get_attribute("viewBox") or "").split()[2])
            assert min(size for *_, size in texts) * scaled >= 9, (name, scaled)
            assert TIME_FONT * scaled >= 9
        finally:
            page.close()

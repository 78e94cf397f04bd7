"""The console's Fleet page: which module runs what and what it is offered now (and why), filtered, searched,
sorted and paged in the database, so a page of a 100,000-module fleet stays small. Filters live in the URL, so
a filtered view can be shared."""

from __future__ import annotations

import re
from html import escape
from urllib.parse import quote, urlencode

from aiohttp import web

from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.explain import Explainer
from ovota.server.fleet.modules import (
    FILTERS,
    OVERRIDES,
    ROLLOUT_STATES,
    SORTS,
    FleetQuery,
    Module,
    page_modules,
    state_counts,
    versions_in_use,
)
from ovota.server.fleet.modules import downloaded as downloaded_by
from ovota.server.fleet.offer import Offer
from ovota.server.store.errors import RepositoryError
from ovota.server.web.charts import bar_chart
from ovota.server.web.frame import console_page
from ovota.server.web.login import require_user
from ovota.server.web.text import size, when

PAGE = 100
# Columns an operator needs at a glance; the rest (address, first seen, check-ins, bytes received) fold into a
# line under the vehicle, so the table fits 1366 px and turns into cards on a phone (site.css).
COLUMNS = (("vehicle", "Vehicle"), ("channel", "Channel"), ("version", "Running"), ("last_seen", "Last seen"),
           ("", "Rollout"), ("", "Offered now"))  # fmt: skip
SORT_NAMES = {"vehicle": "vehicle", "channel": "channel", "version": "version", "address": "address",
              "first_seen": "first seen", "last_seen": "last seen", "checkins": "check-ins"}  # fmt: skip
PARAMS = (*FILTERS, "sort", "order", "page")


def _link(params: dict[str, str], **changes: str) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v}
    return "/console/fleet?" + urlencode(merged)


def _header(params: dict[str, str], key: str, label: str) -> str:
    if not key:
        return f'<th scope="col">{label}</th>'
    current, descending = params.get("sort", "vehicle"), params.get("order") == "desc"
    order = "asc" if current == key and descending else "desc" if current == key else "asc"
    arrow = (" ▼" if descending else " ▲") if current == key else ""
    sort = "ascending" if current == key and not descending else "descending" if current == key else "none"
    return (f'<th scope="col" aria-sort="{sort}"><a href="{escape(_link(params, sort=key, order=order, page=""))}">'
            f"{label}{arrow}</a></th>")  # fmt: skip


def _row(m: Module, received: int, state: str, offer: Offer | None) -> str:
    who = escape(m.vehicle_id) or f"<small>{escape(m.module)}</small>"
    details = (f"{escape(m.address)} · {m.checkins} check-ins · first seen {when(m.first_seen)}"
               + (f" · received {size(received)}" if received else ""))  # fmt: skip
    if offer is None:
        offered = "<small>no build on its channel</small>"
    elif offer.build is None:
        offered = f'nothing <small class="why">{escape(offer.why)}</small>'
    elif offer.build.version == m.version:  # OVMS then sees nothing newer
        offered = f'nothing new <small class="why">it runs {escape(m.version)}: {escape(offer.why)}</small>'
    else:
        offered = f'<strong>{escape(offer.build.version)}</strong> <small class="why">{escape(offer.why)}</small>'
    badge = f'<span class="state state-{escape(state)}">{escape(state)}</span>' if state else "—"
    return (
        f'<tr><td data-label="Vehicle"><a href="/console/fleet/module/{quote(m.module, safe="")}">{who}</a>'
        f'<small class="more">{details}</small></td>'
        f'<td data-label="Channel">{escape(m.product)}/{escape(m.tag)}</td>'
        f'<td data-label="Running">{escape(m.version)} <small>{escape(m.partition)}</small></td>'
        f'<td data-label="Last seen">{when(m.last_seen)}</td><td data-label="Rollout">{badge}</td>'
        f'<td data-label="Offered now" class="offered">{offered}</td></tr>'
    )


def _select(name: str, label: str, current: str, choices: list[tuple[str, str]]) -> str:
    options = "".join(
        f'<option value="{escape(value)}"{" selected" if value == current else ""}>{escape(text)}</option>'
        for value, text in choices
    )
    return f'<div><label for="{name}">{label}</label><select id="{name}" name="{name}">{options}</select></div>'


def _filters(params: dict[str, str], versions: list[tuple[str, int]]) -> str:
    def text(name: str, label: str, hint: str) -> str:
        return (f'<div><label for="{name}">{label}</label><input type="text" id="{name}" name="{name}" '
                f'value="{escape(params[name])}" placeholder="{hint}"></div>')  # fmt: skip

    known = [(v, f"{v} ({n})") for v, n in versions]
    if params["version"] and params["version"] not in dict(versions):
        known.append((params["version"], params["version"]))
    return (
        '<form method="get" action="/console/fleet" class="filters fields">'
        + text("q", "Search", "vehicle id, version, address")
        + text("product", "Product", "all")
        + text("tag", "Channel", "all")
        + _select("version", "Version", params["version"], [("", "all"), *known])
        + _select("state", "Rollout state", params["state"], [("", "any"), *((s, s) for s in ROLLOUT_STATES)])
        + _select("override", "Pinned or assigned", params["override"], [("", "any"), *((o, o) for o in OVERRIDES)])
        + _select("sort", "Sort by", params["sort"] or "vehicle", list(SORT_NAMES.items()))
        + '<div><button type="submit">Show</button> <a href="/console/fleet">Clear</a></div></form>'
    )


def _state_links(params: dict[str, str], counts: dict[str, int]) -> str:
    links = []
    for state, count in counts.items():
        current = params["state"] == state
        target = _link(params, state="" if current else state, page="")
        marked = ' aria-current="true"' if current else ""
        links.append(f'<a class="state state-{state}{" current" if current else ""}" href="{escape(target)}"'
                     f"{marked}>{state} {count}</a>")  # fmt: skip
    return f'<p class="states" aria-label="Modules per rollout state">In active rollouts: {" ".join(links)}</p>'


async def fleet_page(request: web.Request) -> web.Response:
    operator = await require_user(request)
    params = {k: request.query.get(k, "") for k in PARAMS}
    try:
        query = FleetQuery.from_params(params)
    except RepositoryError as err:
        refused = (
            f'<p class="error" role="alert">{escape(str(err))}</p><p><a href="/console/fleet">Every module</a></p>'
        )
        return await console_page(request, operator, "Fleet", refused, 400)
    sort = params["sort"] if params["sort"] in SORTS else "vehicle"
    # ASCII digits only (str.isdigit also takes "²", which int() refuses), and few of them: SQLite offsets are 64-bit.
    number = max(1, int(params["page"])) if re.fullmatch(r"[0-9]{1,9}", params["page"]) else 1
    now = request.app[CONTEXT_KEY].clock.now()

    def read(desk: Desk) -> tuple[list[str], int, list[tuple[str, int]], dict[str, int], int]:
        db = desk.repo.db
        modules, total = page_modules(db, query, sort, params["order"] == "desc", PAGE, (number - 1) * PAGE)
        received = downloaded_by(db, [m.module for m in modules])
        explainer = Explainer(desk.rollouts, now)
        rows = [_row(m, *received[m.module], explainer.of(m)) for m in modules]
        (registered,) = db.execute("SELECT count(*) FROM modules").fetchone()
        return rows, total, versions_in_use(db, FleetQuery()), state_counts(db, query), int(registered)

    rows, total, versions, counts, registered = await request.app[CONTEXT_KEY].run(read)
    first, last = (number - 1) * PAGE + 1, (number - 1) * PAGE + len(rows)
    pager = []
    if number > 1:
        pager.append(f'<a rel="prev" href="{escape(_link(params, page=str(number - 1)))}">← Previous</a>')
    if last < total:
        pager.append(f'<a rel="next" href="{escape(_link(params, page=str(number + 1)))}">Next →</a>')
    filtered = any(params[k] for k in FILTERS)
    if rows:
        shown = f"Showing {first} to {last} of {total}" + (f" ({registered} registered)" if filtered else "")
    elif total:
        shown = f"Page {number} is past the last one ({-(-total // PAGE)})."
    elif registered:
        shown = f"No module matches these filters ({registered} registered)."
    else:
        shown = "No modules seen yet."
    head = "".join(_header(params, key, label) for key, label in COLUMNS)
    chart = bar_chart("Modules per running version", versions) if versions else "<p>No modules seen yet.</p>"
    title = f"{total} modules" + (" match" if filtered else "")
    body = f"""<section aria-labelledby="modules-title" id="modules-section" data-live>
<h2 id="modules-title">{title}</h2>{_filters(params, versions)}{_state_links(params, counts)}
<p class="hint" id="shown">{shown}</p>
<div class="table"><table id="modules" class="cards"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>
</table></div><nav class="pager" aria-label="Pages">{" ".join(pager)}</nav></section>
<section aria-labelledby="versions-title" id="versions" data-live><h2 id="versions-title">Modules per version</h2>
{chart}</section>"""
    return await console_page(request, operator, "Fleet", body)


def add_fleet_page(app: web.Application) -> None:
    app.router.add_get("/console/fleet", guarded(fleet_page))

"""The console's Fleet page: which module runs what and what it is offered now, searched, sorted and paged in the
database, so a page of a 100,000-module fleet stays small."""

from __future__ import annotations

import re
from html import escape
from urllib.parse import quote, urlencode

from aiohttp import web

from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.explain import Explainer
from ovota.server.fleet.modules import SORTS, FleetQuery, Module, page_modules, versions_in_use
from ovota.server.fleet.modules import downloaded as downloaded_by
from ovota.server.fleet.offer import Offer
from ovota.server.web.charts import bar_chart
from ovota.server.web.layout import page
from ovota.server.web.login import console_nav, require_user
from ovota.server.web.rollout_banner import halt_banner
from ovota.server.web.text import size, when

PAGE = 100
COLUMNS = (("vehicle", "Vehicle"), ("channel", "Channel"), ("version", "Version"), ("", "Partition"),
           ("address", "Address"), ("first_seen", "First seen"), ("last_seen", "Last seen"),
           ("checkins", "Check-ins"), ("", "Received"), ("", "Rollout"), ("", "Offered now"))  # fmt: skip


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


def _row(m: Module, received: int, state: str, offered: str) -> str:
    who = escape(m.vehicle_id) or f"<small>{escape(m.module)}</small>"
    return (
        f'<tr><td><a href="/console/fleet/module/{quote(m.module, safe="")}">{who}</a></td>'
        f"<td>{escape(m.product)}/{escape(m.tag)}</td><td>{escape(m.version)}</td><td>{escape(m.partition)}</td>"
        f"<td>{escape(m.address)}</td><td>{when(m.first_seen)}</td><td>{when(m.last_seen)}</td>"
        f"<td>{m.checkins}</td><td>{size(received) if received else '—'}</td><td>{escape(state) or '—'}</td>"
        f"<td>{escape(offered)}</td></tr>"
    )


def _offered(offer: Offer | None) -> str:
    return "—" if offer is None else offer.describe()


async def fleet_page(request: web.Request) -> web.Response:
    operator = await require_user(request)
    params = {k: request.query.get(k, "") for k in ("product", "tag", "q", "sort", "order", "page")}
    query = FleetQuery(params["product"] or None, params["tag"] or None, params["q"].strip())
    sort = params["sort"] if params["sort"] in SORTS else "vehicle"
    # ASCII digits only (str.isdigit also takes "²", which int() refuses), and few of them: SQLite offsets are 64-bit.
    number = max(1, int(params["page"])) if re.fullmatch(r"[0-9]{1,9}", params["page"]) else 1

    now = request.app[CONTEXT_KEY].clock.now()

    def read(desk: Desk) -> tuple[list[Module], int, list[tuple[str, int]], dict[str, tuple[int, str, str]], str]:
        db = desk.repo.db
        modules, total = page_modules(db, query, sort, params["order"] == "desc", PAGE, (number - 1) * PAGE)
        received = downloaded_by(db, [m.module for m in modules])
        explainer = Explainer(desk.rollouts, now)
        offers = {m.module: _offered(explainer.of(m)) for m in modules}
        extra = {k: (*v, offers[k]) for k, v in received.items()}
        return modules, total, versions_in_use(db, query), extra, halt_banner(desk.rollouts)

    modules, total, versions, extra, banner = await request.app[CONTEXT_KEY].run(read)
    filters = f"""<form method="get" action="/console/fleet" class="filters">
<label for="q">Search</label><input type="text" id="q" name="q" value="{escape(params["q"])}"
 placeholder="vehicle id, version, address">
<label for="product">Product</label><input type="text" id="product" name="product"
 value="{escape(params["product"])}" placeholder="all">
<label for="tag">Channel</label><input type="text" id="tag" name="tag" value="{escape(params["tag"])}"
 placeholder="all"><button type="submit">Show</button></form>"""
    first, last = (number - 1) * PAGE + 1, (number - 1) * PAGE + len(modules)
    pager = []
    if number > 1:
        pager.append(f'<a rel="prev" href="{escape(_link(params, page=str(number - 1)))}">← Previous</a>')
    if last < total:
        pager.append(f'<a rel="next" href="{escape(_link(params, page=str(number + 1)))}">Next →</a>')
    shown = f"{first} to {last} of {total}" if modules else f"0 of {total}"
    rows = "".join(_row(m, *extra[m.module]) for m in modules)
    head = "".join(_header(params, key, label) for key, label in COLUMNS)
    chart = bar_chart("Modules per running version", versions) if versions else "<p>No modules seen yet.</p>"
    body = f"""{console_nav(operator)}<div id="banner" data-live>{banner}</div>
<section aria-labelledby="versions-title" id="versions" data-live><h2 id="versions-title">Modules per version</h2>
{chart}</section>
<section aria-labelledby="modules-title" id="modules-section" data-live>
<h2 id="modules-title">{total} modules</h2>{filters}<p class="hint" id="shown">Showing {shown}</p>
<div class="table"><table id="modules"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>
<nav class="pager" aria-label="Pages">{" ".join(pager)}</nav></section>"""
    return web.Response(text=page("Fleet", body, script="/static/console.js"), content_type="text/html")


def add_fleet_page(app: web.Application) -> None:
    app.router.add_get("/console/fleet", guarded(fleet_page))

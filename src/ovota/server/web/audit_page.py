"""The console's Audit page: who changed what, and when (newest first), filtered by actor."""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from aiohttp import web

from ovota.server.context import CONTEXT_KEY, guarded
from ovota.server.store.audit import entries
from ovota.server.web.frame import console_page
from ovota.server.web.login import require_user
from ovota.server.web.text import when

SHOWN = 500


async def audit_page(request: web.Request) -> web.Response:
    operator = await require_user(request)
    actor = request.query.get("actor", "").strip() or None
    found = await request.app[CONTEXT_KEY].run(lambda desk: entries(desk.repo.db, None, actor, SHOWN))
    rows = "".join(
        f'<tr class="{"refused" if e.outcome != "ok" else ""}"><td data-label="When">{when(e.at)}</td>'
        f'<td data-label="Who"><a href="/console/audit?{escape(urlencode({"actor": e.actor}))}">{escape(e.actor)}</a>'
        f'</td><td data-label="Action">{escape(e.action)}</td><td data-label="Target">{escape(e.target)}</td>'
        f'<td data-label="Outcome">{escape(e.outcome)}</td><td data-label="Detail">{escape(e.detail)}</td></tr>'
        for e in reversed(found)
    )
    filters = f"""<form method="get" action="/console/audit" class="filters"><label for="actor">Actor</label>
<input type="text" id="actor" name="actor" value="{escape(actor or "")}" placeholder="all">
<button type="submit">Show</button></form>"""
    body = f"""<section id="audit" data-live>{filters}
<p class="hint">The newest {SHOWN} entries; <code>ovota audit</code> and <code>GET /api/v1/audit</code> give all.</p>
<div class="table"><table class="cards"><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th>
<th>Outcome</th>
<th>Detail</th></tr></thead><tbody>{rows}</tbody></table></div></section>"""
    return await console_page(request, operator, "Audit log", body)


def add_audit_page(app: web.Application) -> None:
    app.router.add_get("/console/audit", guarded(audit_page))

"""The console's Fleet page (which module runs what) and Rollouts page (cohorts, health, halt reasons)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from aiohttp import web

from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.policy import RolloutState
from ovota.server.fleet.registry import Module, list_modules, versions_in_use
from ovota.server.fleet.rollouts import Rollout, Rollouts
from ovota.server.fleet.status import RolloutStatus
from ovota.server.store.errors import RepositoryError
from ovota.server.web.charts import bar_chart, line_chart
from ovota.server.web.layout import page
from ovota.server.web.login import read_form, require_user
from ovota.server.web.rollout_banner import console_nav, halt_banner

MAX_ROWS = 2000  # the table shows this many modules; the chart counts all


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def fleet_page(request: web.Request) -> web.Response:
    user = await require_user(request)
    product = request.query.get("product") or None
    tag = request.query.get("tag") or None

    def read(desk: Desk) -> tuple[list[Module], list[tuple[str, int]], list[str], str]:
        db = desk.repo.db
        products = sorted({m.product for m in list_modules(db)})
        return list_modules(db, product, tag), versions_in_use(db, product, tag), products, halt_banner(desk.rollouts)

    modules, versions, products, banner = await request.app[CONTEXT_KEY].run(read)
    options = "".join(f"<option{' selected' if p == product else ''}>{escape(p)}</option>" for p in products)
    filters = f"""<form method="get" action="/console/fleet" class="filters">
<label for="product">Product</label><select id="product" name="product"><option value="">all</option>{options}</select>
<label for="tag">Channel</label><input type="text" id="tag" name="tag" value="{escape(tag or "")}" placeholder="all">
<button type="submit">Show</button></form>
<label for="filter">Filter the table</label>
<input type="text" id="filter" placeholder="vehicle id, version, address…" data-filter="#modules tbody tr">"""
    rows = "".join(
        f"<tr><td>{escape(m.vehicle_id) or '<small>(none)</small>'}</td><td>{escape(m.product)}</td>"
        f"<td>{escape(m.tag)}</td><td>{escape(m.version)}</td><td>{escape(m.partition)}</td>"
        f"<td>{escape(m.address)}</td><td>{_when(m.last_seen)}</td><td>{m.checkins}</td></tr>"
        for m in modules[:MAX_ROWS]
    )
    more = f'<p class="hint">Showing {MAX_ROWS} of {len(modules)} modules.</p>' if len(modules) > MAX_ROWS else ""
    chart = bar_chart("Modules per running version", versions) if versions else "<p>No modules seen yet.</p>"
    body = f"""{console_nav(user)}{banner}
<section aria-labelledby="versions-title"><h2 id="versions-title">Modules per version</h2>{chart}</section>
<section aria-labelledby="modules-title"><h2 id="modules-title">{len(modules)} modules</h2>{filters}{more}
<div class="table"><table id="modules"><thead><tr><th>Vehicle</th><th>Product</th><th>Channel</th><th>Version</th>
<th>Partition</th><th>Address</th><th>Last seen</th><th>Check-ins</th></tr></thead><tbody>{rows}</tbody></table></div>
</section>"""
    return web.Response(text=page("Fleet", body, script="/static/console.js"), content_type="text/html")


def _rollout_section(rollouts: Rollouts, status: RolloutStatus, rollout: Rollout) -> str:
    steps = status.steps(rollout)
    counts = rollouts.counts(rollout.id)
    step_rows = "".join(
        f'<tr><th scope="row">{i}</th><td>{s.percent}%</td><td>{s.cohort}</td><td>{s.pending}</td>'
        f"<td>{s.counts.updating}</td><td>{s.counts.updated}</td><td>{s.counts.failed}</td><td>{s.counts.silent}</td>"
        "</tr>"
        for i, s in enumerate(steps, 1)
    )
    samples = rollouts.samples(rollout.id)
    series = {
        name: [int(sample[index]) for sample in samples]
        for index, name in enumerate(("pending", "updating", "updated", "failed", "silent"), start=1)
    }
    chart = line_chart(f"Rollout {rollout.id} over time", [s[0] for s in samples], series)
    events = "".join(
        f"<li><small>{_when(at)}</small> {escape(message)}</li>" for at, message in rollouts.events(rollout.id)
    )
    reason = (
        f'<p class="error" role="status">Halted: {escape(rollout.reason)}</p>'
        if rollout.state is RolloutState.HALTED
        else ""
    )
    actions = ""
    if rollout.state.active:
        possible = {RolloutState.RUNNING: ("pause", "abort"), RolloutState.PAUSED: ("resume", "abort"),
                    RolloutState.HALTED: ("resume", "abort")}[rollout.state]  # fmt: skip
        actions = "".join(
            f'<form method="post" action="/console/rollouts/{action}" data-confirm="{action.capitalize()} rollout '
            f'{rollout.id} of {escape(rollout.product)}/{escape(rollout.tag)}?">'
            f'<input type="hidden" name="product" value="{escape(rollout.product)}">'
            f'<input type="hidden" name="tag" value="{escape(rollout.tag)}">'
            f'<button type="submit" class="{"secondary" if action == "abort" else ""}">{action.capitalize()}</button>'
            "</form>"
            for action in possible
        )
    anchor = f"rollout-{rollout.id}"
    return f"""<section aria-labelledby="{anchor}" id="{anchor}" class="rollout state-{rollout.state.value}">
<h2 id="{anchor}-title">Rollout {rollout.id}: {escape(rollout.product)}/{escape(rollout.tag)}
{escape(rollout.from_build.version)} → {escape(rollout.to_build.version)}</h2>
<p class="rollout-state">State: <strong>{rollout.state.value}</strong>, step {rollout.step + 1} of
{len(rollout.settings.steps)} ({rollout.percent}%) · {counts.attempted} attempted, {counts.updated} updated,
{counts.failed} failed, {counts.silent} silent</p>{reason}<div class="actions">{actions}</div>
<div class="table"><table class="steps"><thead><tr><th>Step</th><th>Percent</th><th>Cohort</th><th>Pending</th>
<th>Updating</th><th>Updated</th><th>Failed</th><th>Silent</th></tr></thead><tbody>{step_rows}</tbody></table></div>
{chart}<details><summary>Log</summary><ul>{events}</ul></details></section>"""


async def rollouts_page(request: web.Request) -> web.Response:
    user = await require_user(request)

    def read(desk: Desk) -> tuple[str, str]:
        sections = (_rollout_section(desk.rollouts, desk.status, r) for r in reversed(desk.rollouts.every()))
        return "".join(sections), halt_banner(desk.rollouts)

    sections, banner = await request.app[CONTEXT_KEY].run(read)
    notice = ""
    if "error" in request.query:
        notice = f'<p class="error" role="alert">{escape(request.query["error"])}</p>'
    elif "ok" in request.query:
        notice = f'<p class="ok" role="status">{escape(request.query["ok"])}</p>'
    hint = (
        "<p>No rollouts yet. Start one with <code>ovota rollout start</code> or "
        "<code>ovota release publish … --rollout 1,10,50,100</code>.</p>"
    )
    body = f"{console_nav(user)}{banner}{notice}{sections or hint}"
    return web.Response(text=page("Rollouts", body, script="/static/console.js"), content_type="text/html")


async def rollout_action(request: web.Request) -> web.Response:
    await require_user(request)
    context = request.app[CONTEXT_KEY]
    form = await read_form(request)
    product, tag, action = form.get("product", ""), form.get("tag", ""), request.match_info["action"]
    now = context.clock.now()
    try:
        rollout = await context.run(lambda desk: desk.control.act(action, product, tag, now))
    except RepositoryError as err:
        raise web.HTTPSeeOther(f"/console/rollouts?error={quote(str(err))}") from None
    context.changed()
    message = f"Rollout {rollout.id} of {rollout.product}/{rollout.tag} is now {rollout.state.value}."
    raise web.HTTPSeeOther(f"/console/rollouts?ok={quote(message)}#rollout-{rollout.id}")


def add_fleet_pages(app: web.Application) -> None:
    app.router.add_get("/console/fleet", guarded(fleet_page))
    app.router.add_get("/console/rollouts", guarded(rollouts_page))
    app.router.add_post("/console/rollouts/{action}", guarded(rollout_action))

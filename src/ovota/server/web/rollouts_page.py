"""The console's Rollouts page: start one (every setting), and for each: its state and settings, why it halted
and when, what holds its next step, its steps, a chart with step, halt, pause, resume and abort marks, who is in it
and how it went for them, and its log. The page refreshes its live parts by itself (console.js), so a halt shows
without a reload."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from aiohttp import web

from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.policy import ModuleState, PolicyError, RolloutState
from ovota.server.fleet.progress import describe as next_line
from ovota.server.fleet.rollouts import Rollout
from ovota.server.fleet.status import RolloutModule
from ovota.server.store.channels import channel_order
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import recent_builds
from ovota.server.web.charts import rollout_chart
from ovota.server.web.frame import console_page
from ovota.server.web.login import Operator, read_form, require_user
from ovota.server.web.rollout_form import FORM, read_settings, start_form
from ovota.server.web.text import duration, when

MAX_LISTED = 200  # modules listed per state; the counts say how many there are
ACTIONS = {RolloutState.RUNNING: ("pause", "abort"), RolloutState.PAUSED: ("resume", "abort"),
           RolloutState.HALTED: ("resume", "abort")}  # fmt: skip


def _settings_line(rollout: Rollout) -> str:
    s = rollout.settings
    notify = f" · notify {escape(s.notify_url)}" if s.notify_url else ""
    return (
        f'<p class="settings">Steps {",".join(map(str, s.steps))} · interval {duration(s.step_interval)} · halt at '
        f"{s.limits.halt_failed:.0%} failed or {s.limits.halt_silent:.0%} silent · min. sample {s.limits.min_sample}"
        f" · silent after {duration(s.watch)} · grace {duration(s.grace)} · voters known for "
        f"{duration(s.voters_known_for)}{notify}<br>For {escape(s.target.describe())} · offered "
        f"{escape(s.schedule.describe())}{escape(f' · at most {s.rate.describe()}' if s.rate else '')}</p>"
    )


def _who(rollout: Rollout, modules: list[RolloutModule]) -> str:
    parts = []
    for state in (ModuleState.FAILED, ModuleState.SILENT, ModuleState.UPDATING, ModuleState.UPDATED,
                  ModuleState.PENDING):  # fmt: skip
        found = [m for m in modules if m.state == state.value]
        rows = "".join(
            f'<tr><td data-label="Vehicle"><a href="/console/fleet/module/{quote(m.module, safe="")}">'
            f'{escape(m.vehicle_id or m.module)}</a></td><td data-label="From">{escape(m.from_version)}</td>'
            f'<td data-label="Step">{m.step}</td><td data-label="Received">{when(m.received)}</td>'
            f'<td data-label="Last seen">{when(m.last_seen)}</td><td data-label="Address">{escape(m.address)}</td>'
            f'<td data-label="Offered now">{escape(m.why)}</td></tr>'
            for m in found[:MAX_LISTED]
        )
        more = f'<p class="hint">The first {MAX_LISTED} of {len(found)}.</p>' if len(found) > MAX_LISTED else ""
        opened = " open" if state in (ModuleState.FAILED, ModuleState.SILENT) and found else ""
        parts.append(
            f'<details class="who who-{state.value}"{opened}><summary>{state.value.capitalize()} ({len(found)})'
            f'</summary>{more}<div class="table"><table class="cards"><thead><tr><th>Vehicle</th><th>From</th>'
            "<th>Step</th>"
            f"<th>Received</th><th>Last seen</th><th>Address</th><th>Offered now</th></tr></thead><tbody>{rows}"
            "</tbody></table></div>"
            "</details>"
        )
    return f'<h3>Modules</h3><div class="modules">{"".join(parts)}</div>'


def _section(desk: Desk, rollout: Rollout, operator: Operator, now: float) -> str:
    counts = desk.rollouts.counts(rollout.id)
    modules = desk.status.modules(rollout, now=now if rollout.state.active else None)
    steps = desk.status.steps(rollout)
    step_rows = "".join(
        f'<tr><th scope="row">Step {i}</th><td data-label="Percent">{s.percent}%</td>'
        f'<td data-label="Cohort">{s.cohort}</td><td data-label="Pending">{s.pending}</td>'
        f'<td data-label="Updating">{s.counts.updating}</td><td data-label="Updated">{s.counts.updated}</td>'
        f'<td data-label="Failed">{s.counts.failed}</td><td data-label="Silent">{s.counts.silent}</td></tr>'
        for i, s in enumerate(steps, 1)
    )
    events = desk.rollouts.events(rollout.id)
    chart = rollout_chart(f"Rollout {rollout.id} over time", desk.rollouts.samples(rollout.id), events, now)
    log = "".join(f"<li><small>{when(at)}</small> {escape(message)} <small>({escape(actor or 'unknown')})</small></li>"
                  for at, message, actor in events)  # fmt: skip
    reason = ""
    if rollout.state is RolloutState.HALTED:
        reason = f'<p class="error" role="status">Halted {when(rollout.reason_at)}: {escape(rollout.reason)}</p>'
    actions = ""
    if rollout.state.active and operator.may("release"):
        actions = "".join(
            f'<form method="post" action="/console/rollouts/{action}" data-confirm="{action.capitalize()} rollout '
            f'{rollout.id} of {escape(rollout.product)}/{escape(rollout.tag)}?">'
            f'<input type="hidden" name="product" value="{escape(rollout.product)}">'
            f'<input type="hidden" name="tag" value="{escape(rollout.tag)}">'
            f'<button type="submit" class="{"secondary" if action == "abort" else ""}">{action.capitalize()}</button>'
            "</form>"
            for action in ACTIONS[rollout.state]
        )
    line = next_line(desk.status.next_step(rollout, now), when)
    following = f'<p class="next-step">{escape(line)}</p>' if line else ""
    anchor = f"rollout-{rollout.id}"
    return f"""<section aria-labelledby="{anchor}-title" id="{anchor}" class="rollout state-{rollout.state.value}"
 data-live><h2 id="{anchor}-title">Rollout {rollout.id}: {escape(rollout.product)}/{escape(rollout.tag)}
{escape(rollout.from_build.version)} → {escape(rollout.to_build.version)}</h2>
<p class="rollout-state">State: <strong>{rollout.state.value}</strong>, step {rollout.step + 1} of
{len(rollout.settings.steps)} ({rollout.percent}%) · now {counts.attempted} attempted, {counts.updating} updating,
{counts.updated} updated, {counts.failed} failed, {counts.silent} silent</p>{reason}{following}{_settings_line(rollout)}
<div class="actions">{actions}</div>
<div class="table"><table class="steps cards"><thead><tr><th>Step</th><th>Percent</th><th>Cohort</th><th>Pending</th>
<th>Updating</th><th>Updated</th><th>Failed</th><th>Silent</th></tr></thead><tbody>{step_rows}</tbody></table></div>
{chart}{_who(rollout, modules)}<details><summary>Log</summary><ul>{log}</ul></details></section>"""


async def rollouts_page(request: web.Request) -> web.Response:
    operator = await require_user(request)
    return await _page(request, operator)


async def _page(request: web.Request, operator: Operator, values: dict[str, str] | None = None,
                errors: dict[str, str] | None = None) -> web.Response:  # fmt: skip
    now = request.app[CONTEXT_KEY].clock.now()

    def read(desk: Desk) -> tuple[str, str]:
        sections = "".join(_section(desk, r, operator, now) for r in reversed(desk.rollouts.every()))
        form = ""
        if operator.may("release"):
            channels = sorted(desk.repo.channels(), key=lambda c: channel_order(c.product, c.tag))
            listed = [(c.product, c.tag, c.build.version) for c in channels]
            form = start_form(listed, recent_builds(desk.repo.db), values, errors)
        return sections, form

    sections, form = await request.app[CONTEXT_KEY].run(read)
    hint = ("<p>No rollouts yet. Start one here, with <code>ovota rollout start</code>, or with "
            "<code>ovota release publish … --rollout 1,10,50,100</code>.</p>")  # fmt: skip
    return await console_page(request, operator, "Rollouts", form + (sections or hint), 400 if errors else 200,
                              "/console/rollouts" if errors else "")  # fmt: skip


async def start_rollout(request: web.Request) -> web.Response:
    """Start a rollout from the form; a refusal draws the page again with what was typed and every error beside
    its field (400), nothing started."""
    operator = await require_user(request, "release")
    context = request.app[CONTEXT_KEY]
    form = await read_form(request)
    product, _, tag = form.get("channel", "").partition("/")
    now = context.clock.now()
    values, settings, errors = read_settings(form)
    values |= {"channel": form.get("channel", ""), "build": form.get("build", ""),
               "allow_empty": form.get("allow_empty", "")}  # fmt: skip
    if settings is None:
        return await _page(request, operator, values, errors)
    build, empty = values["build"], values["allow_empty"] == "yes"

    def start(desk: Desk) -> tuple[Rollout, int]:
        chosen = desk.repo.find_build(build)
        started = desk.control.start(product, tag, chosen, settings, now, empty)
        return started, desk.control.matching(product, tag, chosen, settings, now)

    try:
        rollout, matched = await context.run(start, operator.name)
    except (RepositoryError, PolicyError) as err:
        return await _page(request, operator, values, {FORM: str(err)})
    context.changed()
    message = (f"Rollout {rollout.id} of {rollout.product}/{rollout.tag} started at {rollout.percent}%; it matches "
               f"{matched} known module{'s' if matched != 1 else ''}.")  # fmt: skip
    raise web.HTTPSeeOther(f"/console/rollouts?ok={quote(message)}#rollout-{rollout.id}")


async def rollout_action(request: web.Request) -> web.Response:
    operator = await require_user(request, "release")
    context = request.app[CONTEXT_KEY]
    form = await read_form(request)
    product, tag, action = form.get("product", ""), form.get("tag", ""), request.match_info["action"]
    now = context.clock.now()
    try:
        rollout = await context.run(lambda desk: desk.control.act(action, product, tag, now), operator.name)
    except RepositoryError as err:
        raise web.HTTPSeeOther(f"/console/rollouts?error={quote(str(err))}") from None
    context.changed()
    message = f"Rollout {rollout.id} of {rollout.product}/{rollout.tag} is now {rollout.state.value}."
    raise web.HTTPSeeOther(f"/console/rollouts?ok={quote(message)}#rollout-{rollout.id}")


def add_rollouts_page(app: web.Application) -> None:
    app.router.add_get("/console/rollouts", guarded(rollouts_page))
    app.router.add_post("/console/rollouts/start", guarded(start_rollout))
    app.router.add_post("/console/rollouts/{action}", guarded(rollout_action))

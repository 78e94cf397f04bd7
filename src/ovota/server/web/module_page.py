"""A module's own console page: what it runs and is offered now (and why), the builds it failed on with a
retry button, its versions over time, downloads and rollouts."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from aiohttp import web

from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.explain import Explainer
from ovota.server.fleet.failures import Failure, module_failures, retry
from ovota.server.fleet.modules import ModuleStory, module_story
from ovota.server.fleet.offer import Offer
from ovota.server.web.layout import page
from ovota.server.web.login import act, console_nav, read_form, require_user
from ovota.server.web.rollout_banner import halt_banner
from ovota.server.web.text import notice, size, when


def _failures(key: str, failures: list[Failure], editable: bool) -> str:
    if not failures:
        return "<p>It has failed on no build (or was retried since).</p>"
    rows = "".join(
        f"<tr><td>{escape(f.version)}</td><td><code>{f.sha256[:12]}</code></td><td>{when(f.at)}</td>"
        f"<td>{escape(f.reason)}</td><td>"
        + (
            f'<form method="post" action="/console/fleet/module/{quote(key, safe="")}/retry" class="inline" '
            f'data-confirm="Offer {escape(f.version)} to this module again?"><input type="hidden" name="build" '
            f'value="{f.sha256}"><button type="submit">Retry</button></form>'
            if editable
            else ""
        )
        + "</td></tr>"
        for f in failures
    )
    return (
        '<p>A build a module failed on is never offered to it again until it is retried.</p><div class="table">'
        "<table><thead><tr><th>Build</th><th>SHA-256</th><th>Failed</th><th>Why</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


async def module_page(request: web.Request) -> web.Response:
    operator = await require_user(request)
    key = request.match_info["module"]
    now = request.app[CONTEXT_KEY].clock.now()

    def read(desk: Desk) -> tuple[ModuleStory | None, Offer | None, list[Failure], str]:
        story = module_story(desk.repo.db, key)
        if story is None:
            return None, None, [], ""
        offer = Explainer(desk.rollouts, now).of(story.module)
        return story, offer, module_failures(desk.repo, key), halt_banner(desk.rollouts)

    story, offer, failures, banner = await request.app[CONTEXT_KEY].run(read)
    if story is None:
        raise web.HTTPNotFound(text=f"Not found: no module {key}\n")
    m = story.module
    offered = "no build on its channel" if offer is None else offer.describe()
    facts = (
        f'<dl class="facts"><dt>Vehicle id</dt><dd>{escape(m.vehicle_id) or "(none)"}</dd>'
        f"<dt>Channel</dt><dd>{escape(m.product)}/{escape(m.tag)}</dd><dt>Running</dt><dd>{escape(m.version)} "
        f'on {escape(m.partition)}</dd><dt>Offered now</dt><dd id="offered">{escape(offered)}</dd>'
        f"<dt>Address</dt><dd>{escape(m.address)}</dd><dt>First seen</dt>"
        f"<dd>{when(m.first_seen)}</dd><dt>Last seen</dt><dd>{when(m.last_seen)}</dd><dt>Check-ins</dt>"
        f"<dd>{m.checkins}</dd></dl>"
    )
    versions = "".join(
        f"<tr><td>{escape(v)}</td><td>{when(a)}</td><td>{when(b)}</td></tr>" for v, a, b in story.versions
    )
    downloads = "".join(
        f"<tr><td>{when(at)}</td><td>{escape(version) or '(patch)'}</td><td><code>{sha[:12]}</code></td>"
        f"<td>{size(sent)}</td><td>{'whole' if whole else 'partial'}</td></tr>"
        for at, sha, version, sent, whole in story.downloads
    )
    rollouts = "".join(
        f'<tr><td><a href="/console/rollouts#rollout-{rid}">{rid}</a></td><td>{escape(version)}</td>'
        f"<td>{escape(state)}</td><td>{escape(source)}</td><td>{when(received)}</td><td>{when(seen)}</td></tr>"
        for rid, version, state, source, received, seen in story.rollouts
    )
    body = f"""{console_nav(operator)}<div id="banner" data-live>{banner}</div>{notice(request)}
<section>{facts}</section>
<section aria-labelledby="failed-title"><h2 id="failed-title">Failed builds</h2>
{_failures(key, failures, operator.may("release"))}</section>
<section aria-labelledby="versions-title"><h2 id="versions-title">Versions over time</h2><div class="table"><table>
<thead><tr><th>Version</th><th>First seen</th><th>Last seen</th></tr></thead><tbody>{versions}</tbody></table></div>
</section><section aria-labelledby="downloads-title"><h2 id="downloads-title">Downloads</h2><div class="table"><table>
<thead><tr><th>When</th><th>Build</th><th>SHA-256</th><th>Sent</th><th></th></tr></thead><tbody>{downloads}</tbody>
</table></div></section><section aria-labelledby="rollouts-title"><h2 id="rollouts-title">Rollouts</h2>
<div class="table"><table><thead><tr><th>Rollout</th><th>To</th><th>State</th><th>From</th><th>Received</th>
<th>Last seen</th></tr></thead><tbody>{rollouts}</tbody></table></div></section>"""
    title = f"Module {m.vehicle_id or m.module}"
    return web.Response(text=page(title, body, script="/static/console.js"), content_type="text/html")


async def retry_module(request: web.Request) -> web.Response:
    """Offer the module a build it failed on again (audited)."""
    operator = await require_user(request, "release")
    key = request.match_info["module"]
    form = await read_form(request)
    context = request.app[CONTEXT_KEY]
    ref, now = form.get("build", ""), context.clock.now()
    back = f"/console/fleet/module/{quote(key, safe='')}"

    def change(desk: Desk) -> str:
        cleared = retry(desk.repo, key, desk.repo.find_build(ref) if ref else None, now)
        return f"Retrying {', '.join(f.version for f in cleared)}: it is offered again."

    await act(request, operator, change, back)


def add_module_page(app: web.Application) -> None:
    app.router.add_get("/console/fleet/module/{module}", guarded(module_page))
    app.router.add_post("/console/fleet/module/{module}/retry", guarded(retry_module))

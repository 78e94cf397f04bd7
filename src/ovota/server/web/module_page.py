"""A module's own console page: what it runs and is offered now (and why), the pin, assignment and waypoints
that apply to it (pin and unpin for release tokens), the builds it failed on with a retry button, its rollouts,
versions over time and downloads."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from aiohttp import web

from ovota.formats.versions import buildverscmp
from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.explain import Explainer
from ovota.server.fleet.failures import Failure, module_failures, retry
from ovota.server.fleet.modules import ModuleStory, module_story
from ovota.server.fleet.offer import Offer
from ovota.server.fleet.overrides import Assignment, Overrides, Pin
from ovota.server.store.repository import Build, recent_builds
from ovota.server.web.frame import console_page
from ovota.server.web.login import act, read_form, require_user
from ovota.server.web.text import build_options, size, when


@dataclass(frozen=True)
class _Applies:
    """The overrides that apply to one module."""

    pin: Pin | None
    assignments: list[Assignment]
    waypoints: list[Build]  # of its product, newer than what it runs: it passes through them first
    builds: str  # <option>s for the pin form


def _applies(desk: Desk, story: ModuleStory) -> _Applies:
    m, overrides = story.module, Overrides(desk.repo)
    pin = next((p for p in overrides.pins() if p.vehicle_id == m.vehicle_id), None) if m.vehicle_id else None
    assigned = overrides.assignments(m.product, m.vehicle_id) if m.vehicle_id else []
    ahead = [b for b in overrides.waypoints(m.product) if buildverscmp(m.version, b.version) < 0]
    return _Applies(pin, [a for a in assigned if a.tag == m.tag], ahead, build_options(recent_builds(desk.repo.db)))


def _button(key: str, action: str, label: str, confirm: str, **fields: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{escape(v)}">' for k, v in fields.items())
    return (f'<form method="post" action="/console/fleet/module/{quote(key, safe="")}/{action}" class="inline" '
            f'data-confirm="{escape(confirm)}">{hidden}<button type="submit" class="secondary">{label}</button>'
            "</form>")  # fmt: skip


def _overrides(key: str, vehicle: str, applies: _Applies, editable: bool) -> str:
    items = []
    if applies.pin is not None:
        p = applies.pin
        unpin = _button(key, "unpin", "Unpin", f"Unpin {vehicle}?") if editable else ""
        items.append(f"<li>Pinned to <strong>{escape(p.build.version)}</strong> since {when(p.at)} by "
                     f"{escape(p.actor)} {unpin}</li>")  # fmt: skip
    for a in applies.assignments:
        items.append(f"<li>Assigned {escape(a.build.version)} by rollout {a.rollout} since {when(a.at)}</li>")
    for b in applies.waypoints:
        items.append(f"<li>Waypoint {escape(b.version)}: it passes through it before newer builds</li>")
    listed = f"<ul>{''.join(items)}</ul>" if items else "<p>No pin, assignment or waypoint applies to it.</p>"
    form = ""
    if editable and vehicle:
        form = (f'<form method="post" action="/console/fleet/module/{quote(key, safe="")}/pin" class="start">'
                f'<label for="pin-build">Pin it to a build</label><select id="pin-build" name="build">'
                f'{applies.builds}</select><button type="submit">Pin</button></form>')  # fmt: skip
    return listed + form


def _failures(key: str, failures: list[Failure], editable: bool) -> str:
    if not failures:
        return "<p>It has failed on no build (or was retried since).</p>"

    def button(f: Failure) -> str:
        return _button(key, "retry", "Retry", f"Offer {f.version} to this module again?", build=f.sha256)

    rows = "".join(
        f"<tr><td>{escape(f.version)}</td><td><code>{f.sha256[:12]}</code></td><td>{when(f.at)}</td>"
        f"<td>{escape(f.reason)}</td><td>{button(f) if editable else ''}</td></tr>"
        for f in failures
    )
    return (
        '<p>A build a module failed on is never offered to it again until it is retried.</p><div class="table">'
        "<table><thead><tr><th>Build</th><th>SHA-256</th><th>Failed</th><th>Why</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _table(title: str, anchor: str, head: tuple[str, ...], rows: str) -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    return (f'<section aria-labelledby="{anchor}"><h2 id="{anchor}">{title}</h2><div class="table"><table><thead>'
            f"<tr>{cells}</tr></thead><tbody>{rows}</tbody></table></div></section>")  # fmt: skip


async def module_page(request: web.Request) -> web.Response:
    operator = await require_user(request)
    key = request.match_info["module"]
    now = request.app[CONTEXT_KEY].clock.now()

    def read(desk: Desk) -> tuple[ModuleStory, Offer | None, list[Failure], _Applies] | None:
        story = module_story(desk.repo.db, key)
        if story is None:
            return None
        offer = Explainer(desk.rollouts, now).of(story.module)
        return story, offer, module_failures(desk.repo, key), _applies(desk, story)

    found = await request.app[CONTEXT_KEY].run(read)
    if found is None:
        raise web.HTTPNotFound(text=f"Not found: no module {key}\n")
    story, offer, failures, applies = found
    m, editable = story.module, operator.may("release")
    offered = "no build on its channel" if offer is None else offer.describe()
    if offer is not None and offer.build is not None and offer.build.version == m.version:
        offered = f"nothing new: it runs {m.version} ({offer.why})"  # OVMS then sees nothing newer
    facts = (
        f'<dl class="facts"><dt>Vehicle id</dt><dd>{escape(m.vehicle_id) or "(none)"}</dd>'
        f"<dt>Channel</dt><dd>{escape(m.product)}/{escape(m.tag)}</dd><dt>Running</dt><dd>{escape(m.version)} "
        f'on {escape(m.partition)}</dd><dt>Offered now</dt><dd id="offered">{escape(offered)}</dd>'
        f"<dt>Address</dt><dd>{escape(m.address)}</dd><dt>First seen</dt>"
        f"<dd>{when(m.first_seen)}</dd><dt>Last seen</dt><dd>{when(m.last_seen)}</dd><dt>Check-ins</dt>"
        f"<dd>{m.checkins}</dd></dl>"
    )
    failed_at = {f.version: f.at for f in failures}
    rollouts = "".join(
        f'<tr><td><a href="/console/rollouts#rollout-{rid}">{rid}</a></td><td>{escape(version)}</td>'
        f"<td>{escape(state)}</td><td>{escape(source)}</td><td>{when(received)}</td><td>{when(seen)}</td>"
        f"<td>{when(failed_at.get(version))}</td></tr>"
        for rid, version, state, source, received, seen in story.rollouts
    )
    versions = "".join(
        f"<tr><td>{escape(v)}</td><td>{when(a)}</td><td>{when(b)}</td></tr>" for v, a, b in story.versions
    )
    downloads = "".join(
        f"<tr><td>{when(at)}</td><td>{escape(version) or '(patch)'}</td><td><code>{sha[:12]}</code></td>"
        f"<td>{size(sent)}</td><td>{'whole' if whole else 'partial'}</td></tr>"
        for at, sha, version, sent, whole in story.downloads
    )
    body = f"""<section>{facts}</section>
<section aria-labelledby="overrides-title" id="overrides"><h2 id="overrides-title">Pin, assignment, waypoints</h2>
{_overrides(key, m.vehicle_id, applies, editable)}</section>
<section aria-labelledby="failed-title"><h2 id="failed-title">Failed builds</h2>
{_failures(key, failures, editable)}</section>
{_table("Rollouts", "rollouts-title", ("Rollout", "To", "State", "From", "Received", "Last seen", "Failed"), rollouts)}
{_table("Versions over time", "versions-title", ("Version", "First reported", "Last reported"), versions)}
{_table("Downloads", "downloads-title", ("When", "Build", "SHA-256", "Sent", ""), downloads)}"""
    return await console_page(request, operator, f"Module {m.vehicle_id or m.module}", body)


async def module_action(request: web.Request) -> web.Response:
    """Retry a failed build, pin the module's vehicle to a build or unpin it (each audited)."""
    operator = await require_user(request, "release")
    key, action = request.match_info["module"], request.match_info["action"]
    form = await read_form(request)
    context = request.app[CONTEXT_KEY]
    ref, now = form.get("build", ""), context.clock.now()
    back = f"/console/fleet/module/{quote(key, safe='')}"

    def change(desk: Desk) -> str:
        if action == "retry":
            cleared = retry(desk.repo, key, desk.repo.find_build(ref) if ref else None, now)
            return f"Retrying {', '.join(f.version for f in cleared)}: it is offered again."
        story = module_story(desk.repo.db, key)
        vehicle = story.module.vehicle_id if story else ""
        if not vehicle:
            raise web.HTTPNotFound(text=f"Not found: no module {key} with a vehicle id\n")
        if action == "pin":
            build = desk.repo.find_build(ref)
            Overrides(desk.repo).pin(vehicle, build, now)
            offer = Explainer(desk.rollouts, now).of(story.module) if story else None
            if offer is None or offer.build is None or offer.build.sha256 != build.sha256:
                why = offer.why if offer else "no build on its channel"
                return f"Pinned {vehicle} to {build.version}, but it is not offered that: {why}."
            return f"Pinned {vehicle} to {build.version}."
        Overrides(desk.repo).unpin(vehicle)
        return f"Unpinned {vehicle}."

    await act(request, operator, change, back)


def add_module_page(app: web.Application) -> None:
    app.router.add_get("/console/fleet/module/{module}", guarded(module_page))
    app.router.add_post("/console/fleet/module/{module}/{action:retry|pin|unpin}", guarded(module_action))

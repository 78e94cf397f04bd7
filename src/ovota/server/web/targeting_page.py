"""The console's Targeting page: groups of vehicles (for targeted rollouts), pins, waypoints and the
assignments targeted rollouts left; forms to change each for operators whose role allows releasing."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.groups import Groups
from ovota.server.fleet.overrides import Assignment, Overrides
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import recent_builds
from ovota.server.web.frame import console_page
from ovota.server.web.login import Operator, act, read_form, require_user
from ovota.server.web.text import build_options, selected, when

SHOWN = 200
GROUP_FORM = ("group-add", "group-remove-ids")
TYPED = (*GROUP_FORM, "pin", "waypoint-add")  # the forms with fields an operator types or picks
_IDS = re.compile(r"[\s,;]+")


def _button(action: str, label: str, **fields: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{k}" value="{escape(v)}">' for k, v in fields.items())
    return (f'<form method="post" action="/console/targeting/{action}" class="inline" data-confirm="{escape(label)}?">'
            f'{hidden}<button type="submit">{escape(label)}</button></form>')  # fmt: skip


@dataclass(frozen=True)
class Typed:
    """A form the repository refused: which action, what was typed, and why (shown beside that form)."""

    action: str = ""
    values: Mapping[str, str] = field(default_factory=dict)
    error: str = ""

    def value(self, actions: tuple[str, ...], name: str) -> str:
        return escape(self.values.get(name, "")) if self.action in actions else ""

    def message(self, actions: tuple[str, ...]) -> str:
        if self.action not in actions:
            return ""
        return f'<p class="error field-error" role="alert">{escape(self.error)}</p>'


def _groups(desk: Desk, editable: bool, typed: Typed) -> str:
    groups = Groups(desk.repo)
    rows = ""
    for name, size in groups.sizes():
        ids = groups.first(name, 20)
        shown = ", ".join(escape(v) for v in ids) + (f" and {size - 20} more" if size > 20 else "")
        action = _button("group-remove", f"Delete group {name}", name=name) if editable else ""
        rows += f"<tr><td>{escape(name)}</td><td>{size}</td><td>{shown}</td><td>{action}</td></tr>"
    form = (
        ""
        if not editable
        else f"""<form method="post" action="/console/targeting/group-add" class="start">{typed.message(GROUP_FORM)}
<label for="group-name">Group</label><input type="text" id="group-name" name="name" required
value="{typed.value(GROUP_FORM, "name")}">
<label for="group-ids">Vehicle ids (spaces, commas or one per line)</label><textarea id="group-ids" name="ids" rows="3"
required>{typed.value(GROUP_FORM, "ids")}</textarea><button type="submit">Add to the group</button>
<button type="submit" formaction="/console/targeting/group-remove-ids">Remove from the group</button></form>"""
    )
    return f"""<section aria-labelledby="groups-title"><h2 id="groups-title">Groups</h2>
<p class="hint">Named sets of vehicle ids: <code>rollout start --group NAME</code> offers a build to them only.</p>
<div class="table"><table><thead><tr><th>Group</th><th>Vehicles</th><th>Members</th><th></th></tr></thead>
<tbody>{rows or '<tr><td colspan="4">No groups yet.</td></tr>'}</tbody></table></div>{form}</section>"""


def _action(editable: bool, action: str, label: str, **fields: str) -> str:
    return f"<td>{_button(action, label, **fields) if editable else ''}</td>"


def _pins(desk: Desk, editable: bool, builds: str, typed: Typed) -> str:
    rows = "".join(
        f"<tr><td>{escape(p.vehicle_id)}</td><td>{escape(p.build.version)}</td><td>{when(p.at)}</td>"
        f"<td>{escape(p.actor)}</td>{_action(editable, 'unpin', f'Unpin {p.vehicle_id}', vehicle=p.vehicle_id)}</tr>"
        for p in Overrides(desk.repo).pins()
    )
    form = (
        ""
        if not editable
        else f"""<form method="post" action="/console/targeting/pin" class="start">{typed.message(("pin",))}
<label for="pin-vehicle">Vehicle id</label><input type="text" id="pin-vehicle" name="vehicle" required
value="{typed.value(("pin",), "vehicle")}">
<label for="pin-build">Build</label><select id="pin-build" name="build">
{selected(builds, typed.value(("pin",), "build"))}</select>
<button type="submit">Pin</button></form>"""
    )
    return f"""<section aria-labelledby="pins-title"><h2 id="pins-title">Pins</h2>
<p class="hint">A pinned vehicle is offered its build whatever its channel, a waypoint or a rollout serves.</p>
<div class="table"><table><thead><tr><th>Vehicle</th><th>Build</th><th>Since</th><th>By</th><th></th></tr></thead>
<tbody>{rows or '<tr><td colspan="5">No pins.</td></tr>'}</tbody></table></div>{form}</section>"""


def _waypoints(desk: Desk, editable: bool, builds: str, typed: Typed) -> str:
    overrides = Overrides(desk.repo)
    products = sorted({c.product for c in desk.repo.channels()})
    rows = "".join(
        f"<tr><td>{escape(product)}</td><td>{escape(b.version)}</td><td>{b.sha256[:12]}</td>"
        f"{_action(editable, 'waypoint-remove', f'Remove waypoint {b.version}', product=product, build=b.sha256)}</tr>"
        for product in products
        for b in overrides.waypoints(product)
    )
    options = "".join(f'<option value="{escape(p)}">{escape(p)}</option>' for p in products)
    form = (
        ""
        if not editable
        else f"""<form method="post" action="/console/targeting/waypoint-add" class="start">
{typed.message(("waypoint-add",))}<label for="waypoint-product">Product</label><select id="waypoint-product"
name="product">{selected(options, typed.value(("waypoint-add",), "product"))}</select>
<label for="waypoint-build">Build</label><select id="waypoint-build" name="build">
{selected(builds, typed.value(("waypoint-add",), "build"))}</select>
<button type="submit">Add the waypoint</button></form>"""
    )
    return f"""<section aria-labelledby="waypoints-title"><h2 id="waypoints-title">Waypoints</h2>
<p class="hint">A module running an older version is offered the waypoint first, then its channel's build.</p>
<div class="table"><table><thead><tr><th>Product</th><th>Version</th><th>SHA-256</th><th></th></tr></thead>
<tbody>{rows or '<tr><td colspan="4">No waypoints.</td></tr>'}</tbody></table></div>{form}</section>"""


def _assignment_row(a: Assignment, editable: bool) -> str:
    remove = _action(editable, "unassign", f"Unassign {a.vehicle_id}", vehicle=a.vehicle_id, product=a.product,
                     tag=a.tag)  # fmt: skip
    return (f"<tr><td>{escape(a.vehicle_id)}</td><td>{escape(a.product)}/{escape(a.tag)}</td>"
            f"<td>{escape(a.build.version)}</td><td>{a.rollout}</td><td>{when(a.at)}</td>{remove}</tr>")  # fmt: skip


def _assignments(desk: Desk, editable: bool) -> str:
    found = Overrides(desk.repo).assignments()
    rows = "".join(_assignment_row(a, editable) for a in found[:SHOWN])
    more = f'<p class="hint">{len(found) - SHOWN} more: <code>ovota fleet assignments</code>.</p>'
    return f"""<section aria-labelledby="assignments-title"><h2 id="assignments-title">Assignments</h2>
<p class="hint">Where targeted rollouts left their modules: they keep that build until unassigned.</p>
<div class="table"><table><thead><tr><th>Vehicle</th><th>Channel</th><th>Build</th><th>Rollout</th><th>Since</th>
<th></th></tr></thead><tbody>{rows or '<tr><td colspan="6">No assignments.</td></tr>'}</tbody></table></div>
{more if len(found) > SHOWN else ""}</section>"""


async def targeting_page(request: web.Request) -> web.Response:
    return await _page(request, await require_user(request))


async def _page(request: web.Request, operator: Operator, typed: Typed = Typed()) -> web.Response:
    editable = operator.may("release")

    def read(desk: Desk) -> str:
        builds = build_options(recent_builds(desk.repo.db))
        return (_groups(desk, editable, typed) + _pins(desk, editable, builds, typed)
                + _waypoints(desk, editable, builds, typed) + _assignments(desk, editable))  # fmt: skip

    sections = await request.app[CONTEXT_KEY].run(read)
    return await console_page(request, operator, "Targeting", sections, 400 if typed.error else 200,
                              "/console/targeting" if typed.error else "")  # fmt: skip


def _change(form: dict[str, str], action: str, now: float) -> Callable[[Desk], str]:
    def change(desk: Desk) -> str:
        groups, overrides = Groups(desk.repo), Overrides(desk.repo)
        name, vehicle = form.get("name", "").strip(), form.get("vehicle", "").strip()
        ids = [v for v in _IDS.split(form.get("ids", "")) if v]
        if action == "group-add":
            return f"Group {name}: {groups.add(name, ids, now)} added."
        if action == "group-remove-ids":
            return f"Group {name}: {groups.remove(name, ids or ['-'])} removed."
        if action == "group-remove":
            groups.remove(name)
            return f"Group {name} deleted."
        if action == "pin":
            build = desk.repo.find_build(form.get("build", ""))
            overrides.pin(vehicle, build, now)
            return f"Pinned {vehicle} to {build.version}."
        if action == "unpin":
            overrides.unpin(vehicle)
            return f"Unpinned {vehicle}."
        if action in ("waypoint-add", "waypoint-remove"):
            build, product = desk.repo.find_build(form.get("build", "")), form.get("product", "")
            if action == "waypoint-add":
                overrides.add_waypoint(product, build, now)
                return f"Waypoint {build.version} added for {product}."
            overrides.remove_waypoint(product, build)
            return f"Waypoint {build.version} removed for {product}."
        if action == "unassign":
            overrides.unassign(vehicle, form.get("product") or None, form.get("tag") or None)
            return f"Unassigned {vehicle}."
        raise web.HTTPNotFound(text=f"Not found: no targeting action {action!r}\n")

    return change


async def targeting_action(request: web.Request) -> web.Response:
    operator: Operator = await require_user(request, "release")
    context = request.app[CONTEXT_KEY]
    form = await read_form(request)
    action = request.match_info["action"]
    change: Any = _change(form, action, context.clock.now())
    if action not in TYPED:
        await act(request, operator, change, "/console/targeting")
    try:  # a form with typed fields: a refusal draws the page again with them and the reason beside the form
        message = await context.run(change, operator.name)
    except RepositoryError as err:
        return await _page(request, operator, Typed(action, form, str(err)))
    context.changed()
    raise web.HTTPSeeOther(f"/console/targeting?ok={quote(message)}")


def add_targeting_page(app: web.Application) -> None:
    app.router.add_get("/console/targeting", guarded(targeting_page))
    app.router.add_post("/console/targeting/{action}", guarded(targeting_action))

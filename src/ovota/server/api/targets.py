"""The targeting API: groups, pins, waypoints and assignments (reading needs any token, changing ``release``).

``GET /groups``, ``GET /groups/<name>``, ``POST /groups/<name>`` {"vehicles": [...]} adds,
``POST /groups/<name>/remove`` {"vehicles": [...]} removes some, ``DELETE /groups/<name>`` the group;
``GET /pins``, ``PUT /pins/<vehicle>`` {"build": REF}, ``DELETE /pins/<vehicle>``;
``GET /waypoints/<product>``, ``POST /waypoints/<product>`` {"build": REF}, ``DELETE /waypoints/<product>/<REF>``;
``GET /assignments?product=&vehicle=``, ``DELETE /assignments/<vehicle>?product=&tag=``;
``POST /fleet/<module>/retry`` {"build": REF} (optional): offer a module the builds it failed on again.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ovota.server.api.auth import actor, api_handler
from ovota.server.api.json_body import MAX_GROUP_JSON, MAX_JSON, json_body
from ovota.server.context import CONTEXT_KEY, Desk
from ovota.server.fleet.failures import retry
from ovota.server.fleet.groups import Groups
from ovota.server.fleet.overrides import Overrides
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import Build

MAX_BODY_IDS = 100_000


async def _body(request: web.Request, field: str, kind: type) -> Any:
    body = await json_body(request, MAX_GROUP_JSON if kind is list else MAX_JSON)
    value = body.get(field) if isinstance(body, dict) else None
    if not isinstance(value, kind):
        raise RepositoryError(f"JSON body must have the field {field} ({'a list' if kind is list else 'a string'})")
    if isinstance(value, list) and (len(value) > MAX_BODY_IDS or not all(isinstance(v, str) for v in value)):
        raise RepositoryError(f"{field} must be a list of at most {MAX_BODY_IDS} strings")
    return value


def _build_json(build: Build) -> dict[str, Any]:
    return {"version": build.version, "sha256": build.sha256}


async def _change(request: web.Request, change: Any) -> web.Response:
    context = request.app[CONTEXT_KEY]
    result = await context.run(change, actor(request))
    context.changed()
    return web.json_response(result)


async def groups_list(request: web.Request) -> web.Response:
    sizes = await request.app[CONTEXT_KEY].run(lambda desk: Groups(desk.repo).sizes())
    return web.json_response([{"name": n, "vehicles": c} for n, c in sizes])


async def group_show(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ids = await request.app[CONTEXT_KEY].run(lambda desk: Groups(desk.repo).show(name))
    return web.json_response({"name": name, "vehicles": ids})


async def group_add(request: web.Request) -> web.Response:
    name, ids = request.match_info["name"], await _body(request, "vehicles", list)
    now = request.app[CONTEXT_KEY].clock.now()
    return await _change(request, lambda desk: {"name": name, "added": Groups(desk.repo).add(name, ids, now)})


async def group_remove(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    ids = await _body(request, "vehicles", list) if request.method == "POST" else []
    if request.method == "POST" and not ids:
        raise RepositoryError("vehicles must name at least one vehicle (DELETE the group to remove it whole)")
    return await _change(request, lambda desk: {"name": name, "removed": Groups(desk.repo).remove(name, ids)})


async def pins_list(request: web.Request) -> web.Response:
    found = await request.app[CONTEXT_KEY].run(lambda desk: Overrides(desk.repo).pins())
    return web.json_response(
        [{"vehicle_id": p.vehicle_id, **_build_json(p.build), "at": p.at, "actor": p.actor} for p in found]
    )


async def pin_set(request: web.Request) -> web.Response:
    vehicle_id, ref = request.match_info["vehicle"], await _body(request, "build", str)
    now = request.app[CONTEXT_KEY].clock.now()

    def change(desk: Desk) -> dict[str, Any]:
        build = desk.repo.find_build(ref)
        Overrides(desk.repo).pin(vehicle_id, build, now)
        return {"vehicle_id": vehicle_id, **_build_json(build)}

    return await _change(request, change)


async def pin_remove(request: web.Request) -> web.Response:
    vehicle_id = request.match_info["vehicle"]

    def change(desk: Desk) -> dict[str, Any]:
        Overrides(desk.repo).unpin(vehicle_id)
        return {"vehicle_id": vehicle_id, "unpinned": True}

    return await _change(request, change)


async def waypoints_list(request: web.Request) -> web.Response:
    product = request.match_info["product"]
    found = await request.app[CONTEXT_KEY].run(lambda desk: Overrides(desk.repo).waypoints(product))
    return web.json_response([_build_json(b) for b in found])


async def waypoint_add(request: web.Request) -> web.Response:
    product, ref = request.match_info["product"], await _body(request, "build", str)
    now = request.app[CONTEXT_KEY].clock.now()

    def change(desk: Desk) -> dict[str, Any]:
        build = desk.repo.find_build(ref)
        Overrides(desk.repo).add_waypoint(product, build, now)
        return {"product": product, **_build_json(build)}

    return await _change(request, change)


async def waypoint_remove(request: web.Request) -> web.Response:
    product, ref = request.match_info["product"], request.match_info["ref"]

    def change(desk: Desk) -> dict[str, Any]:
        build = desk.repo.find_build(ref)
        Overrides(desk.repo).remove_waypoint(product, build)
        return {"product": product, **_build_json(build), "removed": True}

    return await _change(request, change)


async def assignments_list(request: web.Request) -> web.Response:
    product, vehicle_id = request.query.get("product"), request.query.get("vehicle")
    found = await request.app[CONTEXT_KEY].run(lambda desk: Overrides(desk.repo).assignments(product, vehicle_id))
    return web.json_response([{"product": a.product, "tag": a.tag, "vehicle_id": a.vehicle_id,
                               **_build_json(a.build), "rollout": a.rollout, "at": a.at} for a in found])  # fmt: skip


async def assignment_remove(request: web.Request) -> web.Response:
    vehicle_id = request.match_info["vehicle"]
    product, tag = request.query.get("product"), request.query.get("tag")
    return await _change(
        request,
        lambda desk: {"vehicle_id": vehicle_id, "removed": Overrides(desk.repo).unassign(vehicle_id, product, tag)},
    )


async def module_retry(request: web.Request) -> web.Response:
    """``POST /fleet/<module>/retry`` (optional JSON ``{"build": REF}``): offer the builds it failed on again."""
    module = request.match_info["module"]
    ref = await _body(request, "build", str) if request.can_read_body else ""
    now = request.app[CONTEXT_KEY].clock.now()

    def change(desk: Desk) -> dict[str, Any]:
        cleared = retry(desk.repo, module, desk.repo.find_build(ref) if ref else None, now)
        return {"module": module, "retried": [{"version": f.version, "sha256": f.sha256} for f in cleared]}

    return await _change(request, change)


def add_target_routes(api: web.Application) -> None:
    api.router.add_get("/groups", api_handler(groups_list))
    api.router.add_get("/groups/{name}", api_handler(group_show))
    api.router.add_post("/groups/{name}", api_handler(group_add, "release"))
    api.router.add_post("/groups/{name}/remove", api_handler(group_remove, "release"))
    api.router.add_delete("/groups/{name}", api_handler(group_remove, "release"))
    api.router.add_get("/pins", api_handler(pins_list))
    api.router.add_put("/pins/{vehicle}", api_handler(pin_set, "release"))
    api.router.add_delete("/pins/{vehicle}", api_handler(pin_remove, "release"))
    api.router.add_get("/waypoints/{product}", api_handler(waypoints_list))
    api.router.add_post("/waypoints/{product}", api_handler(waypoint_add, "release"))
    api.router.add_delete("/waypoints/{product}/{ref}", api_handler(waypoint_remove, "release"))
    api.router.add_get("/assignments", api_handler(assignments_list))
    api.router.add_delete("/assignments/{vehicle}", api_handler(assignment_remove, "release"))
    api.router.add_post("/fleet/{module}/retry", api_handler(module_retry, "release"))

"""The fleet API: the registry's modules, and rollouts (start, status, pause, resume, abort)."""

from __future__ import annotations

import json

from aiohttp import web

from ovota.server.api.auth import api_handler
from ovota.server.context import CONTEXT_KEY
from ovota.server.fleet.policy import PolicyError
from ovota.server.fleet.registry import list_modules, module_json
from ovota.server.fleet.rollouts import parse_settings
from ovota.server.store.errors import RepositoryError

_SETTINGS = ("steps", "step_interval", "halt_failed", "halt_silent", "min_sample", "watch", "grace", "notify_url")


async def api_fleet(request: web.Request) -> web.Response:
    """The registry's modules, optionally for one product and tag (vehicle ids: token holders only)."""
    db = request.app[CONTEXT_KEY].repo.db
    modules = list_modules(db, request.query.get("product"), request.query.get("tag"))
    return web.json_response([module_json(m) for m in modules])


async def api_rollouts(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    return web.json_response([context.status.summary(r) for r in context.rollouts.every()])


async def api_rollout_start(request: web.Request) -> web.Response:
    """JSON: product, tag, build (a version or SHA-256 prefix); optional steps, step_interval, halt_failed,
    halt_silent, min_sample, watch, grace, notify_url, written as on the command line."""
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise RepositoryError("request body must be JSON") from None
    if not isinstance(body, dict) or any(not isinstance(body.get(k), str) for k in ("product", "tag", "build")):
        raise RepositoryError("JSON body must have string fields: product, tag, build")
    options = {k: body[k] for k in _SETTINGS if k in body}
    if any(not isinstance(v, int if k == "min_sample" else str) for k, v in options.items()):
        raise RepositoryError("rollout settings are strings as on the command line (min_sample: a number)")
    try:
        settings = parse_settings(**options)
    except PolicyError as err:
        raise RepositoryError(str(err)) from None
    context = request.app[CONTEXT_KEY]
    build = context.repo.find_build(body["build"])
    rollout = context.control.start(body["product"], body["tag"], build, settings, context.clock.now())
    context.changed()
    return web.json_response(context.status.summary(rollout), status=201)


async def api_rollout_status(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    rollout = context.rollouts.current(request.match_info["product"], request.match_info["tag"])
    return web.json_response(context.status.summary(rollout))


async def api_rollout_action(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    product, tag, action = request.match_info["product"], request.match_info["tag"], request.match_info["action"]
    rollout = context.control.act(action, product, tag, context.clock.now())
    context.changed()
    return web.json_response(context.status.summary(rollout))


def add_fleet_routes(api: web.Application) -> None:
    api.router.add_get("/fleet", api_handler(api_fleet))
    api.router.add_get("/rollouts", api_handler(api_rollouts))
    api.router.add_post("/rollouts", api_handler(api_rollout_start))
    api.router.add_get("/rollouts/{product}/{tag}", api_handler(api_rollout_status))
    api.router.add_post("/rollouts/{product}/{tag}/{action}", api_handler(api_rollout_action))

"""The fleet API: the registry's modules, and rollouts (start, status, pause, resume, abort)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ovota.server.api.auth import actor, api_handler
from ovota.server.api.json_body import json_body
from ovota.server.context import CONTEXT_KEY, Desk
from ovota.server.fleet.explain import Explainer, offer_json
from ovota.server.fleet.modules import MAX_PAGE, FleetQuery, module_json, modules_after
from ovota.server.fleet.policy import ModuleState, PolicyError
from ovota.server.fleet.rollouts import RolloutSettings, parse_settings
from ovota.server.store.errors import RepositoryError

SETTINGS = (
    "steps", "step_interval", "halt_failed", "halt_silent", "min_sample", "watch", "grace", "notify_url",
    "voters_known_for", "versions", "timezone", "rate",
)  # fmt: skip
LISTS = ("groups", "vehicles", "windows")  # lists of strings


async def api_fleet(request: web.Request) -> web.Response:
    """The registry's modules by key, ``?limit=`` (default and most 1000) at a time ``after=`` a key, filtered
    as the console's Fleet page filters (``product``, ``tag``, ``version``, ``state`` in an active rollout,
    ``override`` pinned or assigned, ``q`` in the vehicle id, version or address). ``X-Total-Count`` says how
    many match; ``Link: <…>; rel="next"`` gives the next page while there is one."""
    query = FleetQuery.from_params(request.query)
    after = request.query.get("after", "")
    try:
        limit = int(request.query.get("limit", str(MAX_PAGE)))
    except ValueError:
        raise RepositoryError("limit must be a whole number") from None
    now = request.app[CONTEXT_KEY].clock.now()

    def read(desk: Desk) -> tuple[list[dict[str, Any]], int, str]:
        modules, total = modules_after(desk.repo.db, query, after, limit)
        explainer = Explainer(desk.rollouts, now)
        rows = [module_json(m) | offer_json(explainer.of(m)) for m in modules]
        return rows, total, modules[-1].module if modules else ""

    modules, total, last = await request.app[CONTEXT_KEY].run(read)
    headers = {"X-Total-Count": str(total)}
    if len(modules) == limit:
        following = request.rel_url.update_query({"after": last, "limit": str(limit)})
        headers["Link"] = f'<{following}>; rel="next"'
    return web.json_response(modules, headers=headers)


async def api_rollouts(request: web.Request) -> web.Response:
    now = request.app[CONTEXT_KEY].clock.now()
    summaries = await request.app[CONTEXT_KEY].run(
        lambda desk: [desk.status.summary(r, now) for r in desk.rollouts.every()]
    )
    return web.json_response(summaries)


def rollout_settings(body: object) -> tuple[str, str, str, RolloutSettings]:
    """(product, tag, build, settings) from a JSON object: product, tag, build (a version or SHA-256 prefix) and
    the optional settings, written as on the command line (min_sample: a whole number; groups, vehicles and
    windows: lists of strings; rate_growth: a number)."""
    if not isinstance(body, dict) or any(not isinstance(body.get(k), str) for k in ("product", "tag", "build")):
        raise RepositoryError("JSON body must have string fields: product, tag, build")
    unknown = sorted(set(body) - {"product", "tag", "build", *SETTINGS, *LISTS, "rate_growth"})
    if unknown:
        raise RepositoryError(f"unknown rollout settings: {', '.join(unknown)}")
    options = {k: body[k] for k in SETTINGS if k in body}
    for key in LISTS:
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RepositoryError(f"rollout setting {key} must be a list of strings")
        options[key] = value
    growth = body.get("rate_growth", 1.0)
    if isinstance(growth, bool) or not isinstance(growth, (int, float)):
        raise RepositoryError("rollout setting rate_growth must be a number")
    options["rate_growth"] = float(growth)
    for key, value in ((k, options[k]) for k in SETTINGS if k in options):
        # bool is an int in Python; a JSON true is not a sample size.
        wanted = (
            isinstance(value, int) and not isinstance(value, bool) if key == "min_sample" else isinstance(value, str)
        )
        if not wanted:
            raise RepositoryError(
                f"rollout setting {key} must be {'a whole number' if key == 'min_sample' else 'a string'}"
            )
    try:
        settings = parse_settings(**options)
    except PolicyError as err:
        raise RepositoryError(str(err)) from None
    return body["product"], body["tag"], body["build"], settings


async def api_rollout_start(request: web.Request) -> web.Response:
    """JSON: product, tag, build; optional settings as on the command line (see ``rollout_settings``)."""
    body = await json_body(request)
    allow_empty = body.pop("allow_empty", False) if isinstance(body, dict) else False
    if not isinstance(allow_empty, bool):
        raise RepositoryError("allow_empty must be true or false")
    product, tag, build_ref, settings = rollout_settings(body)
    context = request.app[CONTEXT_KEY]
    now = context.clock.now()

    def start(desk: Desk) -> dict[str, Any]:
        build = desk.repo.find_build(build_ref)
        rollout = desk.control.start(product, tag, build, settings, now, allow_empty)
        return desk.status.summary(rollout) | {"matches": desk.control.matching(product, tag, build, settings, now)}

    summary = await context.run(start, actor(request))
    context.changed()
    return web.json_response(summary, status=201)


async def api_rollout_status(request: web.Request) -> web.Response:
    product, tag = request.match_info["product"], request.match_info["tag"]
    now = request.app[CONTEXT_KEY].clock.now()
    summary = await request.app[CONTEXT_KEY].run(
        lambda desk: desk.status.summary(desk.rollouts.current(product, tag), now)
    )
    return web.json_response(summary)


async def api_rollout_modules(request: web.Request) -> web.Response:
    """``?state=failed``: who is in the rollout and how it went for them (vehicle ids: token holders only)."""
    product, tag, state = request.match_info["product"], request.match_info["tag"], request.query.get("state")
    if state is not None and state not in {s.value for s in ModuleState}:
        raise RepositoryError(f"invalid state {state!r}: use {', '.join(s.value for s in ModuleState)}")

    now = request.app[CONTEXT_KEY].clock.now()

    def read(desk: Desk) -> list[dict[str, Any]]:
        return [m.__dict__ for m in desk.status.modules(desk.rollouts.current(product, tag), state, now)]

    return web.json_response(await request.app[CONTEXT_KEY].run(read))


async def api_rollout_action(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    product, tag, action = request.match_info["product"], request.match_info["tag"], request.match_info["action"]
    now = context.clock.now()
    summary = await context.run(
        lambda desk: desk.status.summary(desk.control.act(action, product, tag, now)), actor(request)
    )
    context.changed()
    return web.json_response(summary)


def add_fleet_routes(api: web.Application) -> None:
    api.router.add_get("/fleet", api_handler(api_fleet))
    api.router.add_get("/rollouts", api_handler(api_rollouts))
    api.router.add_post("/rollouts", api_handler(api_rollout_start, "release"))
    api.router.add_get("/rollouts/{product}/{tag}", api_handler(api_rollout_status))
    api.router.add_get("/rollouts/{product}/{tag}/modules", api_handler(api_rollout_modules))
    api.router.add_post("/rollouts/{product}/{tag}/{action}", api_handler(api_rollout_action, "release"))

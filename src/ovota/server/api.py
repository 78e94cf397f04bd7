"""The release API under /api/v1, for CI systems and scripts: every call needs ``Authorization: Bearer <token>``."""

from __future__ import annotations

import asyncio
import json
from email.utils import formatdate
from typing import Any

from aiohttp import BodyPartReader, web

from ovota.server.deltas import Delta
from ovota.server.fleet import list_modules, module_json
from ovota.server.repository import (
    Channel,
    NotFound,
    Repository,
    RepositoryError,
    Unavailable,
    publish_on_own_connection,
)
from ovota.server.rollout_policy import PolicyError
from ovota.server.rollouts import parse_settings, status_summary
from ovota.server.state import BIN, REPO_KEY, STATE_KEY
from ovota.server.trust import BuildSecurity

MAX_UPLOAD = 16 * 1024 * 1024


def channel_json(
    channel: Channel, base: str, security: BuildSecurity, patches: list[Delta] | None = None
) -> dict[str, Any]:
    """A channel as the JSON listing and the API show it: with the build's secure version and signers
    (Secure Boot V2 key digests), and ``patches``, the delta patches to its build."""
    build = channel.build
    listed = (
        {}
        if patches is None
        else {"deltas": [{"base_hash": d.base_hash, "size": d.size, "sha256": d.patch_sha256} for d in patches]}
    )
    return {
        "product": channel.product,
        "tag": channel.tag,
        "version": build.version,
        "size": build.size,
        "sha256": build.sha256,
        "updated": formatdate(channel.updated, usegmt=True),
        "url": f"{base}/firmware/ota/{channel.product}/{channel.tag}/{BIN}",
        "immutable_url": f"{base}/firmware/builds/{build.sha256}/{BIN}",
        "secure_version": security.secure_version,
        "signers": list(security.signers),
        **listed,
    }


def _channel_answer(request: web.Request, channel: Channel, status: int = 200) -> web.Response:
    security = request.app[REPO_KEY].security(channel.build.sha256)
    return web.json_response(channel_json(channel, f"{request.scheme}://{request.host}", security), status=status)


def _api_error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="ovota"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def api_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    auth = request.headers.get("Authorization", "")
    token = auth[7:] if auth.startswith("Bearer ") else ""
    if not token or request.app[REPO_KEY].token_name(token) is None:
        return _api_error(401, "missing or invalid API token")
    try:
        response: web.StreamResponse = await handler(request)
    except NotFound as err:
        return _api_error(404, str(err))
    except Unavailable:
        raise  # the app's middleware answers 503 with Retry-After
    except RepositoryError as err:
        return _api_error(400, str(err))
    return response


async def api_channels(request: web.Request) -> web.Response:
    base = f"{request.scheme}://{request.host}"
    repo = request.app[REPO_KEY]
    return web.json_response([channel_json(c, base, repo.security(c.build.sha256)) for c in repo.channels()])


async def api_publish(request: web.Request) -> web.Response:
    """Raw image body with ?tag=&product=&changelog=, or multipart fields image, tag, product, changelog."""
    fields: dict[str, str] = dict(request.query)
    data = b""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "image":
                data = await part.read()
            else:
                fields[part.name] = (await part.read()).decode("utf-8", "replace")
    else:
        data = await request.read()
    if not fields.get("tag"):
        raise RepositoryError("missing tag")
    channel = await asyncio.to_thread(
        publish_on_own_connection,
        request.app[REPO_KEY].backends,
        data,
        fields["tag"],
        fields.get("product") or None,
        fields.get("changelog", ""),
    )
    request.app[STATE_KEY].invalidate()
    return _channel_answer(request, channel, 201)


async def _json_body(request: web.Request, *keys: str) -> list[str]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise RepositoryError("request body must be JSON") from None
    if not isinstance(body, dict) or any(not isinstance(body.get(k), str) for k in keys):
        raise RepositoryError(f"JSON body must have string fields: {', '.join(keys)}")
    return [body[k] for k in keys]


async def api_promote(request: web.Request) -> web.Response:
    product, source, target = await _json_body(request, "product", "from", "to")
    channel = request.app[REPO_KEY].promote(product, source, target)
    request.app[STATE_KEY].invalidate()
    return _channel_answer(request, channel)


async def api_rollback(request: web.Request) -> web.Response:
    product, tag = await _json_body(request, "product", "tag")
    channel = request.app[REPO_KEY].rollback(product, tag)
    request.app[STATE_KEY].invalidate()
    return _channel_answer(request, channel)


def create_api(repo: Repository, app: web.Application) -> web.Application:
    """The /api/v1 sub-application, sharing the main application's repository and state."""
    api = web.Application(middlewares=[api_auth], client_max_size=MAX_UPLOAD)
    api[REPO_KEY] = repo
    api[STATE_KEY] = app[STATE_KEY]
    api.router.add_get("/channels", api_channels)
    api.router.add_post("/publish", api_publish)
    api.router.add_post("/promote", api_promote)
    api.router.add_post("/rollback", api_rollback)
    add_rollout_routes(api)
    return api


# -- fleet and rollouts --------------------------------------------------------------------------------------


async def api_fleet(request: web.Request) -> web.Response:
    """The registry's modules, optionally for one product and tag (vehicle ids: token holders only)."""
    modules = list_modules(request.app[REPO_KEY].db, request.query.get("product"), request.query.get("tag"))
    return web.json_response([module_json(m) for m in modules])


async def api_rollouts(request: web.Request) -> web.Response:
    rollouts = request.app[STATE_KEY].rollouts
    return web.json_response([status_summary(rollouts, r) for r in rollouts.every()])


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
    state = request.app[STATE_KEY]
    try:
        settings = parse_settings(**options)
    except PolicyError as err:
        raise RepositoryError(str(err)) from None
    build = request.app[REPO_KEY].find_build(body["build"])
    rollout = state.rollouts.start(body["product"], body["tag"], build, settings, state.clock.now())
    state.invalidate()
    return web.json_response(status_summary(state.rollouts, rollout), status=201)


async def api_rollout_status(request: web.Request) -> web.Response:
    rollouts = request.app[STATE_KEY].rollouts
    rollout = rollouts.current(request.match_info["product"], request.match_info["tag"])
    return web.json_response(status_summary(rollouts, rollout))


async def api_rollout_action(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    product, tag, action = request.match_info["product"], request.match_info["tag"], request.match_info["action"]
    change = {"pause": state.rollouts.pause, "resume": state.rollouts.resume, "abort": state.rollouts.abort}
    if action not in change:
        raise web.HTTPNotFound(text=f"Not found: no rollout action {action!r}\n")
    rollout = change[action](product, tag, state.clock.now())
    state.invalidate()
    return web.json_response(status_summary(state.rollouts, rollout))


_SETTINGS = ("steps", "step_interval", "halt_failed", "halt_silent", "min_sample", "watch", "grace", "notify_url")


def add_rollout_routes(api: web.Application) -> None:
    api.router.add_get("/fleet", api_fleet)
    api.router.add_get("/rollouts", api_rollouts)
    api.router.add_post("/rollouts", api_rollout_start)
    api.router.add_get("/rollouts/{product}/{tag}", api_rollout_status)
    api.router.add_post("/rollouts/{product}/{tag}/{action}", api_rollout_action)

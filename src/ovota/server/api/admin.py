"""Tokens (admin tokens only) and the audit log through the API."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from ovota.server.api.auth import actor, api_handler
from ovota.server.api.json_body import json_body
from ovota.server.context import CONTEXT_KEY
from ovota.server.store import audit, tokens
from ovota.server.store.errors import RepositoryError


def _token_json(record: tokens.TokenRecord) -> dict[str, Any]:
    return {"name": record.name, "role": record.role, "created": record.created, "last_used": record.last_used or None}


async def api_tokens(request: web.Request) -> web.Response:
    """Every token's name, role, creation and last use (never the secret)."""
    records = await request.app[CONTEXT_KEY].run(lambda desk: tokens.list_tokens(desk.repo.db))
    return web.json_response([_token_json(r) for r in records])


async def api_token_create(request: web.Request) -> web.Response:
    """``{"name", "role"}``: the new token, shown this once."""
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not isinstance(body.get("role"), str):
        raise RepositoryError("JSON body must have string fields: name, role")
    name, role = body["name"], body["role"]
    secret = await request.app[CONTEXT_KEY].run(
        lambda desk: tokens.create_token(desk.repo.db, name, role, actor(request))
    )
    return web.json_response({"name": name, "role": role, "token": secret}, status=201)


async def api_token_revoke(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[CONTEXT_KEY].run(lambda desk: tokens.revoke_token(desk.repo.db, name, actor(request)))
    return web.json_response({"revoked": name})


async def api_audit(request: web.Request) -> web.Response:
    """``?since=<epoch seconds>&actor=<name>&limit=<n>``: the newest entries, oldest first."""
    try:
        since = float(request.query.get("since", "0"))
        limit = int(request.query.get("limit", "1000"))
    except ValueError:
        raise RepositoryError("since is seconds since the epoch, limit a whole number") from None
    if not math.isfinite(since) or not 1 <= limit <= 10_000:
        raise RepositoryError("since must be finite and limit from 1 to 10000")
    who = request.query.get("actor") or None
    found = await request.app[CONTEXT_KEY].run(lambda desk: audit.entries(desk.repo.db, since, who, limit))
    return web.json_response([entry.__dict__ for entry in found])


def add_admin_routes(api: web.Application) -> None:
    api.router.add_get("/tokens", api_handler(api_tokens, "admin"))
    api.router.add_post("/tokens", api_handler(api_token_create, "admin"))
    api.router.add_delete("/tokens/{name}", api_handler(api_token_revoke, "admin"))
    api.router.add_get("/audit", api_handler(api_audit))

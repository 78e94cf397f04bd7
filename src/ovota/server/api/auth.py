"""Every /api/v1 call needs ``Authorization: Bearer <token>``; refusals become JSON errors."""

from __future__ import annotations

import contextlib
import time
from functools import wraps

from aiohttp import web

from ovota.server.context import (
    API_SECONDS,
    BACKEND_AWAY,
    CONTEXT_KEY,
    Desk,
    Handler,
    crowded,
    unavailable,
    undecodable,
)
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.errors import NotFound, RepositoryError, StorageFull
from ovota.server.store.tokens import TokenRecord, allows, authenticate, touch


def api_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="ovota"'}
    return web.json_response({"error": message}, status=status, headers=headers)


def _check_token(desk: Desk, token: str) -> TokenRecord | None:
    record = authenticate(desk.repo.db, token)
    if record is not None:
        # Noting when it was used must not fail a request: the database may be locked by a writer.
        with contextlib.suppress(DatabaseUnavailable):
            touch(desk.repo.db, record, time.time())
    return record


ACTOR = "ovota.actor"  # the request's token name, for the handler (request[ACTOR])


def actor(request: web.Request) -> str:
    """Who is acting: the name of the request's token."""
    return str(request.get(ACTOR, ""))


def api_handler(handler: Handler, role: str = "read", shed: bool = True) -> Handler:
    """``handler`` behind the token check, for tokens whose role allows ``role``, its refusals as JSON: 400 for
    undecodable headers and what the repository refuses, 401 without a valid token, 403 for a role that does
    not allow it, 404 for what does not exist, 429 for an address that failed to authenticate too often, 503
    with Retry-After while a backend is away or (if it may ``shed`` load) the server is near its cap on open
    connections."""

    @wraps(handler)
    async def api_call(request: web.Request) -> web.StreamResponse:
        context = request.app[CONTEXT_KEY]
        if shed and context.crowded():
            return crowded()
        bad = undecodable(request)
        if bad is not None:
            return api_error(400, f"{bad} is not UTF-8")
        address = context.address(request)
        wait = context.throttle.retry_after(address)
        if wait:
            return api_error(429, "too many failed authentications: try later", {"Retry-After": str(wait)})
        try:
            auth = request.headers.get("Authorization", "")
            token = auth[7:].strip() if auth.startswith("Bearer ") else ""
            found = await context.run(lambda desk: _check_token(desk, token)) if token else None
            if found is None:
                context.throttle.failed(address)
                return api_error(401, "missing or invalid API token")
            if not allows(found.role, role):
                return api_error(403, f"token {found.name!r} has the role {found.role}: this needs {role}")
            request[ACTOR] = found.name
            started = time.perf_counter()
            try:
                return await handler(request)
            finally:
                API_SECONDS.observe(time.perf_counter() - started)
        except NotFound as err:
            return api_error(404, str(err))
        except StorageFull as err:
            return api_error(507, str(err))
        except BACKEND_AWAY as err:
            return unavailable(err, as_json=True)
        except RepositoryError as err:
            return api_error(400, str(err))

    return api_call

"""Every /api/v1 call needs ``Authorization: Bearer <token>``; refusals become JSON errors."""

from __future__ import annotations

from functools import wraps

from aiohttp import web

from ovota.server.context import BACKEND_AWAY, CONTEXT_KEY, Handler, unavailable
from ovota.server.store.errors import NotFound, RepositoryError


def api_error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="ovota"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


def api_handler(handler: Handler) -> Handler:
    """``handler`` behind the token check, its refusals as JSON: 404 for what does not exist, 400 for what
    the repository refuses, 503 with Retry-After while a backend is away."""

    @wraps(handler)
    async def api_call(request: web.Request) -> web.StreamResponse:
        try:
            auth = request.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else ""
            if not token or request.app[CONTEXT_KEY].repo.token_name(token) is None:
                return api_error(401, "missing or invalid API token")
            return await handler(request)
        except NotFound as err:
            return api_error(404, str(err))
        except BACKEND_AWAY as err:
            return unavailable(err, as_json=True)
        except RepositoryError as err:
            return api_error(400, str(err))

    return api_call

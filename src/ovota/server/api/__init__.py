"""The release API under /api/v1, for CI systems and scripts (every call needs a token), and ``/clock`` for
fleet simulations."""

from __future__ import annotations

from aiohttp import web

from ovota.server.api.admin import add_admin_routes
from ovota.server.api.auth import api_error
from ovota.server.api.fleet import add_fleet_routes
from ovota.server.api.releases import add_release_routes
from ovota.server.api.targets import add_target_routes
from ovota.server.context import CONTEXT_KEY, Context

MAX_UPLOAD = 16 * 1024 * 1024


async def _unknown(request: web.Request) -> web.Response:
    return api_error(404, f"no such API: {request.method} {request.path} (see the README's API list)")


def create_api(context: Context) -> web.Application:
    """The /api/v1 sub-application, sharing the main application's context."""
    api = web.Application(client_max_size=MAX_UPLOAD)
    api[CONTEXT_KEY] = context
    add_release_routes(api)
    add_fleet_routes(api)
    add_target_routes(api)
    add_admin_routes(api)
    api.router.add_route("*", "/{anything:.*}", _unknown)  # last: what no route above takes is a JSON 404
    return api

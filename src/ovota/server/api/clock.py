"""``/clock``: the server's clock for fleet simulations. It exists only on a simulation server: ``GET`` with
``--time-scale`` or ``--driven-clock``, ``POST`` with ``--driven-clock``; a production server has no such route (404):
nothing about its clock is for outsiders to read or move."""

from __future__ import annotations

import math

from aiohttp import web

from ovota.server.api.json_body import json_body
from ovota.server.context import CONTEXT_KEY, Context, guarded
from ovota.server.store.clock import ServerClock
from ovota.server.store.errors import RepositoryError


def _clock_json(context: Context) -> web.Response:
    clock = context.clock
    return web.json_response({"now": clock.now(), "scale": clock.scale, "driven": clock.driven})


async def clock_now(request: web.Request) -> web.Response:
    """The server's clock."""
    return _clock_json(request.app[CONTEXT_KEY])


async def clock_advance(request: web.Request) -> web.Response:
    """Move a driven clock to ``{"to": seconds}``: the registry is flushed first and rollouts are evaluated
    at the new time before the answer, so a simulator's next tick sees every decision."""
    context = request.app[CONTEXT_KEY]
    try:
        when = float((await json_body(request))["to"])
    except (ValueError, KeyError, TypeError, RepositoryError):
        when = math.nan
    if not math.isfinite(when):
        raise web.HTTPBadRequest(text='expected {"to": <seconds since the epoch>}\n')
    await context.background.advance_clock(when)
    return _clock_json(context)


def add_clock_routes(app: web.Application, clock: ServerClock) -> None:
    """The routes this server's clock allows (none on the real clock)."""
    if clock.driven or clock.scale != 1:
        app.router.add_get("/clock", guarded(clock_now))
    if clock.driven:
        app.router.add_post("/clock", guarded(clock_advance))

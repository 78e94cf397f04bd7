"""For monitoring: ``/healthz`` (the process answers), ``/readyz`` (and its database does) and ``/metrics``
(Prometheus's text format; a token of any role, as ``Authorization: Bearer``, since fleet sizes are not public)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ovota.server.api.auth import api_handler
from ovota.server.context import BACKEND_AWAY, CONTEXT_KEY
from ovota.server.metrics import exposition

READY_WAIT = 3.0


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """200 once the database answers a query within READY_WAIT seconds, else 503: take this process out of a
    load balancer's rotation while PostgreSQL is away."""
    try:
        await asyncio.wait_for(request.app[CONTEXT_KEY].run(lambda desk: desk.repo.db.execute("SELECT 1")), READY_WAIT)
    except (*BACKEND_AWAY, TimeoutError) as err:
        return web.Response(status=503, text=f"not ready: {err or 'the database did not answer'}\n",
                            headers={"Retry-After": "5"})  # fmt: skip
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[CONTEXT_KEY].run(lambda desk: exposition(desk.repo.db))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", api_handler(metrics))

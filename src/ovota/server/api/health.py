"""For monitoring: ``/healthz`` (the process answers), ``/readyz`` (and its database and blob store do) and ``/metrics``
(Prometheus's text format; a token of any role, as ``Authorization: Bearer``, since fleet sizes are not public)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ovota.server.api.auth import api_handler
from ovota.server.context import BACKEND_AWAY, CONTEXT_KEY, Desk
from ovota.server.loops import HEALTH
from ovota.server.metrics import exposition

READY_WAIT = 3.0


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """200 once the database answers a query and the blob store a real round trip within READY_WAIT seconds,
    else 503: take this process out of a load balancer's rotation while PostgreSQL or the object store is away.
    The answer is kept for READY_CACHE seconds, so frequent probes cost the backends nothing."""
    context = request.app[CONTEXT_KEY]
    now = time.monotonic()
    checked = _checked.get(id(context))
    if checked is None or now - checked[0] > READY_CACHE:
        problem = None
        try:
            await asyncio.wait_for(context.run(_round_trip), READY_WAIT)
        except (*BACKEND_AWAY, TimeoutError) as err:
            problem = str(err) or "the database or the blob store did not answer"
        checked = _checked[id(context)] = (time.monotonic(), problem)
    if checked[1] is not None:
        return web.Response(status=503, text=f"not ready: {checked[1]}\n", headers={"Retry-After": "5"})
    # Background workers that fail do not stop this process from serving: said, not a 503.
    failing = "".join(f"{worker} failing: {reason}\n" for worker, reason in sorted(HEALTH.failing.items()))
    return web.Response(text="ready\n" + failing)


READY_CACHE = 1.5
_checked: dict[int, tuple[float, str | None]] = {}  # per server context: (when, problem or None)


def _round_trip(desk: Desk) -> None:
    desk.repo.db.execute("SELECT 1").fetchone()
    desk.repo.blobs.ping()


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[CONTEXT_KEY].run(lambda desk: exposition(desk.repo.db))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", api_handler(metrics, shed=False))  # wanted most when the server is crowded

"""What the operator face (API, download area, console pages) works with, shared by its handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps

from aiohttp import web

from ovota.server.fleet.control import RolloutControl
from ovota.server.fleet.rollouts import Rollouts
from ovota.server.fleet.status import RolloutStatus
from ovota.server.loops import Background
from ovota.server.store.blobstore import BlobUnavailable
from ovota.server.store.clock import ServerClock
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.errors import Unavailable
from ovota.server.store.repository import Repository


@dataclass
class Context:
    """The request path's connection and readers over it; ``changed`` tells the device face that a channel or
    a rollout moved; ``background`` flushes and evaluates (``POST /clock``)."""

    repo: Repository
    clock: ServerClock
    rollouts: Rollouts
    control: RolloutControl
    status: RolloutStatus
    background: Background
    changed: Callable[[], None]

    @classmethod
    def over(cls, repo: Repository, clock: ServerClock, background: Background,
             changed: Callable[[], None]) -> Context:  # fmt: skip
        rollouts = Rollouts(repo)
        return cls(repo, clock, rollouts, RolloutControl(rollouts), RolloutStatus(rollouts), background, changed)


CONTEXT_KEY = web.AppKey("context", Context)


RETRY_AFTER = "5"
BACKEND_AWAY = (DatabaseUnavailable, BlobUnavailable, Unavailable)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def unavailable(err: Exception, as_json: bool = False) -> web.Response:
    """A backend that is away (PostgreSQL restarting, the object store unreachable) is a 503 with Retry-After,
    never a 500; nothing was half-written (every write is one transaction after the blob is stored)."""
    headers = {"Retry-After": RETRY_AFTER}
    if as_json:
        return web.json_response({"error": str(err)}, status=503, headers=headers)
    return web.Response(status=503, text=f"Service unavailable: {err}\n", headers=headers)


def guarded(handler: Handler) -> Handler:
    """``handler``, answering 503 while a backend is away. (Per route rather than a middleware: an aiohttp
    middleware anywhere wraps every request, the device paths' too.)"""

    @wraps(handler)
    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except BACKEND_AWAY as err:
            return unavailable(err)

    return guarded_handler

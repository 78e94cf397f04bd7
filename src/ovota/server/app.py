"""The update server's aiohttp application: the device face, the operator face, and the background loops,
over one repository."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ovota.server.api import MAX_UPLOAD, create_api
from ovota.server.api.clock import add_clock_routes
from ovota.server.context import CONTEXT_KEY, Context
from ovota.server.devices.answers import ChannelAnswers
from ovota.server.devices.blobs import OpenBlobs
from ovota.server.devices.ota_request import DeviceFace
from ovota.server.devices.pins import Pins
from ovota.server.fleet.notify import Notifier
from ovota.server.fleet.rollouts import Rollouts
from ovota.server.fleet.status import RolloutStatus
from ovota.server.loops import Background, DeltaMaker, background_tasks
from ovota.server.store import deltas
from ovota.server.store.backends import Backends
from ovota.server.store.clock import ServerClock
from ovota.server.store.repository import Repository
from ovota.server.web.console import add_console_routes
from ovota.server.web.fleet_pages import add_fleet_pages
from ovota.server.web.listing import add_listing_routes


def create_app(
    repo_root: Path | Backends,
    clock: ServerClock | None = None,
    fleet: bool = True,
    delta_bases: int = deltas.DEFAULT_BASES,
    forwarded_by: tuple[str, ...] = (),
) -> web.Application:
    """The server over the repository at ``repo_root`` (a folder, or cluster backends); ``fleet=False`` turns
    the fleet registry off; patches are made from the last ``delta_bases`` builds of each channel (0: none);
    requests from the proxies at ``forwarded_by`` are taken to come from the last X-Forwarded-For address."""
    repo = Repository(repo_root)
    clock = clock or repo.clock()
    answers = ChannelAnswers(repo)
    background = Background(repo, clock, fleet, Notifier(RolloutStatus(Rollouts(repo)).summary), answers.invalidate)
    devices = DeviceFace(repo, clock, answers, background.recorder, Pins(), OpenBlobs(repo), frozenset(forwarded_by))
    context = Context.over(repo, clock, background, answers.invalidate)
    # No middlewares: aiohttp would run them around every request, the device paths' too. Handlers that
    # need them (503 while a backend is away, API tokens) are wrapped per route instead.
    app = web.Application(client_max_size=MAX_UPLOAD)
    app[CONTEXT_KEY] = context
    devices.add_routes(app)  # first: the router tries resources in order
    add_listing_routes(app)
    add_clock_routes(app)
    app.add_subapp("/api/v1", create_api(context))
    add_console_routes(app)
    add_fleet_pages(app)
    app.router.add_static("/static", Path(__file__).parent / "web" / "static")

    async def close(app: web.Application) -> None:
        devices.blobs.close()
        repo.close()

    app.cleanup_ctx.append(background_tasks(background, DeltaMaker(background, delta_bases)))
    app.on_cleanup.append(close)
    return app

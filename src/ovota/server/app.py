"""The update server's aiohttp application: the device face, the operator face, and the background loops,
over one repository."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ovota.server.api import MAX_UPLOAD, create_api
from ovota.server.api.clock import add_clock_routes
from ovota.server.api.health import add_health_routes
from ovota.server.context import CONTEXT_KEY, Context, Desk
from ovota.server.devices.answers import ChannelAnswers
from ovota.server.devices.blobs import OpenBlobs
from ovota.server.devices.ota_request import DeviceFace
from ovota.server.devices.promises import Promises
from ovota.server.fleet.registry import DOWNLOADS_RETENTION
from ovota.server.fleet.rollouts import Rollouts
from ovota.server.loops import Background, DeltaMaker, background_tasks
from ovota.server.metrics import CLIENT_DISCONNECTS, CONNECTIONS_REFUSED, IDLE_CLOSED
from ovota.server.store import deltas
from ovota.server.store.backends import Backends
from ovota.server.store.clock import ServerClock
from ovota.server.store.repository import Repository
from ovota.server.store.threads import RepositoryThreads
from ovota.server.web.audit_page import add_audit_page
from ovota.server.web.console import add_console_routes
from ovota.server.web.fleet_page import add_fleet_page
from ovota.server.web.listing import add_listing_routes
from ovota.server.web.module_page import add_module_page
from ovota.server.web.rollouts_page import add_rollouts_page
from ovota.server.web.targeting_page import add_targeting_page

PARTIAL_AGE = 600.0  # a temporary blob file this old belongs to no publish still running
log = logging.getLogger("ovota.server")


def _disconnect(error: BaseException | None) -> bool:
    """Whether an error is a client that went away mid-request (reset, closed, a transport closing under a write):
    the client's doing, not a bug."""
    if isinstance(error, ConnectionError):
        return True
    text = str(error).lower() if isinstance(error, RuntimeError) else ""
    # aiohttp's words for the same, when the connection goes while it reads a body it no longer needs
    return any(words in text for words in ("transport is closing", "closing transport", "connection closed"))


class _QuietRequestErrors(logging.Filter):
    """aiohttp logs every malformed request, and every client that resets its connection mid-request, with a
    traceback; anyone on the internet can cause them cheaply. One line each instead, at most LOG_BURST per minute,
    then a count of what was left out; disconnects are counted in the metrics. (Errors in handlers keep their
    tracebacks: they are bugs.)"""

    def __init__(self) -> None:
        super().__init__()
        self._window = 0.0
        self._logged = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if _disconnect(error):
            CLIENT_DISCONNECTS.inc()
        elif not isinstance(error, HttpProcessingError):
            return True  # anything else is a bug in a handler: its traceback stays
        now = time.monotonic()
        if now - self._window > 60:
            if self._suppressed:
                logging.getLogger("ovota.server").warning("%d more malformed requests not logged", self._suppressed)
            self._window, self._logged, self._suppressed = now, 0, 0
        self._logged += 1
        if self._logged > LOG_BURST:
            self._suppressed += 1
            return False
        record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


LOG_BURST = 20


class _QuietAcceptErrors(logging.Filter):
    """asyncio logs a traceback for every failed ``accept()`` when the process runs out of file descriptors (a
    flood of connections): tens of MB a minute. One line a minute instead, with how many were left out."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -60.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("socket.accept() out of system resource"):
            return True
        now = time.monotonic()
        if now - self._last < 60:
            self._suppressed += 1
            return False
        error = record.exc_info[1] if record.exc_info else None
        record.msg = f"accept() failed, out of file descriptors ({error}); {self._suppressed} more since last said"
        record.args, record.exc_info, record.exc_text = (), None, None
        self._last, self._suppressed = now, 0
        return True


def _quiet_request_errors() -> None:
    for name, kind in (("aiohttp.server", _QuietRequestErrors), ("asyncio", _QuietAcceptErrors)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


async def _strict_transport_security(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")


def create_app(
    repo_root: Path | Backends,
    clock: ServerClock | None = None,
    fleet: bool = True,
    delta_bases: int = deltas.DEFAULT_BASES,
    forwarded_by: tuple[str, ...] = (),
    public_url: str = "",
    tls: bool = False,
    retention: float = DOWNLOADS_RETENTION,
    idle_timeout: float = 15.0,
) -> web.Application:
    """The server over the repository at ``repo_root`` (a folder, or cluster backends); ``fleet=False`` turns
    the fleet registry off; patches are made from the last ``delta_bases`` builds of each channel (0: none);
    requests from the proxies at ``forwarded_by`` are taken to come from the last X-Forwarded-For address;
    JSON listings give URLs under ``public_url`` (relative ones without); ``tls``: served over HTTPS (Secure
    cookies, HSTS); download records older than ``retention`` seconds are deleted; a request that needs no token
    sends its body within ``idle_timeout`` seconds."""
    repo = Repository(repo_root)
    backends = repo.backends
    clock = clock or repo.clock()
    removed = repo.blobs.remove_partials(PARTIAL_AGE)
    if removed:
        log.warning("removed %d partial blob file(s) left by interrupted publishes", len(removed))
    _quiet_request_errors()
    answers = ChannelAnswers(repo, RepositoryThreads(backends, Rollouts, 2, "ovota-devices"))
    background = Background(backends, clock, fleet, answers.invalidate, retention)
    proxies = frozenset(forwarded_by)
    devices = DeviceFace(clock, answers, background.recorder, Promises(), OpenBlobs(repo), proxies)
    threads = RepositoryThreads(backends, Desk.over, 4, "ovota-operators")
    context = Context(clock, threads, background, answers.invalidate, public_url.rstrip("/"), tls, proxies,
                      body_seconds=idle_timeout)  # fmt: skip
    # No middlewares: aiohttp would run them around every request, the device paths' too. Handlers that
    # need them (503 while a backend is away, API tokens) are wrapped per route instead.
    app = web.Application(client_max_size=MAX_UPLOAD)
    app[CONTEXT_KEY] = context
    devices.add_routes(app)  # first: the router tries resources in order
    add_listing_routes(app)
    add_clock_routes(app, clock)
    add_health_routes(app)
    app.add_subapp("/api/v1", create_api(context))
    add_console_routes(app)
    add_fleet_page(app)
    add_module_page(app)
    add_rollouts_page(app)
    add_audit_page(app)
    add_targeting_page(app)
    app.router.add_static("/static", Path(__file__).parent / "web" / "static")
    if tls:
        app.on_response_prepare.append(_strict_transport_security)

    async def close(app: web.Application) -> None:
        threads.close()
        answers.threads.close()
        devices.blobs.close()
        repo.close()

    app.cleanup_ctx.append(background_tasks(background, DeltaMaker(background, delta_bases)))
    app.on_cleanup.append(close)
    return app


# -- caps on open connections ----------------------------------------------------------------------------------
# In total and per client address, so that one client holding connections open (slow heads, slow bodies, idle
# keep-alives) cannot take every file descriptor and stop the fleet. At the total cap the connection that has been
# idle longest (no request in progress: a keep-alive, or a head still arriving) is closed to make room; with none
# idle, and over the per-address cap, a new connection is reset as soon as it is accepted, before anything is
# read. Near the total cap, operators' requests are answered 503 (context.guarded) so that modules' come first.
# Load balancers (--forwarded-by) carry everybody's connections: capped only in total. aiohttp has no hook for
# this: its request handler is subclassed and its server told to make that one instead.

NEAR = 0.9  # the share of the total cap from which operators' requests wait


class ConnectionCaps:
    """How many connections are open, per address, and which are idle; whether one more may be."""

    def __init__(self, total: int, per_address: int, exempt: frozenset[str] = frozenset()) -> None:
        self.total = total
        self.per_address = per_address
        self.exempt = exempt
        self.open: Counter[str] = Counter()
        self.count = 0
        self.idle: dict[RequestHandler, None] = {}  # no request in progress, longest idle first
        self._logged: dict[str, float] = {}

    def admit(self, address: str, handler: RequestHandler) -> bool:
        """Whether a new connection from ``address`` may be served, closing the longest idle one at the total
        cap to make room."""
        if address not in self.exempt and self.open[address] >= self.per_address:
            return self._refuse("per address", address)
        if self.count >= self.total and not self._close_idle():
            return self._refuse("total", address)
        self.count += 1
        self.open[address] += 1
        self.idle[handler] = None
        return True

    def crowded(self) -> bool:
        return self.count >= self.total * NEAR

    def busy(self, handler: RequestHandler) -> None:
        self.idle.pop(handler, None)

    def rest(self, handler: RequestHandler) -> None:
        self.idle[handler] = None

    def release(self, address: str, handler: RequestHandler) -> None:
        self.idle.pop(handler, None)
        self.count -= 1
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]  # the table holds only addresses with open connections

    def _close_idle(self) -> bool:
        if not self.idle:
            return False
        oldest = next(iter(self.idle))
        del self.idle[oldest]  # counted open until its connection_lost
        oldest.force_close()
        if oldest.transport is not None:
            oldest.transport.close()
        IDLE_CLOSED.inc()
        self._say("closing the longest idle connections at the total cap (%d open)", self.count)
        return True

    def _refuse(self, cap: str, address: str) -> bool:
        CONNECTIONS_REFUSED.labels(cap).inc()
        self._say(f"refusing connections over the {cap} cap (%d open, %d from %s)", self.count, self.open[address],
                  address)  # fmt: skip
        return False

    def _say(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged.get(message[:20], -60.0) >= 60:
            self._logged[message[:20]] = now
            log.warning(message + "; said once a minute", *args)


class _CappedHandler(RequestHandler):
    _admitted: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        self._caps: ConnectionCaps = self._manager._ovota_caps  # type: ignore[union-attr]
        if not self._caps.admit(address, self):
            if isinstance(transport, asyncio.Transport):
                transport.abort()  # a reset at once: nothing is read, no task is started
            else:
                transport.close()
            return
        self._admitted = address
        super().connection_made(transport)

    async def _handle_request(self, *args: Any) -> Any:
        self._caps.busy(self)
        try:
            return await super()._handle_request(*args)
        finally:
            if self.transport is not None and not self._force_close:
                self._caps.rest(self)  # waits for its next request (a keep-alive)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._admitted is None:
            return  # refused: aiohttp never knew it
        self._caps.release(self._admitted, self)
        self._admitted = None
        super().connection_lost(exc)


class _CappedServer(Server):
    def __call__(self) -> RequestHandler:
        return _CappedHandler(self, loop=self._loop, **self._kwargs)


def cap_connections(app: web.Application, caps: ConnectionCaps) -> None:
    """Make ``app``'s server (as ``web.run_app`` will create it) keep to ``caps``, and its operators' requests
    wait while it is near them."""
    make = app._make_handler
    app[CONTEXT_KEY].crowded = caps.crowded

    def make_handler(**kwargs: Any) -> Server:
        server = make(**kwargs)
        server.__class__ = _CappedServer
        server._ovota_caps = caps  # type: ignore[attr-defined]
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]

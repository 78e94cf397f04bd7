"""What the operator face (API, download area, console pages) works with, shared by its handlers: database
threads, the server's clock, how to tell the device face that something changed, and the answers every
operator handler gives alike (503 while a backend is away, 400 for undecodable input, 429 when throttled)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import TypeVar

from aiohttp import web

from ovota.server.fleet.control import RolloutControl
from ovota.server.fleet.rollouts import Rollouts
from ovota.server.fleet.status import RolloutStatus
from ovota.server.loops import Background
from ovota.server.metrics import BACKEND_FAILURES, OPERATOR_SECONDS
from ovota.server.store.blobstore import BlobUnavailable
from ovota.server.store.clock import ServerClock
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.errors import Unavailable
from ovota.server.store.repository import Repository
from ovota.server.store.threads import RepositoryThreads

R = TypeVar("R")
log = logging.getLogger("ovota.server")
RETRY_AFTER = "5"
BACKEND_AWAY = (DatabaseUnavailable, BlobUnavailable, Unavailable)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEB_SECONDS = OPERATOR_SECONDS.labels("web")
API_SECONDS = OPERATOR_SECONDS.labels("api")


@dataclass
class Desk:
    """One database thread's connection and the readers and controls over it."""

    repo: Repository
    rollouts: Rollouts
    control: RolloutControl
    status: RolloutStatus

    @classmethod
    def over(cls, repo: Repository) -> Desk:
        rollouts = Rollouts(repo)
        return cls(repo, rollouts, RolloutControl(rollouts), RolloutStatus(rollouts))


class Throttle:
    """Failed authentications per client address: after ``limit`` within ``window`` seconds, that address is
    refused (429) until the oldest of them is ``window`` old. Bounded to ``max_addresses`` addresses."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_addresses: int = 10_000) -> None:
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> int:
        """Seconds the address must wait before trying again; 0 if it may try now."""
        failures = self._failures.get(address)
        if failures is None:
            return 0
        now = time.monotonic()
        while failures and now - failures[0] > self.window:
            failures.popleft()
        if len(failures) < self.limit:
            return 0
        return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, address: str) -> None:
        failures = self._failures.setdefault(address, deque(maxlen=self.limit))
        failures.append(time.monotonic())
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)


@dataclass
class Context:
    """``threads`` run the database work (``run``); ``changed`` tells the device face that a channel or a
    rollout moved; ``background`` flushes and evaluates (``POST /clock``). ``public_url`` prefixes the URLs in
    JSON listings (empty: relative URLs); ``tls`` is whether the server speaks HTTPS (Secure cookies)."""

    clock: ServerClock
    threads: RepositoryThreads[Desk]
    background: Background
    changed: Callable[[], None]
    public_url: str = ""
    tls: bool = False
    proxies: frozenset[str] = frozenset()
    throttle: Throttle = field(default_factory=Throttle)
    body_seconds: float = 15.0  # how long a request that needs no token may take to send its body (--idle-timeout)
    crowded: Callable[[], bool] = lambda: False  # near the cap on open connections: modules first (app.py)

    async def run(self, job: Callable[[Desk], R], actor: str = "") -> R:
        """``job(desk)`` in a database thread, acting as ``actor`` (the audit log's who) when it changes
        anything."""

        def acting(desk: Desk) -> R:
            desk.repo.actor = actor
            return job(desk)

        return await self.threads.run(acting)

    def address(self, request: web.Request) -> str:
        return client_address(request, self.proxies)


CONTEXT_KEY = web.AppKey("context", Context)


def client_address(request: web.Request, proxies: frozenset[str]) -> str:
    """The client's address: the peer's, or behind a trusted load balancer (``--forwarded-by``) the address it
    appended to X-Forwarded-For, if that is an IP address (anything else there, the proxy's own address)."""
    remote = request.remote or ""
    if remote in proxies:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            last = forwarded.rsplit(",", 1)[-1].strip()
            with contextlib.suppress(ValueError):
                return str(ipaddress.ip_address(last))
    return remote


def unavailable(err: Exception, as_json: bool = False) -> web.Response:
    """A backend that is away (PostgreSQL restarting, the object store unreachable, the database locked by
    another process, every database thread busy) is a 503 with Retry-After, never a 500; nothing was
    half-written (every write is one transaction after the blob is stored). Counted in the metrics by backend and
    cause, and logged once per cause every LOG_EVERY seconds (a store that is down fails every request)."""
    backend = "blobs" if isinstance(err, BlobUnavailable) else "database" if isinstance(err, DatabaseUnavailable) else (
        "store")  # fmt: skip
    cause = str(getattr(err, "cause", type(err).__name__))[:40]
    BACKEND_FAILURES.labels(backend, cause).inc()
    now = time.monotonic()
    if now - _logged.get((backend, cause), -LOG_EVERY) >= LOG_EVERY:
        _logged[(backend, cause)] = now
        log.warning("answering 503 while the %s backend is away (%s): %s", backend, cause, err)
    headers = {"Retry-After": RETRY_AFTER}
    if as_json:
        return web.json_response({"error": str(err)}, status=503, headers=headers)
    return web.Response(status=503, text=f"Service unavailable: {err}\n", headers=headers)


LOG_EVERY = 600.0
_logged: dict[tuple[str, str], float] = {}  # (backend, cause) -> when last logged; causes are few, named by us


def undecodable(request: web.Request) -> str | None:
    """The first header or query parameter that holds bytes that are not UTF-8, named; None if all decode.
    (aiohttp keeps such bytes as surrogates, which no database, log or page can take.)"""
    for name, value in (*request.headers.items(), *request.query.items()):
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                return name
    return None


def crowded() -> web.Response:
    """The answer to an operator's request while the server is near its cap on open connections: the modules'
    requests, which need no more than a connection, come first."""
    return web.Response(status=503, text="Service unavailable: near the cap on open connections, modules first\n",
                        headers={"Retry-After": RETRY_AFTER})  # fmt: skip


def guarded(handler: Handler, shed: bool = True) -> Handler:
    """``handler``, answering 400 for undecodable headers and 503 while a backend is away, or (if it may
    ``shed`` load: not what modules or monitoring ask) while the server is near its cap on open connections.
    (Per route rather than a middleware: an aiohttp middleware anywhere wraps every request, the device paths'
    too.)"""

    @wraps(handler)
    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        if shed and request.config_dict[CONTEXT_KEY].crowded():
            return crowded()
        bad = undecodable(request)
        if bad is not None:
            return web.Response(status=400, text=f"Bad request: {bad} is not UTF-8\n")
        started = time.perf_counter()
        try:
            return await handler(request)
        except BACKEND_AWAY as err:
            return unavailable(err)
        finally:
            WEB_SECONDS.observe(time.perf_counter() - started)

    return guarded_handler

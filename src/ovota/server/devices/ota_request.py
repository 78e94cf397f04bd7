"""A module's request, answered top to bottom: ``GET|HEAD /firmware/ota/<product>/<tag>/ovms3.ver|ovms3.bin``.

OVMS's contract: bare HTTP/1.0 requests (Content-Length, connection closed) and HTTP/1.1 clients (keep-alive,
Range, ETag, Last-Modified). In order: read the User-Agent, apply the check-in to what this process knows of the
module's attempts, choose the build by the offer decision (``fleet.offer``; for ``.bin`` the one ``.ver`` named
to this module, while it still keeps the decision's invariants), record the check-in, answer (``.ver`` from
memory; ``.bin`` whole, by Range, conditionally, or as an esp_delta_ota patch by RFC 3229).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from aiohttp import web

from ovota.server.context import BACKEND_AWAY, client_address, guarded, unavailable
from ovota.server.devices.answers import ChannelAnswers, Missing
from ovota.server.devices.attempt_book import AttemptBook
from ovota.server.devices.blob_response import BlobResponse, SentCallback
from ovota.server.devices.blobs import OpenBlobs
from ovota.server.devices.coverage import Coverage
from ovota.server.devices.promises import Promises
from ovota.server.fleet.agent import Agent, parse_user_agent
from ovota.server.fleet.registry import FleetRecorder
from ovota.server.metrics import SECONDS, device_request
from ovota.server.store import deltas
from ovota.server.store.clock import ServerClock
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.errors import NotFound
from ovota.server.store.repository import BIN, VER, Build

DELTA_IM = "esp-delta-ota"
_FILES = {VER: "ver", BIN: "bin"}
_BASE_TAG = re.compile(r'"([0-9a-fA-F]{64})"')


def _not_found(product: str, tag: str) -> web.Response:
    return web.Response(status=404, text=f"Not found: no build published for product '{product}', tag '{tag}'\n")


def _nothing(agent: Agent | None, name: str, why: str) -> web.Response:
    """No build may be offered to this module. OVMS updates only to a newer version than it runs, so its own
    version in ``ovms3.ver`` means "nothing new"; the image itself is not found."""
    if agent is not None and name == VER:
        return web.Response(text=f"{agent.version}\n", headers={"Cache-Control": "no-cache"})
    return web.Response(status=404, text=f"Not found: no build to offer: {why}\n")


@dataclass
class DeviceFace:
    """Answers modules, from the cached channel answers (and their database threads), what .ver promised each
    module, the open blobs, the fleet registry's recorder (None with ``--no-fleet``), the server's clock, and
    what this process saw of modules' attempts and of the ranges sent to them. Its handlers take no middleware:
    they are the hot path."""

    clock: ServerClock
    answers: ChannelAnswers
    recorder: FleetRecorder | None
    promises: Promises
    blobs: OpenBlobs
    proxies: frozenset[str] = frozenset()  # load balancers whose X-Forwarded-For is trusted
    attempts: AttemptBook = field(default_factory=AttemptBook)
    coverage: Coverage = field(default_factory=Coverage)

    def add_routes(self, app: web.Application) -> None:
        """Add these routes before any other: the router tries resources in order, and these are the hot ones."""
        app.router.add_get("/firmware/ota/{product}/{tag}/{file}", self.ota_file)
        app.router.add_get("/firmware/builds/{sha256:[0-9a-f]{64}}/ovms3.bin", guarded(self.build_file, shed=False))

    async def ota_file(self, request: web.Request) -> web.StreamResponse:
        """``GET|HEAD /firmware/ota/<product>/<tag>/ovms3.ver|ovms3.bin``; 503 while a backend is away."""
        started = time.perf_counter()
        file = _FILES.get(request.match_info["file"], "other")
        try:
            response = await self._answer(request)
        except BACKEND_AWAY as err:
            response = unavailable(err)
        except web.HTTPException as err:
            device_request(file, err.status)
            raise
        if not isinstance(response, BlobResponse):  # that one counts itself once it knows its status
            device_request(file, response.status)
        SECONDS[file].observe(time.perf_counter() - started)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        product, tag, name = request.match_info["product"], request.match_info["tag"], request.match_info["file"]
        user_agent = request.headers.get("User-Agent", "")
        agent = parse_user_agent(user_agent)
        view = self.answers.lookup(product, tag)
        if isinstance(view, Missing):
            view = await self.answers.load(product, tag)
        if view is None:
            return _not_found(product, tag)
        if name not in (VER, BIN):
            raise web.HTTPNotFound(text=f"Not found: {name}\n")
        address = self.address(request)
        now = self.clock.now()
        module = None
        if agent is not None:
            key = agent.module_key(address)
            known = view.inputs.attempt(key, self.attempts.get(key))
            grace = view.inputs.grace(known.sha256) if known is not None else 0.0
            attempt = self.attempts.check_in(key, known, agent.version, now, grace)
            module = view.module(key, agent.vehicle_id, agent.product, agent.version, attempt)
        offer = view.offer(module, now)
        served = view.answer(offer)
        if name == BIN:
            promised = self.promises.promised(address, user_agent, product, tag)
            if promised is not None and view.still_keeps(promised, module):
                served = promised
        recorder = self.recorder
        if recorder is not None:
            if agent is None:
                recorder.anonymous(name)
            else:
                offered = "" if served is None else served.channel.build.sha256
                recorder.check_in(agent, product, tag, address, now, offered)
        if served is None:
            return _nothing(agent, name, offer.why)
        if name == VER:
            self.promises.promise(address, user_agent, product, tag, served)
            if served.ver_etag in request.headers.get("If-None-Match", ""):
                return web.Response(status=304, headers=served.ver_headers)
            return web.Response(body=served.ver_body, headers=served.ver_headers)
        return await self._bin(request, served.channel.build, agent, product, tag, address)

    async def _bin(self, request: web.Request, build: Build, agent: Agent | None, product: str, tag: str,
                   address: str) -> web.StreamResponse:  # fmt: skip
        """The build's image (or a delta patch to it). A download counts only once the ranges sent to the module
        cover the whole blob; then the module has received the build."""
        patch = await self._delta_for(request, build)
        blob_sha = build.sha256 if patch is None else patch.patch_sha256
        blob = await self.blobs.get(blob_sha)
        on_sent: SentCallback | None = None
        if agent is not None:
            recorder, clock, known = self.recorder, self.clock, agent
            key = agent.module_key(address)

            def on_sent(offset: int, sent: int) -> None:
                whole = self.coverage.sent(key, blob_sha, offset, sent, blob.size)
                if whole:  # a whole delta is the whole build, as far as a rollout is concerned
                    self.attempts.received(key, build.sha256, build.version, clock.now())
                if recorder is not None:
                    recorder.download(known, product, tag, address, build.sha256, sent, whole, clock.now())

        if patch is not None:
            # RFC 3229: the instance-manipulation the client accepts, applied to the base it names.
            extra = {"IM": DELTA_IM, "Vary": "A-IM, If-None-Match", "X-Delta-Base": patch.base_hash}
            return BlobResponse(blob, "no-cache", build.sha256, on_sent, 226, extra)
        return BlobResponse(blob, "no-cache", build.sha256, on_sent)

    def address(self, request: web.Request) -> str:
        """The module's address (the registry's key for a module without a vehicle id, and the pin's)."""
        return client_address(request, self.proxies)

    async def _delta_for(self, request: web.Request, build: Build) -> deltas.Delta | None:
        """The ready patch to ``build`` from the base the request names, if it asks for esp-delta-ota."""
        if DELTA_IM not in request.headers.get("A-IM", ""):
            return None
        base = _BASE_TAG.search(request.headers.get("If-None-Match", ""))
        if base is None:
            return None
        base_hash = base.group(1).lower()
        try:
            patch = await self.answers.threads.run(lambda r: deltas.ready(r.repo, base_hash, build.sha256))
        except DatabaseUnavailable:
            return None  # the whole image then, as a module without delta support gets it
        return patch if patch is not None and patch.size < build.size else None

    async def build_file(self, request: web.Request) -> web.StreamResponse:
        """``/firmware/builds/<sha256>/ovms3.bin``: a build by its content, cacheable for ever."""
        sha256 = request.match_info["sha256"]
        try:
            build = await self.answers.threads.run(lambda r: r.repo.build(sha256))
        except NotFound:
            raise web.HTTPNotFound(text=f"Not found: no build {sha256}\n") from None
        blob = await self.blobs.get(build.sha256)
        return BlobResponse(blob, "public, max-age=31536000, immutable", build.sha256, file="build")

"""A module's request, answered top to bottom: ``GET|HEAD /firmware/ota/<product>/<tag>/ovms3.ver|ovms3.bin``.

OVMS's contract: bare HTTP/1.0 requests (Content-Length, connection closed) and HTTP/1.1 clients (keep-alive,
Range, ETag, Last-Modified). In order: read the User-Agent, choose the build (the channel's, or the rollout
cohort's; for ``.bin`` the one ``.ver`` named to this module), record the check-in, answer (``.ver`` from
memory; ``.bin`` whole, by Range, conditionally, or as an esp_delta_ota patch by RFC 3229).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from aiohttp import web

from ovota.server.context import BACKEND_AWAY, client_address, guarded, unavailable
from ovota.server.devices.answers import ChannelAnswers, Missing
from ovota.server.devices.blob_response import BlobResponse, SentCallback
from ovota.server.devices.blobs import OpenBlobs
from ovota.server.devices.promises import Promises
from ovota.server.devices.views import choose
from ovota.server.fleet.agent import parse_user_agent
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


@dataclass
class DeviceFace:
    """Answers modules, from the cached channel answers (and their database threads), what .ver promised each
    module, the open blobs, the fleet registry's recorder (None with ``--no-fleet``) and the server's clock. Its
    handlers take no middleware: they are the hot path."""

    clock: ServerClock
    answers: ChannelAnswers
    recorder: FleetRecorder | None
    promises: Promises
    blobs: OpenBlobs
    proxies: frozenset[str] = frozenset()  # load balancers whose X-Forwarded-For is trusted

    def add_routes(self, app: web.Application) -> None:
        """Add these routes before any other: the router tries resources in order, and these are the hot ones."""
        app.router.add_get("/firmware/ota/{product}/{tag}/{file}", self.ota_file)
        app.router.add_get("/firmware/builds/{sha256:[0-9a-f]{64}}/ovms3.bin", guarded(self.build_file))

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
        answer = self.answers.lookup(product, tag)
        if isinstance(answer, Missing):
            answer = await self.answers.load(product, tag)
        if answer is None:
            return _not_found(product, tag)
        served = choose(answer, agent, self.clock.now())
        if name not in (VER, BIN):
            raise web.HTTPNotFound(text=f"Not found: {name}\n")
        recorder = self.recorder
        address = self.address(request)
        if recorder is not None:
            if agent is None:
                recorder.anonymous(name)
            else:
                recorder.check_in(agent, product, tag, address, self.clock.now())
        if name == VER:
            self.promises.promise(address, user_agent, product, tag, served)
            if served.ver_etag in request.headers.get("If-None-Match", ""):
                return web.Response(status=304, headers=served.ver_headers)
            return web.Response(body=served.ver_body, headers=served.ver_headers)
        served = self.promises.promised(address, user_agent, product, tag) or served
        build = served.channel.build
        clock = self.clock
        on_sent: SentCallback | None = None
        if recorder is not None and agent is not None:
            known = agent

            def on_sent(sent: int, completed: bool) -> None:
                # A whole delta is the whole build, as far as a rollout is concerned.
                recorder.download(known, product, tag, address, build.sha256, sent, completed, clock.now())

        patch = await self._delta_for(request, build)
        if patch is not None:
            # RFC 3229: the instance-manipulation the client accepts, applied to the base it names.
            extra = {"IM": DELTA_IM, "Vary": "A-IM, If-None-Match", "X-Delta-Base": patch.base_hash}
            blob = await self.blobs.get(patch.patch_sha256)
            return BlobResponse(blob, "no-cache", build.sha256, on_sent, 226, extra)
        return BlobResponse(await self.blobs.get(build.sha256), "no-cache", build.sha256, on_sent)

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

"""The update server's aiohttp application: device paths, download area, immutable build URLs, API.

Device paths follow OVMS's contract: ``/firmware/ota/<product>/<tag>/ovms3.bin`` and ``ovms3.ver``, for
bare HTTP/1.0 requests (Content-Length, connection closed) and HTTP/1.1 clients (keep-alive, Range,
ETag, Last-Modified). A device that read ``ovms3.ver`` is pinned to that build for its ``ovms3.bin``
request (keyed on address and User-Agent) so a publish in between cannot hand it another build.
Each device request is a check-in for the fleet registry; during a rollout, a module gets the build
its cohort says.
"""

from __future__ import annotations

import html
import re
from email.utils import formatdate
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ovota.server import deltas
from ovota.server.api import MAX_UPLOAD, channel_json, create_api
from ovota.server.backends import Backends
from ovota.server.blob_response import BlobResponse
from ovota.server.blobstore import BlobUnavailable
from ovota.server.clock import ServerClock
from ovota.server.database import DatabaseUnavailable
from ovota.server.deltas import Delta
from ovota.server.fleet import Agent, parse_user_agent
from ovota.server.repository import Build, NotFound, Repository, Unavailable
from ovota.server.state import BIN, REPO_KEY, STATE_KEY, VER, ServerState, background
from ovota.server.web import layout
from ovota.server.web.console import add_console_routes
from ovota.server.web.fleet_pages import add_fleet_pages

DELTA_IM = "esp-delta-ota"
_BASE_TAG = re.compile(r'"([0-9a-fA-F]{64})"')


def _not_found(product: str, tag: str) -> web.Response:
    return web.Response(status=404, text=f"Not found: no build published for product '{product}', tag '{tag}'\n")


async def device_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    product, tag, name = request.match_info["product"], request.match_info["tag"], request.match_info["file"]
    agent = parse_user_agent(request.headers.get("User-Agent", ""))
    served = state.served(product, tag, agent)
    if served is None:
        return _not_found(product, tag)
    if name not in (VER, BIN):
        raise web.HTTPNotFound(text=f"Not found: {name}\n")
    recorder = state.recorder
    address = request.remote or ""
    if recorder is not None:
        if agent is None:
            recorder.anonymous(name)
        else:
            recorder.check_in(agent, product, tag, address, state.clock.now())
    if name == VER:
        state.pin(request, product, tag, served)
        if served.ver_etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=served.ver_headers)
        return web.Response(body=served.ver_body, headers=served.ver_headers)
    served = state.pinned(request, product, tag) or served
    build = served.channel.build
    on_sent = None
    if recorder is not None and agent is not None:
        known: Agent = agent

        def on_sent(sent: int, completed: bool) -> None:
            # A whole delta is the whole build, as far as a rollout is concerned.
            recorder.download(known, product, tag, address, build.sha256, sent, completed, state.clock.now())

    patch = _delta_for(request, build)
    if patch is not None:
        # RFC 3229: the instance-manipulation the client accepts, applied to the base it names.
        extra = {"IM": DELTA_IM, "Vary": "A-IM, If-None-Match", "X-Delta-Base": patch.base_hash}
        return BlobResponse(await state.blob(patch.patch_sha256), "no-cache", build.sha256, on_sent, 226, extra)
    return BlobResponse(await state.blob(build.sha256), "no-cache", build.sha256, on_sent)


def _delta_for(request: web.Request, build: Build) -> Delta | None:
    """The ready patch to ``build`` from the base the request names, if it asks for esp-delta-ota."""
    if DELTA_IM not in request.headers.get("A-IM", ""):
        return None
    base = _BASE_TAG.search(request.headers.get("If-None-Match", ""))
    if base is None:
        return None
    try:
        patch = deltas.ready(request.app[REPO_KEY], base.group(1).lower(), build.sha256)
    except DatabaseUnavailable:
        return None  # the whole image then, as a module without delta support gets it
    return patch if patch is not None and patch.size < build.size else None


async def build_file(request: web.Request) -> web.StreamResponse:
    repo = request.app[REPO_KEY]
    sha256 = request.match_info["sha256"]
    try:
        build = repo.build(sha256)
    except NotFound:
        raise web.HTTPNotFound(text=f"Not found: no build {sha256}\n") from None
    blob = await request.app[STATE_KEY].blob(build.sha256)
    return BlobResponse(blob, "public, max-age=31536000, immutable", build.sha256)


# -- download area --------------------------------------------------------------------------------------


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _page(title: str, crumbs: list[tuple[str, str]], head: list[str], rows: list[list[str]]) -> web.Response:
    nav = " / ".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in crumbs)
    header = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    table = f'<div class="table"><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>'
    text = layout.page(
        title, table, nav=f'<nav class="crumbs" aria-label="Breadcrumb">{nav}</nav>', script="/static/listing.js"
    )
    return web.Response(text=text, content_type="text/html")


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


async def listing(request: web.Request) -> web.Response:
    repo = request.app[REPO_KEY]
    product = request.match_info.get("product")
    tag = request.match_info.get("tag")
    base = f"{request.scheme}://{request.host}"
    channels = [c for c in repo.channels() if product in (None, c.product) and tag in (None, c.tag)]
    if (product or tag) and not channels:
        return _not_found(product or "", tag or "")
    if _wants_json(request):
        return web.json_response(
            [
                channel_json(c, base, repo.security(c.build.sha256), deltas.for_target(repo, c.build.sha256))
                for c in channels
            ]
        )
    crumbs = [("firmware/ota", "/firmware/ota/")]
    if product is None:
        products = sorted({c.product for c in channels})
        rows = [[_link(f"/firmware/ota/{p}/", p + "/"), ", ".join(c.tag for c in channels if c.product == p)]
                for p in products]  # fmt: skip
        return _page("Firmware products", crumbs, ["Product", "Channels"], rows)
    crumbs.append((product, f"/firmware/ota/{product}/"))
    if tag is None:
        rows = [
            [_link(f"/firmware/ota/{product}/{c.tag}/", c.tag + "/"), html.escape(c.build.version),
             html.escape(formatdate(c.updated, usegmt=True))]
            for c in channels
        ]  # fmt: skip
        return _page(f"Product {product}", crumbs, ["Channel", "Version", "Updated"], rows)
    crumbs.append((tag, f"/firmware/ota/{product}/{tag}/"))
    c = channels[0]
    updated = html.escape(formatdate(c.updated, usegmt=True))
    bin_url = f"/firmware/ota/{product}/{tag}/{BIN}"
    copy = f'<button type="button" class="copy" data-url="{html.escape(bin_url)}">Copy URL</button>'
    security = repo.security(c.build.sha256)
    signers = "".join(f"<code>{d}</code> " for d in security.signers) or "unsigned"
    rows = [
        [_link(bin_url, BIN) + copy, str(c.build.size), html.escape(c.build.version), updated,
         f"<code>{c.build.sha256}</code>", str(security.secure_version), signers],
        [_link(f"/firmware/ota/{product}/{tag}/{VER}", VER), str(len(c.ver_file)), html.escape(c.build.version),
         updated, "", "", ""],
    ]  # fmt: skip
    head = ["File", "Size", "Version", "Updated", "SHA-256", "Secure version", "Signed by"]
    return _page(f"{product} / {tag}", crumbs, head, rows)


# -- API --------------------------------------------------------------------------------------------------
async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/firmware/ota/")


def _clock_json(state: ServerState) -> web.Response:
    clock = state.clock
    return web.json_response({"now": clock.now(), "scale": clock.scale, "driven": clock.driven})


async def clock_now(request: web.Request) -> web.Response:
    """The server's clock, for fleet simulations (``--time-scale``, ``--driven-clock``)."""
    return _clock_json(request.app[STATE_KEY])


async def clock_advance(request: web.Request) -> web.Response:
    """Move a driven clock to ``{"to": seconds}``: the registry is flushed first and rollouts are evaluated
    at the new time before the answer, so a simulator's next tick sees every decision."""
    state = request.app[STATE_KEY]
    if not state.clock.driven:
        raise web.HTTPForbidden(text="the clock is not driven (start the server with --driven-clock)\n")
    try:
        when = float((await request.json())["to"])
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text='expected {"to": <seconds since the epoch>}\n') from None
    await state.advance_clock(when)
    return _clock_json(state)


RETRY_AFTER = "5"


@web.middleware
async def unavailable_as_503(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A backend that is away (PostgreSQL restarting, the object store unreachable) is a 503 with Retry-After,
    never a 500; nothing was half-written (every write is one transaction after the blob is stored)."""
    try:
        return await handler(request)
    except (DatabaseUnavailable, BlobUnavailable, Unavailable) as err:
        headers = {"Retry-After": RETRY_AFTER}
        if request.path.startswith("/api/"):
            return web.json_response({"error": str(err)}, status=503, headers=headers)
        return web.Response(status=503, text=f"Service unavailable: {err}\n", headers=headers)


def _forwarded(proxies: frozenset[str]) -> Middleware:
    @web.middleware
    async def from_forwarded_for(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Behind a load balancer every request comes from it: the module's address (the registry's key for a
        # module without a vehicle id, and the ver/bin pin) is the one the proxy appended, trusted only from it.
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded and request.remote in proxies:
            request = request.clone(remote=forwarded.rsplit(",", 1)[-1].strip())
        return await handler(request)

    return from_forwarded_for


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
    middlewares: list[Middleware] = [unavailable_as_503]
    if forwarded_by:
        middlewares.append(_forwarded(frozenset(forwarded_by)))
    app = web.Application(client_max_size=MAX_UPLOAD, middlewares=middlewares)
    app[REPO_KEY] = repo
    app[STATE_KEY] = ServerState(repo, clock or repo.clock(), fleet, delta_bases)
    # The router tries resources in order: the device path, the hot one, goes first.
    app.router.add_get("/firmware/ota/{product}/{tag}/{file}", device_file)
    app.router.add_get("/", root)
    app.router.add_get("/firmware/ota/", listing)
    app.router.add_get("/firmware/ota/{product}/", listing)
    app.router.add_get("/firmware/ota/{product}/{tag}/", listing)
    app.router.add_get("/firmware/builds/{sha256:[0-9a-f]{64}}/ovms3.bin", build_file)
    app.router.add_get("/clock", clock_now)
    app.router.add_post("/clock", clock_advance)
    app.add_subapp("/api/v1", create_api(repo, app))
    add_console_routes(app, repo, app[STATE_KEY].invalidate)
    add_fleet_pages(app)
    app.router.add_static("/static", Path(__file__).parent / "web" / "static")

    async def close_repo(app: web.Application) -> None:
        app[STATE_KEY].close()
        repo.close()

    app.cleanup_ctx.append(background)
    app.on_cleanup.append(close_repo)
    return app

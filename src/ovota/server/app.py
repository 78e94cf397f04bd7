"""The update server's aiohttp application: device paths, download area, immutable build URLs, API.

Device paths follow OVMS's contract: ``/firmware/ota/<product>/<tag>/ovms3.bin`` and ``ovms3.ver``, for
bare HTTP/1.0 requests (Content-Length, connection closed) and HTTP/1.1 clients (keep-alive, Range,
ETag, Last-Modified). A device that read ``ovms3.ver`` is pinned to that build for its ``ovms3.bin``
request (keyed on address and User-Agent) so a publish in between cannot hand it another build.
"""

from __future__ import annotations

import html
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from multidict import CIMultiDict, CIMultiDictProxy

from ovota.server.blob_response import BlobResponse, OpenBlob
from ovota.server.repository import NAME, Channel, NotFound, Repository, RepositoryError
from ovota.server.web import layout
from ovota.server.web.console import add_console_routes

PIN_SECONDS = 15 * 60
RECHECK_SECONDS = 0.05
MAX_PINS = 100_000
MAX_UPLOAD = 16 * 1024 * 1024
BIN, VER = "ovms3.bin", "ovms3.ver"

REPO_KEY = web.AppKey("repo", Repository)


@dataclass(frozen=True)
class Served:
    """What the device paths serve for one channel, prepared once per change."""

    channel: Channel
    ver_body: bytes
    ver_etag: str
    ver_headers: CIMultiDictProxy[str]  # built once: header construction is a large part of a .ver request


class ServerState:
    """Caches channel lookups until the repository changes, and remembers device pins."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._version = -1
        self._next_check = 0.0
        self._blobs: dict[str, OpenBlob] = {}
        self._served: dict[tuple[str, str], Served | None] = {}
        self._pins: OrderedDict[tuple[str, str, str, str], tuple[float, Served]] = OrderedDict()

    def invalidate(self) -> None:
        self._served.clear()

    def served(self, product: str, tag: str) -> Served | None:
        now = time.monotonic()
        if now >= self._next_check:
            # Another process (the CLI, another worker) may have published: look at most every 50 ms.
            self._next_check = now + RECHECK_SECONDS
            version = self.repo.data_version()
            if version != self._version:
                self._served.clear()
                self._version = version
        key = (product, tag)
        if key not in self._served:
            self._served[key] = self._load(product, tag)
        return self._served[key]

    def _load(self, product: str, tag: str) -> Served | None:
        if not (NAME.match(product) and NAME.match(tag)):
            return None
        try:
            channel = self.repo.channel(product, tag)
        except NotFound:
            return None
        etag = f'"{channel.build.sha256[:32]}-ver"'
        headers = CIMultiDict(
            {
                "Content-Type": "text/plain; charset=utf-8",
                "ETag": etag,
                "Last-Modified": formatdate(channel.updated, usegmt=True),
                "Cache-Control": "no-cache",
            }
        )
        return Served(channel, channel.ver_file, etag, CIMultiDictProxy(headers))

    def blob(self, sha256: str) -> OpenBlob:
        """The build's blob, opened once: blobs are immutable, so the descriptor stays valid."""
        blob = self._blobs.get(sha256)
        if blob is None:
            blob = self._blobs[sha256] = OpenBlob.open(self.repo.blob_path(sha256), sha256)
        return blob

    def close(self) -> None:
        for blob in self._blobs.values():
            blob.file.close()
        self._blobs.clear()

    def pin(self, request: web.Request, product: str, tag: str, served: Served) -> None:
        key = (request.remote or "", request.headers.get("User-Agent", ""), product, tag)
        self._pins[key] = (time.monotonic(), served)
        self._pins.move_to_end(key)
        while len(self._pins) > MAX_PINS:
            self._pins.popitem(last=False)

    def pinned(self, request: web.Request, product: str, tag: str) -> Served | None:
        key = (request.remote or "", request.headers.get("User-Agent", ""), product, tag)
        entry = self._pins.get(key)
        if entry is None or time.monotonic() - entry[0] > PIN_SECONDS:
            return None
        return entry[1]


STATE_KEY = web.AppKey("state", ServerState)


def _not_found(product: str, tag: str) -> web.Response:
    return web.Response(status=404, text=f"Not found: no build published for product '{product}', tag '{tag}'\n")


async def device_file(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    product, tag, name = request.match_info["product"], request.match_info["tag"], request.match_info["file"]
    served = state.served(product, tag)
    if served is None:
        return _not_found(product, tag)
    if name == VER:
        state.pin(request, product, tag, served)
        if served.ver_etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=served.ver_headers)
        return web.Response(body=served.ver_body, headers=served.ver_headers)
    if name == BIN:
        served = state.pinned(request, product, tag) or served
        sha256 = served.channel.build.sha256
        return BlobResponse(state.blob(sha256), "no-cache", sha256)
    raise web.HTTPNotFound(text=f"Not found: {name}\n")


async def build_file(request: web.Request) -> web.StreamResponse:
    repo = request.app[REPO_KEY]
    sha256 = request.match_info["sha256"]
    try:
        build = repo.build(sha256)
    except NotFound:
        raise web.HTTPNotFound(text=f"Not found: no build {sha256}\n") from None
    blob = request.app[STATE_KEY].blob(build.sha256)
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


def _channel_json(channel: Channel, base: str) -> dict[str, Any]:
    build = channel.build
    return {
        "product": channel.product,
        "tag": channel.tag,
        "version": build.version,
        "size": build.size,
        "sha256": build.sha256,
        "updated": formatdate(channel.updated, usegmt=True),
        "url": f"{base}/firmware/ota/{channel.product}/{channel.tag}/{BIN}",
        "immutable_url": f"{base}/firmware/builds/{build.sha256}/{BIN}",
    }


async def listing(request: web.Request) -> web.Response:
    repo = request.app[REPO_KEY]
    product = request.match_info.get("product")
    tag = request.match_info.get("tag")
    base = f"{request.scheme}://{request.host}"
    channels = [c for c in repo.channels() if product in (None, c.product) and tag in (None, c.tag)]
    if (product or tag) and not channels:
        return _not_found(product or "", tag or "")
    if _wants_json(request):
        return web.json_response([_channel_json(c, base) for c in channels])
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
    rows = [
        [_link(bin_url, BIN) + copy, str(c.build.size), html.escape(c.build.version), updated,
         f"<code>{c.build.sha256}</code>"],
        [_link(f"/firmware/ota/{product}/{tag}/{VER}", VER), str(len(c.ver_file)), html.escape(c.build.version),
         updated, ""],
    ]  # fmt: skip
    return _page(f"{product} / {tag}", crumbs, ["File", "Size", "Version", "Updated", "SHA-256"], rows)


# -- API --------------------------------------------------------------------------------------------------


def _api_error(status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="ovota"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def api_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    auth = request.headers.get("Authorization", "")
    token = auth[7:] if auth.startswith("Bearer ") else ""
    if not token or request.app[REPO_KEY].token_name(token) is None:
        return _api_error(401, "missing or invalid API token")
    try:
        response: web.StreamResponse = await handler(request)
    except NotFound as err:
        return _api_error(404, str(err))
    except RepositoryError as err:
        return _api_error(400, str(err))
    return response


async def api_channels(request: web.Request) -> web.Response:
    base = f"{request.scheme}://{request.host}"
    return web.json_response([_channel_json(c, base) for c in request.app[REPO_KEY].channels()])


async def api_publish(request: web.Request) -> web.Response:
    """Raw image body with ?tag=&product=&changelog=, or multipart fields image, tag, product, changelog."""
    fields: dict[str, str] = dict(request.query)
    data = b""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "image":
                data = await part.read()
            else:
                fields[part.name] = (await part.read()).decode("utf-8", "replace")
    else:
        data = await request.read()
    if not fields.get("tag"):
        raise RepositoryError("missing tag")
    channel = request.app[REPO_KEY].publish(
        data, fields["tag"], fields.get("product") or None, fields.get("changelog", "")
    )
    request.app[STATE_KEY].invalidate()
    return web.json_response(_channel_json(channel, f"{request.scheme}://{request.host}"), status=201)


async def _json_body(request: web.Request, *keys: str) -> list[str]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise RepositoryError("request body must be JSON") from None
    if not isinstance(body, dict) or any(not isinstance(body.get(k), str) for k in keys):
        raise RepositoryError(f"JSON body must have string fields: {', '.join(keys)}")
    return [body[k] for k in keys]


async def api_promote(request: web.Request) -> web.Response:
    product, source, target = await _json_body(request, "product", "from", "to")
    channel = request.app[REPO_KEY].promote(product, source, target)
    request.app[STATE_KEY].invalidate()
    return web.json_response(_channel_json(channel, f"{request.scheme}://{request.host}"))


async def api_rollback(request: web.Request) -> web.Response:
    product, tag = await _json_body(request, "product", "tag")
    channel = request.app[REPO_KEY].rollback(product, tag)
    request.app[STATE_KEY].invalidate()
    return web.json_response(_channel_json(channel, f"{request.scheme}://{request.host}"))


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/firmware/ota/")


def create_app(repo_root: Path) -> web.Application:
    repo = Repository(repo_root)
    app = web.Application(client_max_size=MAX_UPLOAD)
    app[REPO_KEY] = repo
    app[STATE_KEY] = ServerState(repo)
    api = web.Application(middlewares=[api_auth], client_max_size=MAX_UPLOAD)
    api[REPO_KEY] = repo
    api[STATE_KEY] = app[STATE_KEY]
    api.router.add_get("/channels", api_channels)
    api.router.add_post("/publish", api_publish)
    api.router.add_post("/promote", api_promote)
    api.router.add_post("/rollback", api_rollback)
    # The router tries resources in order: the device path, the hot one, goes first.
    app.router.add_get("/firmware/ota/{product}/{tag}/{file}", device_file)
    app.router.add_get("/", root)
    app.router.add_get("/firmware/ota/", listing)
    app.router.add_get("/firmware/ota/{product}/", listing)
    app.router.add_get("/firmware/ota/{product}/{tag}/", listing)
    app.router.add_get("/firmware/builds/{sha256:[0-9a-f]{64}}/ovms3.bin", build_file)
    app.add_subapp("/api/v1", api)
    add_console_routes(app, repo, app[STATE_KEY].invalidate)
    app.router.add_static("/static", Path(__file__).parent / "web" / "static")

    async def close_repo(app: web.Application) -> None:
        app[STATE_KEY].close()
        repo.close()

    app.on_cleanup.append(close_repo)
    return app

"""The download area: ``/firmware/ota/``, ``/<product>/`` and ``/<product>/<tag>/`` as HTML listings (size,
version, date, SHA-256, signers), or as JSON with ``Accept: application/json``."""

from __future__ import annotations

import html
from email.utils import formatdate

from aiohttp import web

from ovota.server.api.releases import channel_json
from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.store import deltas
from ovota.server.store.channels import channel_order
from ovota.server.store.deltas import Delta
from ovota.server.store.repository import BIN, VER, Channel
from ovota.server.store.trust import BuildSecurity
from ovota.server.web import layout
from ovota.server.web.text import size

Listed = tuple[Channel, BuildSecurity, list[Delta]]  # a channel, its build's signers, patches to it


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _page(title: str, crumbs: list[tuple[str, str]], head: list[str], rows: list[list[str]],
          after: str = "") -> web.Response:  # fmt: skip
    nav = " / ".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in crumbs)
    header = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    table = f'<div class="table"><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>{after}'
    text = layout.page(
        title, table, nav=f'<nav class="crumbs" aria-label="Breadcrumb">{nav}</nav>', script="/static/listing.js"
    )
    return web.Response(text=text, content_type="text/html")


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def _not_found(product: str, tag: str) -> web.Response:
    return web.Response(status=404, text=f"Not found: no build published for product '{product}', tag '{tag}'\n")


async def listing(request: web.Request) -> web.Response:
    context = request.app[CONTEXT_KEY]
    product = request.match_info.get("product")
    tag = request.match_info.get("tag")
    as_json = _wants_json(request)

    def read(desk: Desk) -> list[Listed]:
        repo = desk.repo
        channels = sorted((c for c in repo.channels() if product in (None, c.product) and tag in (None, c.tag)),
                          key=lambda c: channel_order(c.product, c.tag))  # fmt: skip
        return [(c, repo.security(c.build.sha256), deltas.for_target(repo, c.build.sha256) if as_json else [])
                for c in channels]  # fmt: skip

    listed = await context.run(read)
    if (product or tag) and not listed:
        return _not_found(product or "", tag or "")
    if as_json:
        return web.json_response([channel_json(c, context.public_url, sec, patches) for c, sec, patches in listed])
    return _html(product, tag, listed)


def _html(product: str | None, tag: str | None, listed: list[Listed]) -> web.Response:
    channels = [c for c, _, _ in listed]
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
    security = listed[0][1]
    signers = "".join(f"<code>{d}</code> " for d in security.signers) or "unsigned"
    rows = [
        [_link(bin_url, BIN) + copy, f"{size(c.build.size)} ({c.build.size} bytes)", html.escape(c.build.version),
         updated,
         f"<code>{c.build.sha256}</code>", str(security.secure_version), signers],
        [_link(f"/firmware/ota/{product}/{tag}/{VER}", VER), str(len(c.ver_file)), html.escape(c.build.version),
         updated, "", "", ""],
    ]  # fmt: skip
    head = ["File", "Size", "Version", "Updated", "SHA-256", "Secure version", "Signed by"]
    changelog = c.build.changelog.strip()
    notes = f"<h2>Changelog</h2><pre>{html.escape(changelog)}</pre>" if changelog else ""
    return _page(f"{product} / {tag}", crumbs, head, rows, notes)


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/firmware/ota/")


def add_listing_routes(app: web.Application) -> None:
    app.router.add_get("/", guarded(root))
    app.router.add_get("/firmware/ota/", guarded(listing))
    app.router.add_get("/firmware/ota/{product}/", guarded(listing))
    app.router.add_get("/firmware/ota/{product}/{tag}/", guarded(listing))

"""The release console's Channels page: publish, promote and roll back per product (log in: ``login``).

Every action goes through the same Repository calls as the CLI and the API, in a database thread.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from aiohttp import web

from ovota.server.api.releases import read_upload
from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import Channel, publish_on_own_connection
from ovota.server.web.layout import page
from ovota.server.web.login import add_login_routes, read_form, require_user
from ovota.server.web.rollout_banner import console_nav, halt_banner

CHANNEL_ORDER = ("edge", "eap", "main")
History = list[tuple[str, str, str, float]]  # (sha256, version, action, time), newest first
PROMOTIONS = (("edge", "eap"), ("eap", "main"))


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _product_section(product: str, channels: dict[str, tuple[Channel, History]]) -> str:
    rows = []
    for tag in sorted(channels, key=lambda t: (CHANNEL_ORDER.index(t) if t in CHANNEL_ORDER else 9, t)):
        c, history = channels[tag]
        items = "".join(
            f"<li>{escape(version)} <small>{escape(action)}, {_when(at)}</small></li>"
            for _, version, action, at in history
        )
        rollback = (
            f'<form method="post" action="/console/rollback" data-confirm="Roll back {escape(product)}/{escape(tag)} '
            f'to its previous build?"><input type="hidden" name="product" value="{escape(product)}">'
            f'<input type="hidden" name="tag" value="{escape(tag)}">'
            f'<button type="submit" class="secondary">Roll back {escape(tag)}</button></form>'
        )
        rows.append(
            f'<tr id="channel-{escape(product)}-{escape(tag)}"><th scope="row">{escape(tag)}</th>'
            f'<td class="version">{escape(c.build.version)}</td><td>{c.build.size}</td><td>{_when(c.updated)}</td>'
            f"<td><code>{c.build.sha256[:16]}</code></td><td><details><summary>History</summary><ul>{items}</ul>"
            f"</details></td><td>{rollback}</td></tr>"
        )
    promotions = "".join(
        f'<form method="post" action="/console/promote" data-confirm="Promote {escape(product)} {src} to {dst}?">'
        f'<input type="hidden" name="product" value="{escape(product)}"><input type="hidden" name="from" value="{src}">'
        f'<input type="hidden" name="to" value="{dst}"><button type="submit">Promote {src} → {dst}</button></form>'
        for src, dst in PROMOTIONS
        if src in channels
    )
    anchor = f"product-{escape(product)}"
    return f"""<section aria-labelledby="{anchor}"><h2 id="{anchor}">{escape(product)}</h2>
<div class="table"><table><thead><tr><th>Channel</th><th>Version</th><th>Size</th><th>Updated</th><th>SHA-256</th>
<th>History</th><th>Rollback</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>
<div class="actions">{promotions}</div></section>"""


def _read_channels(desk: Desk) -> tuple[dict[str, dict[str, tuple[Channel, History]]], str]:
    products: dict[str, dict[str, tuple[Channel, History]]] = {}
    for c in desk.repo.channels():
        products.setdefault(c.product, {})[c.tag] = (c, desk.repo.history(c.product, c.tag)[:6])
    return products, halt_banner(desk.rollouts)


async def console(request: web.Request) -> web.Response:
    user = await require_user(request)
    products, banner = await request.app[CONTEXT_KEY].run(_read_channels)
    notice = ""
    if "error" in request.query:
        notice = f'<p class="error" role="alert">{escape(request.query["error"])}</p>'
    elif "ok" in request.query:
        notice = f'<p class="ok" role="status">{escape(request.query["ok"])}</p>'
    sections = "".join(_product_section(p, products[p]) for p in sorted(products))
    body = f"""{console_nav(user)}{banner}{notice}
<section aria-labelledby="publish-title"><h2 id="publish-title">Publish a build</h2>
<form id="publish" method="post" action="/console/publish" enctype="multipart/form-data">
<label for="image">Firmware image (ovms3.bin)</label><input type="file" id="image" name="image" required>
<label for="tag">Channel</label><select id="tag" name="tag"><option>edge</option><option>eap</option>
<option>main</option></select>
<label for="product">Product (empty: derived from the version)</label>
<input type="text" id="product" name="product" placeholder="v3.3-5">
<label for="changelog">Changelog</label><textarea id="changelog" name="changelog" rows="4"></textarea>
<button type="submit">Publish</button>
<progress id="upload-progress" max="100" value="0" hidden aria-label="Upload progress"></progress>
<span id="upload-percent"></span><p id="publish-message" role="status"></p></form></section>
{sections or "<p>No builds published yet.</p>"}"""
    return web.Response(text=page("Release console", body, script="/static/console.js"), content_type="text/html")


def _back(ok: str = "", error: str = "") -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/console?{'error=' + quote(error) if error else 'ok=' + quote(ok)}")


async def promote(request: web.Request) -> web.Response:
    await require_user(request)
    form = await read_form(request)
    product, source, target = form.get("product", ""), form.get("from", ""), form.get("to", "")
    try:
        channel = await request.app[CONTEXT_KEY].run(lambda desk: desk.repo.promote(product, source, target))
    except RepositoryError as err:
        raise _back(error=str(err)) from None
    _changed(request)
    raise _back(ok=f"Promoted {channel.build.version} from {source} to {channel.product}/{channel.tag}.")


async def rollback(request: web.Request) -> web.Response:
    await require_user(request)
    form = await read_form(request)
    product, tag = form.get("product", ""), form.get("tag", "")
    try:
        channel = await request.app[CONTEXT_KEY].run(lambda desk: desk.repo.rollback(product, tag))
    except RepositoryError as err:
        raise _back(error=str(err)) from None
    _changed(request)
    raise _back(ok=f"Rolled back {channel.product}/{channel.tag} to {channel.build.version}.")


async def publish(request: web.Request) -> web.Response:
    """Multipart upload from the publish form (sent by XMLHttpRequest for its progress events)."""
    await require_user(request)
    context = request.app[CONTEXT_KEY]
    try:
        data, fields = await read_upload(request)
        channel = await asyncio.to_thread(
            publish_on_own_connection, context.threads.backends, data, fields.get("tag", ""),
            fields.get("product", "").strip() or None, fields.get("changelog", ""), context.threads.busy_timeout,
        )  # fmt: skip
    except RepositoryError as err:
        return web.json_response({"ok": False, "error": str(err)}, status=400)
    _changed(request)
    return web.json_response(
        {"ok": True, "message": f"Published {channel.build.version} to {channel.product}/{channel.tag}."}
    )


def _changed(request: web.Request) -> None:
    request.app[CONTEXT_KEY].changed()


def add_console_routes(app: web.Application) -> None:
    add_login_routes(app)
    app.router.add_get("/console", guarded(console))
    app.router.add_post("/console/publish", guarded(publish))
    app.router.add_post("/console/promote", guarded(promote))
    app.router.add_post("/console/rollback", guarded(rollback))

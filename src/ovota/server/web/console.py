"""The release console: log in with an API token, then publish, promote and roll back per product.

Sessions are random ids in an HttpOnly, SameSite=Strict cookie, held in server memory (a restart logs
everyone out). Every action goes through the same Repository calls as the CLI and the API.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from ovota.server.context import CONTEXT_KEY, guarded
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import Channel, Repository, publish_on_own_connection
from ovota.server.web.layout import page
from ovota.server.web.rollout_banner import console_nav, halt_banner

COOKIE = "ovota_session"
SESSION_SECONDS = 12 * 3600
CHANNEL_ORDER = ("edge", "eap", "main")
PROMOTIONS = (("edge", "eap"), ("eap", "main"))


class Sessions:
    def __init__(self) -> None:
        self._sessions: dict[str, tuple[str, float]] = {}

    def create(self, name: str) -> str:
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (name, time.monotonic() + SESSION_SECONDS)
        return session

    def user(self, request: web.Request) -> str | None:
        entry = self._sessions.get(request.cookies.get(COOKIE, ""))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def end(self, request: web.Request) -> None:
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)


SESSIONS_KEY = web.AppKey("sessions", Sessions)


def _login_page(error: str = "", status: int = 200) -> web.Response:
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = f"""<section><h2>Log in</h2>{message}
<form method="post" action="/console/login">
<label for="token">API token</label>
<input type="password" id="token" name="token" autocomplete="current-password" required>
<button type="submit">Log in</button></form>
<p class="hint">Create a token with <code>ovota token create --repo REPO --name you</code>.</p></section>"""
    return web.Response(text=page("Release console", body), content_type="text/html", status=status)


async def login_form(request: web.Request) -> web.Response:
    return _login_page()


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    name = request.app[CONTEXT_KEY].repo.token_name(str(form.get("token", "")).strip())
    if name is None:
        return _login_page("Invalid token.", status=401)
    response = web.HTTPSeeOther("/console")
    response.set_cookie(
        COOKIE, request.app[SESSIONS_KEY].create(name), httponly=True, samesite="Strict", path="/console"
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS_KEY].end(request)
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(COOKIE, path="/console")
    raise response


def require_user(request: web.Request) -> str:
    """The logged-in user; a redirect to the login page otherwise, and cross-site POSTs are refused."""
    user = request.app[SESSIONS_KEY].user(request)
    if user is None:
        raise web.HTTPSeeOther("/console/login")
    origin = request.headers.get("Origin")
    if request.method == "POST" and origin and origin.split("://", 1)[-1] != request.host:
        raise web.HTTPForbidden(text="Cross-site request refused\n")
    return user


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _product_section(repo: Repository, product: str, channels: dict[str, Channel]) -> str:
    rows = []
    for tag in sorted(channels, key=lambda t: (CHANNEL_ORDER.index(t) if t in CHANNEL_ORDER else 9, t)):
        c = channels[tag]
        history = repo.history(product, tag)[:6]
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


async def console(request: web.Request) -> web.Response:
    user = require_user(request)
    repo = request.app[CONTEXT_KEY].repo
    products: dict[str, dict[str, Channel]] = {}
    for c in repo.channels():
        products.setdefault(c.product, {})[c.tag] = c
    notice = ""
    if "error" in request.query:
        notice = f'<p class="error" role="alert">{escape(request.query["error"])}</p>'
    elif "ok" in request.query:
        notice = f'<p class="ok" role="status">{escape(request.query["ok"])}</p>'
    sections = "".join(_product_section(repo, p, products[p]) for p in sorted(products))
    body = f"""{console_nav(user)}{halt_banner(request.app[CONTEXT_KEY].rollouts)}{notice}
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
    require_user(request)
    form = await request.post()
    source = str(form.get("from", ""))
    try:
        channel = request.app[CONTEXT_KEY].repo.promote(str(form.get("product", "")), source, str(form.get("to", "")))
    except RepositoryError as err:
        raise _back(error=str(err)) from None
    _changed(request)
    raise _back(ok=f"Promoted {channel.build.version} from {source} to {channel.product}/{channel.tag}.")


async def rollback(request: web.Request) -> web.Response:
    require_user(request)
    form = await request.post()
    try:
        channel = request.app[CONTEXT_KEY].repo.rollback(str(form.get("product", "")), str(form.get("tag", "")))
    except RepositoryError as err:
        raise _back(error=str(err)) from None
    _changed(request)
    raise _back(ok=f"Rolled back {channel.product}/{channel.tag} to {channel.build.version}.")


async def publish(request: web.Request) -> web.Response:
    """Multipart upload from the publish form (sent by XMLHttpRequest for its progress events)."""
    require_user(request)
    fields: dict[str, Any] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.name:
            fields[part.name] = await part.read() if part.name == "image" else (await part.text())
    try:
        channel = await asyncio.to_thread(
            publish_on_own_connection, request.app[CONTEXT_KEY].repo.backends,
            fields.get("image", b""), str(fields.get("tag", "")), str(fields.get("product", "")).strip() or None,
            str(fields.get("changelog", "")),
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
    app[SESSIONS_KEY] = Sessions()
    app.router.add_get("/console/login", guarded(login_form))
    app.router.add_post("/console/login", guarded(login))
    app.router.add_get("/console/logout", guarded(logout))
    app.router.add_get("/console", guarded(console))
    app.router.add_post("/console/publish", guarded(publish))
    app.router.add_post("/console/promote", guarded(promote))
    app.router.add_post("/console/rollback", guarded(rollback))

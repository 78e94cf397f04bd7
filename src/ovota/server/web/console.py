"""The release console's Channels page: publish, promote and roll back per product (log in: ``login``).

Every action goes through the same Repository calls as the CLI and the API, in a database thread.
"""

from __future__ import annotations

import asyncio
from html import escape
from urllib.parse import quote

from aiohttp import web

from ovota.server.api.releases import read_upload
from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.fleet.rollouts import Rollout
from ovota.server.store import channels
from ovota.server.store.channels import HistoryEntry, channel_order
from ovota.server.store.errors import RepositoryError, RolloutInTheWay, StorageFull
from ovota.server.store.product_rules import STANDARD_CHANNELS
from ovota.server.store.repository import Channel, publish_on_own_connection
from ovota.server.web.frame import console_page
from ovota.server.web.login import Operator, add_login_routes, read_form, require_user
from ovota.server.web.text import size, when

History = list[HistoryEntry]  # newest first
PROMOTIONS = (("edge", "eap"), ("eap", "main"))


def _rollout_cell(rollout: Rollout | None) -> str:
    if rollout is None:
        return "—"
    return (f'<a href="/console/rollouts#rollout-{rollout.id}">Rollout {rollout.id}</a> to '
            f"{escape(rollout.to_build.version)}: {rollout.state.value}, step {rollout.step + 1} of "
            f"{len(rollout.settings.steps)} ({rollout.percent}%)")  # fmt: skip


def _product_section(product: str, moves: dict[str, tuple[Channel, History]], operator: Operator,
                     rollouts: dict[tuple[str, str], Rollout]) -> str:  # fmt: skip
    rows = []
    release = operator.may("release")
    for tag in sorted(moves, key=lambda t: channel_order(product, t)):
        c, history = moves[tag]
        items = "".join(
            f"<li>{escape(m.version)} <small>{escape(m.action)} by {escape(m.actor or 'unknown')}, {when(m.at)}"
            "</small></li>"
            for m in history
        )
        changelog = (f"<details><summary>Changelog</summary><pre>{escape(c.build.changelog)}</pre></details>"
                     if c.build.changelog.strip() else "")  # fmt: skip
        rollback = (
            f'<form method="post" action="/console/rollback" data-confirm="Roll back {escape(product)}/{escape(tag)} '
            f'to its previous build?"><input type="hidden" name="product" value="{escape(product)}">'
            f'<input type="hidden" name="tag" value="{escape(tag)}">'
            f'<button type="submit" class="secondary">Roll back {escape(tag)}</button></form>'
            if release else ""
        )  # fmt: skip
        rows.append(
            f'<tr id="channel-{escape(product)}-{escape(tag)}"><th scope="row">{escape(tag)}</th>'
            f'<td class="version" data-label="Version">{escape(c.build.version)}{changelog}</td>'
            f'<td class="rollout" data-label="Rollout">{_rollout_cell(rollouts.get((product, tag)))}</td>'
            f'<td title="{c.build.size} bytes" data-label="Size">{size(c.build.size)}</td>'
            f'<td data-label="Updated">{when(c.updated)}</td><td data-label="SHA-256"><code>{c.build.sha256[:16]}'
            f"</code></td><td><details><summary>History</summary><ul>{items}</ul></details></td><td>{rollback}</td>"
            "</tr>"
        )
    promotions = "".join(
        f'<form method="post" action="/console/promote" data-confirm="Promote {escape(product)} {src} to {dst}?">'
        f'<input type="hidden" name="product" value="{escape(product)}"><input type="hidden" name="from" value="{src}">'
        f'<input type="hidden" name="to" value="{dst}"><button type="submit">Promote {src} → {dst}</button></form>'
        for src, dst in PROMOTIONS
        if src in moves and release
    )
    anchor = f"product-{escape(product)}"
    return f"""<section aria-labelledby="{anchor}"><h2 id="{anchor}">{escape(product)}</h2>
<div class="table"><table class="cards"><thead><tr><th>Channel</th><th>Version</th><th>Rollout</th><th>Size</th>
<th>Updated</th>
<th>SHA-256</th>
<th>History</th><th>{"Rollback" if release else ""}</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>
<div class="actions">{promotions}</div></section>"""


def _read_channels(desk: Desk) -> tuple[dict[str, dict[str, tuple[Channel, History]]], dict[tuple[str, str], Rollout]]:
    products: dict[str, dict[str, tuple[Channel, History]]] = {}
    for c in desk.repo.channels():
        products.setdefault(c.product, {})[c.tag] = (c, channels.history(desk.repo.db, c.product, c.tag)[:6])
    return products, {(r.product, r.tag): r for r in desk.rollouts.all_active()}


def publish_form(tags: set[str]) -> str:
    """The publish form: any channel the repository has, or a new one when the box is ticked."""
    known = "".join(f'<option value="{escape(t)}">' for t in sorted(tags | set(STANDARD_CHANNELS)))
    return PUBLISH_FORM.replace("<!--channels-->", known)


PUBLISH_FORM = """<section aria-labelledby="publish-title"><h2 id="publish-title">Publish a build</h2>
<form id="publish" method="post" action="/console/publish" enctype="multipart/form-data">
<label for="image">Firmware image (ovms3.bin)</label><input type="file" id="image" name="image" required>
<label for="tag">Channel</label><input type="text" id="tag" name="tag" list="channel-names" value="edge" required>
<datalist id="channel-names"><!--channels--></datalist>
<label class="check"><input type="checkbox" name="new_channel" value="yes"> Create it if it is new (otherwise
only main, eap, edge and existing tags are accepted: a typo makes nothing)</label>
<label for="product">Product (empty: derived from the version)</label>
<input type="text" id="product" name="product" placeholder="v3.3-5">
<label for="changelog">Changelog</label><textarea id="changelog" name="changelog" rows="4"></textarea>
<button type="submit">Publish</button>
<progress id="upload-progress" max="100" value="0" hidden aria-label="Upload progress"></progress>
<span id="upload-percent"></span><p id="publish-message" role="status"></p></form></section>"""


async def console(request: web.Request) -> web.Response:
    operator = await require_user(request)
    products, rollouts = await request.app[CONTEXT_KEY].run(_read_channels)
    sections = "".join(_product_section(p, products[p], operator, rollouts) for p in sorted(products))
    form = publish_form({t for tags in products.values() for t in tags}) if operator.may("release") else ""
    body = f"""{form}
{sections or "<p>No builds published yet.</p>"}"""
    return await console_page(request, operator, "Release console", body)


def _refused(err: RepositoryError) -> str:
    if isinstance(err, RolloutInTheWay):  # the console has no force: say what to do here instead
        return (f"{err.channel} has a {err.state} rollout (id {err.rollout}): finish or abort it on the Rollouts "
                "page first")  # fmt: skip
    return str(err)


def _back(ok: str = "", error: str = "") -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"/console?{'error=' + quote(error) if error else 'ok=' + quote(ok)}")


async def promote(request: web.Request) -> web.Response:
    operator = await require_user(request, "release")
    form = await read_form(request)
    product, source, target = form.get("product", ""), form.get("from", ""), form.get("to", "")
    new = form.get("new_channel", "") == "yes"
    run = request.app[CONTEXT_KEY].run
    try:
        channel = await run(lambda desk: desk.repo.promote(product, source, target, new_channel=new), operator.name)
    except RepositoryError as err:
        raise _back(error=_refused(err)) from None
    _changed(request)
    raise _back(ok=f"Promoted {channel.build.version} from {source} to {channel.product}/{channel.tag}.")


async def rollback(request: web.Request) -> web.Response:
    operator = await require_user(request, "release")
    form = await read_form(request)
    product, tag = form.get("product", ""), form.get("tag", "")
    try:
        channel = await request.app[CONTEXT_KEY].run(lambda desk: desk.repo.rollback(product, tag), operator.name)
    except RepositoryError as err:
        raise _back(error=_refused(err)) from None
    _changed(request)
    raise _back(ok=f"Rolled back {channel.product}/{channel.tag} to {channel.build.version}.")


async def publish(request: web.Request) -> web.Response:
    """Multipart upload from the publish form (sent by XMLHttpRequest for its progress events)."""
    operator = await require_user(request, "release")
    context = request.app[CONTEXT_KEY]
    try:
        data, fields = await read_upload(request)
        channel = await asyncio.to_thread(
            publish_on_own_connection, context.threads.backends, data, fields.get("tag", ""),
            fields.get("product", "").strip() or None, fields.get("changelog", ""), context.threads.busy_timeout,
            operator.name, False, fields.get("new_channel", "") == "yes",
        )  # fmt: skip
    except RepositoryError as err:
        return web.json_response({"ok": False, "error": str(err)}, status=507 if isinstance(err, StorageFull) else 400)
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

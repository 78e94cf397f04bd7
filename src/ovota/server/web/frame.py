"""The frame of every console page: who is logged in and the console's pages, the banner of halted rollouts
(kept live), the message an action came back with, then the page's own content. One place, so no page can
forget the banner."""

from __future__ import annotations

from html import escape

from aiohttp import web

from ovota.server.context import CONTEXT_KEY
from ovota.server.web.layout import page
from ovota.server.web.login import Operator, console_nav
from ovota.server.web.rollout_banner import halt_banner
from ovota.server.web.text import notice


async def console_page(
    request: web.Request, operator: Operator, title: str, body: str, status: int = 200, url: str = ""
) -> web.Response:
    """``body`` in the console's frame, as an HTML response; ``url``: the page's own address when it answers a
    refused form's POST (the browser then shows it, reloads it and refreshes its live parts from it)."""
    banner = await request.app[CONTEXT_KEY].run(lambda desk: halt_banner(desk.rollouts))
    here = "/console/fleet" if request.path.startswith("/console/fleet/") else request.path  # a module's page
    canonical = f'<div id="page-url" data-url="{escape(url)}" hidden></div>' if url else ""
    framed = f'{console_nav(operator, here)}{canonical}<div id="banner" data-live>{banner}</div>{notice(request)}{body}'
    return web.Response(text=page(title, framed, script="/static/console.js"), content_type="text/html",
                        status=status)  # fmt: skip

"""Logging in to the release console with an API token, and what every console page checks first.

Sessions live in the repository's database (every server process of a cluster knows them) as an HttpOnly,
SameSite=Strict cookie, Secure under HTTPS; a session ends when it expires, on logout, or when its token is
revoked. Failed logins are throttled per address, like failed API calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import NoReturn
from urllib.parse import quote

from aiohttp import web

from ovota.server.api.body_rate import minimum_rate
from ovota.server.context import CONTEXT_KEY, Desk, guarded
from ovota.server.store.errors import RepositoryError
from ovota.server.store.sessions import SESSION_SECONDS, end_session, session_user, start_session
from ovota.server.store.tokens import allows, authenticate
from ovota.server.web.layout import page

COOKIE = "ovota_session"


def _login_page(error: str = "", status: int = 200, headers: dict[str, str] | None = None,
                back: str = "") -> web.Response:  # fmt: skip
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    target = f'<input type="hidden" name="next" value="{escape(back)}">' if back else ""
    body = f"""<section><h2>Log in</h2>{message}
<form method="post" action="/console/login">{target}
<label for="token">API token</label>
<input type="password" id="token" name="token" autocomplete="current-password" required>
<button type="submit">Log in</button></form>
<p class="hint">Create a token with <code>ovota token create --repo REPO --name you</code>.</p></section>"""
    text = page("Release console", body)
    return web.Response(text=text, content_type="text/html", status=status, headers=headers)


async def read_form(request: web.Request, rate: bool = True) -> dict[str, str]:
    """An urlencoded or multipart form's text fields, arriving at ``body_rate.MIN_RATE`` at least (with ``rate``;
    the login form has a deadline of its own instead); 400 for a body that is not a form of UTF-8 text."""
    try:
        async with minimum_rate(request) if rate else contextlib.nullcontext():
            form = await request.post()
    except (UnicodeDecodeError, ValueError, LookupError, AssertionError):
        raise web.HTTPBadRequest(text="Bad request: the form is malformed or not UTF-8\n") from None
    return {key: value for key, value in form.items() if isinstance(value, str)}


def console_target(text: str) -> str:
    """Where to go after logging in: a console page of this site (a shared link, a filtered view), else the
    Channels page. Anything else (another site, a scheme, a path outside the console) is dropped: no open
    redirect."""
    if re.fullmatch(r"/console(?:[/?][!-~]*)?", text) and not any(bad in text for bad in ("//", "\\", "#")):
        return "/console" if text.startswith("/console/login") else text
    return "/console"


async def login_form(request: web.Request) -> web.Response:
    back = console_target(request.query.get("next", ""))
    return _login_page(back="" if back == "/console" else back)


def refuse_cross_site(request: web.Request) -> None:
    """403 for a POST whose Origin is another site (a foreign page submitting a console form, the login form
    included: it could log a browser into an attacker's session)."""
    origin = request.headers.get("Origin")
    if request.method == "POST" and origin and origin.split("://", 1)[-1] != request.host:
        raise web.HTTPForbidden(text="Cross-site request refused\n")


LOGIN_BODY = 4096  # bytes: a token is 32 characters


async def login(request: web.Request) -> web.Response:
    """The login form, posted by anyone: its body is small (LOGIN_BODY) and must arrive within the idle timeout
    (a client that trickles it, or stops, would hold its connection for ever)."""
    refuse_cross_site(request)
    context = request.app[CONTEXT_KEY]
    address = context.address(request)
    wait = context.throttle.retry_after(address)
    if wait:
        return _login_page("Too many failed logins: try again later.", 429, {"Retry-After": str(wait)})
    if request.content_length is None or request.content_length > LOGIN_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=LOGIN_BODY, actual_size=request.content_length or 0)
    try:
        form = await asyncio.wait_for(read_form(request, rate=False), context.body_seconds)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the request body did not arrive within {context.body_seconds:g} s\n",
                                     headers={"Connection": "close"}) from None  # fmt: skip
    token = form.get("token", "").strip()
    back = console_target(form.get("next", ""))
    record = await context.run(lambda desk: authenticate(desk.repo.db, token))
    if record is None:
        context.throttle.failed(address)
        return _login_page("Invalid token.", status=401, back="" if back == "/console" else back)
    secret = await context.run(lambda desk: start_session(desk.repo.db, record.id))
    response = web.HTTPSeeOther(back)
    response.set_cookie(COOKIE, secret, max_age=SESSION_SECONDS, httponly=True, samesite="Strict", path="/console",
                        secure=context.tls)  # fmt: skip
    raise response


async def logout(request: web.Request) -> web.Response:
    secret = request.cookies.get(COOKIE, "")
    await request.app[CONTEXT_KEY].run(lambda desk: end_session(desk.repo.db, secret))
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(COOKIE, path="/console")
    raise response


@dataclass(frozen=True)
class Operator:
    """Who is logged in: the token's name and role."""

    name: str
    role: str

    def may(self, needed: str) -> bool:
        return allows(self.role, needed)


async def require_user(request: web.Request, role: str = "read") -> Operator:
    """The logged-in operator, whose role must allow ``role``: a redirect to the login page without a session,
    403 for a role that does not allow it; cross-site POSTs are refused."""
    refuse_cross_site(request)
    secret = request.cookies.get(COOKIE, "")
    found = await request.app[CONTEXT_KEY].run(lambda desk: session_user(desk.repo.db, secret)) if secret else None
    if found is None:
        wanted = request.path_qs if request.method == "GET" and request.path_qs != "/console" else ""
        raise web.HTTPSeeOther("/console/login" + (f"?next={quote(wanted, safe='')}" if wanted else ""))
    operator = Operator(*found)
    if not operator.may(role):
        raise web.HTTPForbidden(text=f"Forbidden: {operator.name} has the role {operator.role}: this needs {role}\n")
    return operator


async def act(request: web.Request, operator: Operator, change: Callable[[Desk], str], back: str) -> NoReturn:
    """Make a console form's change in a database thread as ``operator``, then send the browser ``back`` with the
    change's message, or the one-line reason it was refused (nothing changed then)."""
    context = request.app[CONTEXT_KEY]
    try:
        message = await context.run(change, operator.name)
    except RepositoryError as err:
        raise web.HTTPSeeOther(f"{back}?error={quote(str(err))}") from None
    context.changed()
    raise web.HTTPSeeOther(f"{back}?ok={quote(message)}")


NAV = (("/console", "Channels"), ("/console/fleet", "Fleet"), ("/console/rollouts", "Rollouts"),
       ("/console/targeting", "Targeting"), ("/console/audit", "Audit"))  # fmt: skip


def console_nav(operator: Operator, here: str = "") -> str:
    """Who is logged in, and the console's pages (the one at path ``here`` marked current)."""
    links = " · ".join(
        f'<a href="{path}" aria-current="page">{label}</a>' if here == path else f'<a href="{path}">{label}</a>'
        for path, label in NAV
    )
    return (f'<p class="who">Logged in as {escape(operator.name)} ({escape(operator.role)}) · {links} · '
            '<a href="/console/logout">Log out</a></p>')  # fmt: skip


def add_login_routes(app: web.Application) -> None:
    app.router.add_get("/console/login", guarded(login_form))
    app.router.add_post("/console/login", guarded(login))
    app.router.add_get("/console/logout", guarded(logout))

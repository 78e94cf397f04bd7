"""The module's web server: the OVMS Firmware page (/cfg/firmware, /api/execute; see cfg.py) and a JSON API
for scripts (/api/firmware/...).

Every action runs the same console code as the OVMS# shell, in the console's worker thread, one at a time
(OVMS's flashing mutex). Settings write the same config params as ``config set``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from ovota.device import fetch
from ovota.device.console.exclusive import BUSY
from ovota.device.console.flashing import flash_file
from ovota.device.console.shell import Shell
from ovota.device.images import partition_version
from ovota.device.module import Module
from ovota.device.web import forms
from ovota.device.web.cfg import execute, firmware_page, firmware_post
from ovota.device.web.forms import FieldError
from ovota.device.web.jobs import CONSOLE_KEY, Console
from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.versions import buildverscmp

MAX_UPLOAD = 16 * 1024 * 1024
MAX_PARTS = 8
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _status(m: Module) -> dict[str, object]:
    boot = m.boot_partition
    return {
        "firmware": m.firmware_metric,
        "running": m.running.name,
        "boot": boot.name if boot else "",
        "images": {p.name: partition_version(m.flash, p) for p in [m.layout.factory, *m.layout.ota_slots] if p},
        "partition_type": m.layout.type.value,
    }


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


async def save_settings(request: web.Request) -> web.Response:
    """auto_enable, auto_hour, auto_allow_modem, server, tag (as the Setup form, without the boot choice)."""
    console = request.app[CONSOLE_KEY]
    try:
        changes = forms.settings(await forms.read_form(request))
    except FieldError as err:
        return _error(str(err), err.status)
    if console.busy():
        return _error(BUSY, 409)
    await console.call(lambda: console.module.config.update(changes))
    return web.json_response({"ok": True, "message": "Settings saved."})


async def update_check(request: web.Request) -> web.Response:
    m = request.app[CONSOLE_KEY].module
    server = await fetch.fetch_version(m.server_url("ovms3.ver"), m.user_agent, m.http_timeout)
    if server is None:
        return web.json_response({"ok": False, "error": "The update server could not be reached."})
    newer = buildverscmp(server.version, m.firmware_metric) > 0
    return web.json_response({"ok": True, "version": server.version, "newer": newer, "changelog": server.changelog})


async def flash(request: web.Request) -> web.Response:
    """mode=server (``ota flash http``), mode=url with url=… or mode=vfs with path=…"""
    console = request.app[CONSOLE_KEY]
    try:
        fields = await forms.read_form(request)
        mode = fields.get("mode", "")
        if mode == "server":
            title, line = "Update now", "ota flash http"
        elif mode == "url":
            url = forms.flash_url(fields.get("url", ""))
            if not url:
                raise FieldError("HTTP URL is empty: use mode=server for the update server's firmware.")
            title, line = "Flash from URL", f"ota flash http {url}"
        elif mode == "vfs":
            title, line = "Flash from file", f"ota flash vfs {forms.vfs_path(fields.get('path', ''))}"
        else:
            raise FieldError(f"Unknown flash mode {forms.shown(mode)}: use server, url or vfs.")
    except FieldError as err:
        return _error(str(err), err.status)
    if console.busy():
        return _error(BUSY, 409)
    job = console.run(line, title)
    return web.json_response({"ok": True, "job": job.title})


async def _read_upload(request: web.Request) -> tuple[str, bytes]:
    """The first file part of a multipart upload, at most MAX_UPLOAD bytes, its name made safe."""
    if request.content_length is not None and request.content_length > MAX_UPLOAD + forms.MAX_FORM:
        raise FieldError(f"Upload of {request.content_length} bytes refused: at most {MAX_UPLOAD}.", 413)
    try:
        reader = await request.multipart()
        for _ in range(MAX_PARTS):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise FieldError("Nested multipart is not accepted.")
            limit = MAX_UPLOAD if part.filename else forms.MAX_FORM
            data = bytearray()
            while chunk := await part.read_chunk(65536):
                data += chunk
                if len(data) > limit:
                    raise FieldError(f"Upload part over {limit} bytes refused.", 413)
            if part.filename:
                name = _UNSAFE_NAME.sub("_", Path(part.filename).name)[:100].lstrip(".") or "upload.bin"
                return name, bytes(data)
    except FieldError:
        raise
    except Exception as err:  # malformed multipart: the client's fault, whatever aiohttp raised for it
        raise FieldError(f"Malformed upload: {forms.shown(str(err), 80)}.") from None
    raise FieldError("No firmware file received.")


async def upload(request: web.Request) -> web.Response:
    """Flash from file (emulator addition): the upload is checked to be a valid image before anything is erased."""
    console = request.app[CONSOLE_KEY]
    if console.busy():
        return _error(BUSY, 409)
    try:
        name, data = await _read_upload(request)
    except FieldError as err:
        return _error(str(err), err.status)
    try:
        problem = AppImage.parse(data).verify().first_failure()
    except FormatError as err:
        problem = str(err)
    if problem:
        return _error(f"{name} is not a valid firmware image: {problem}.")
    if console.busy():
        return _error(BUSY, 409)
    folder = Path(tempfile.mkdtemp(prefix="ovota-upload-"))
    path = folder / name
    path.write_bytes(data)

    def action(shell: Shell) -> bool:
        try:
            return flash_file(shell, path, f"upload {name}")
        finally:
            path.unlink(missing_ok=True)
            folder.rmdir()

    job = console.start("Flash from file", action)
    return web.json_response({"ok": True, "job": job.title})


async def boot(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    try:
        choice = forms.partition((await forms.read_form(request)).get("partition", ""), console.labels, "Partition")
    except FieldError as err:
        return _error(str(err), err.status)
    if console.busy():
        return _error(BUSY, 409)
    console.run(f"ota boot {choice}", f"Boot from {choice}")
    return web.json_response({"ok": True})


async def reboot(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    if console.busy():
        return _error(BUSY, 409)
    console.run("module reset", "Reboot")
    return web.json_response({"ok": True})


async def job_status(request: web.Request) -> web.Response:
    console = request.app[CONSOLE_KEY]
    job = console.job
    payload: dict[str, object] = {"status": _status(console.module)}
    if job is not None:
        payload["job"] = {
            "title": job.title,
            "percent": job.percent,
            "done": job.done,
            "ok": job.ok,
            "lines": job.lines,
        }
    return web.json_response(payload)


def _cross_site(request: web.Request) -> bool:
    """Whether a browser sent this request from another site's page: a form or script there must not change
    the module's update server or flash it. Clients that are not browsers send no Origin and pass."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    return urlsplit(source).netloc != request.host


@web.middleware
async def same_origin_posts(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD", "OPTIONS") and _cross_site(request):
        return web.Response(status=403, text="Cross-site request refused\n")
    return await handler(request)


def create_module_app(module: Module) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD, middlewares=[same_origin_posts])
    console = Console(module)
    app[CONSOLE_KEY] = console
    app.router.add_get("/", _redirect)
    app.router.add_get("/cfg/firmware", firmware_page)
    app.router.add_post("/cfg/firmware", firmware_post)
    app.router.add_post("/api/execute", execute)
    app.router.add_post("/api/firmware/settings", save_settings)
    app.router.add_get("/api/firmware/updatecheck", update_check)
    app.router.add_post("/api/firmware/flash", flash)
    app.router.add_post("/api/firmware/upload", upload)
    app.router.add_post("/api/firmware/boot", boot)
    app.router.add_post("/api/firmware/reboot", reboot)
    app.router.add_get("/api/firmware/status", job_status)
    app.router.add_static("/static", Path(__file__).with_name("static"))

    async def keep_alive(app: web.Application) -> AsyncIterator[None]:
        """The module lives between requests: its timers run and a finished update reboots it, in the console's
        worker thread, between jobs."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(1.0)
                await console.call(console.shell.idle)

        heart = asyncio.create_task(beat())
        yield
        heart.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heart
        console.close()

    app.cleanup_ctx.append(keep_alive)
    return app


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/cfg/firmware")

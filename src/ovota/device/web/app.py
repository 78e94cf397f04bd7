"""The module's web Firmware page (OVMS /cfg/firmware): status, update settings, flashing, boot selection.

Every action runs the same console code as the OVMS# shell, in a worker thread, one at a time (OVMS's
flashing mutex); the page polls the job for its progress. Settings write the same config params as
``config set``.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from ovota.device import fetch
from ovota.device.console.flashing import flash_file
from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.images import partition_version
from ovota.device.module import DEFAULT_SERVER, Module
from ovota.device.web.page import render_firmware_page
from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.versions import buildverscmp

MAX_UPLOAD = 16 * 1024 * 1024
_PROGRESS = re.compile(r"^Downloading\.\.\. (\d+)%")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_URL = re.compile(r"(https?://)?[A-Za-z0-9.-]+(:\d{1,5})?/\S*")


@dataclass
class Job:
    """One flash or boot action and what it printed."""

    title: str
    lines: list[str] = field(default_factory=list)
    percent: int = 0
    done: bool = False
    ok: bool = False


class _JobStream:
    """The console writer's stream for a job: keeps lines and the latest progress percentage."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.job.lines.append(line)
            match = _PROGRESS.match(line)
            if match:
                self.job.percent = int(match.group(1))
        return len(text)

    def flush(self) -> None:
        pass


class FirmwareWeb:
    def __init__(self, module: Module) -> None:
        self.module = module
        self.shell = Shell(module, Writer(_JobStream(Job("boot"))))
        self.job: Job | None = None
        self.lock = threading.Lock()

    def busy(self) -> bool:
        return self.job is not None and not self.job.done

    def start(self, title: str, action: Callable[[Shell], object]) -> Job:
        """Run ``action(shell)`` in a thread; the caller checked that no job is running."""
        job = Job(title)
        self.job = job
        self.shell.out = Writer(_JobStream(job))

        def run() -> None:
            with self.lock:
                try:
                    result = action(self.shell)
                    job.ok = bool(result) if result is not None else self.shell.out.errors == 0
                finally:
                    if job.ok and any(line.startswith("OTA flash was successful") for line in job.lines):
                        job.percent = 100
                    job.done = True

        threading.Thread(target=run, daemon=True).start()
        return job


WEB_KEY = web.AppKey("firmware_web", FirmwareWeb)


def _status(web_state: FirmwareWeb) -> dict[str, object]:
    m = web_state.module
    boot = m.boot_partition
    return {
        "firmware": m.firmware_metric,
        "running": m.running.name,
        "boot": boot.name if boot else "",
        "images": {
            p.name: partition_version(m.flash, p) for p in [m.layout.factory, *m.layout.ota_slots] if p is not None
        },
        "partition_type": m.layout.type.value,
    }


async def page(request: web.Request) -> web.Response:
    state = request.app[WEB_KEY]
    m = state.module
    return web.Response(
        text=render_firmware_page(
            status=_status(state),
            config={
                "auto": m.config.get_bool("auto", "ota", True),
                "hour": m.config.get_int("ota", "auto.hour", 2),
                "modem": m.config.get_bool("ota", "auto.allow.modem", False),
                "server": m.config.get("ota", "server"),
                "tag": m.config.get("ota", "tag"),
                "http_mru": m.config.get("ota", "http.mru"),
            },
            boot_choices=[p.name for p in [m.layout.factory, *m.layout.ota_slots] if p is not None],
            default_server=DEFAULT_SERVER,
        ),
        content_type="text/html",
    )


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


async def save_settings(request: web.Request) -> web.Response:
    """The setup form: auto update, hour, modem, server and version tag; one config commit."""
    state = request.app[WEB_KEY]
    form = await request.post()
    hour_text = str(form.get("auto_hour", "")).strip()
    if not hour_text.isdigit() or not 0 <= int(hour_text) <= 23:
        return _error(f"Auto update hour must be a whole number from 0 to 23, not {hour_text!r}.")
    tag = str(form.get("tag", "")).strip()
    if tag and not _TAG.fullmatch(tag):
        return _error(f"Version tag {tag!r} is invalid: use letters, digits, '.', '_' and '-'.")
    server = str(form.get("server", "")).strip().rstrip("/")
    if server and not _URL.fullmatch(server + "/"):
        return _error(f"Server {server!r} is not a valid URL.")
    if state.busy():
        return _error("Flash operation already in progress", 409)
    state.module.config.update(
        {
            ("auto", "ota"): "yes" if form.get("auto_enable") else "no",
            ("ota", "auto.hour"): str(int(hour_text)),
            ("ota", "auto.allow.modem"): "yes" if form.get("auto_allow_modem") else "no",
            ("ota", "server"): server or None,
            ("ota", "tag"): tag or None,
        }
    )
    return web.json_response({"ok": True, "message": "Settings saved."})


async def update_check(request: web.Request) -> web.Response:
    m = request.app[WEB_KEY].module
    server = await fetch.fetch_version(m.server_url("ovms3.ver"), m.user_agent, m.http_timeout)
    if server is None:
        return web.json_response({"ok": False, "error": "The update server could not be reached."})
    newer = buildverscmp(server.version, m.firmware_metric) > 0
    return web.json_response({"ok": True, "version": server.version, "newer": newer, "changelog": server.changelog})


async def flash(request: web.Request) -> web.Response:
    state = request.app[WEB_KEY]
    if state.busy():
        return _error("Flash operation already in progress - cannot flash again", 409)
    form = await request.post()
    mode = form.get("mode")
    if mode == "server":
        job = state.start("Update now", lambda shell: shell.execute("ota flash http"))
    elif mode == "url":
        url = str(form.get("url", "")).strip()
        if not _URL.fullmatch(url):
            return _error(f"{url!r} is not a firmware URL: use http(s)://host[:port]/path/ovms3.bin.")
        job = state.start("Flash from URL", lambda shell: shell.execute(f"ota flash http {url}"))
    else:
        return _error("Unknown flash mode.")
    return web.json_response({"ok": True, "job": job.title})


async def upload(request: web.Request) -> web.Response:
    """Flash from file: the upload is checked to be a valid image before anything is erased."""
    state = request.app[WEB_KEY]
    if state.busy():
        return _error("Flash operation already in progress - cannot flash again", 409)
    reader = await request.multipart()
    data = b""
    name = "upload.bin"
    while (part := await reader.next()) is not None:
        if isinstance(part, BodyPartReader) and part.filename:
            data = await part.read()
            name = Path(part.filename).name
            break
    if not data:
        return _error("No firmware file received.")
    try:
        problem = AppImage.parse(data).verify().first_failure()
    except FormatError as err:
        problem = str(err)
    if problem:
        return _error(f"{name} is not a valid firmware image: {problem}.")
    folder = tempfile.mkdtemp(prefix="ovota-upload-")
    path = Path(folder) / name
    path.write_bytes(data)

    def action(shell: Shell) -> bool:
        try:
            return flash_file(shell, path, f"upload {name}")
        finally:
            path.unlink(missing_ok=True)
            Path(folder).rmdir()

    state.start("Flash from file", action)
    return web.json_response({"ok": True, "job": "Flash from file"})


async def boot(request: web.Request) -> web.Response:
    state = request.app[WEB_KEY]
    form = await request.post()
    choice = str(form.get("partition", ""))
    if choice not in {p.name for p in [state.module.layout.factory, *state.module.layout.ota_slots] if p}:
        return _error(f"Unknown boot partition {choice!r}.")
    if state.busy():
        return _error("Flash operation already in progress", 409)
    state.start(f"Boot from {choice}", lambda shell: shell.execute(f"ota boot {choice}"))
    return web.json_response({"ok": True})


async def reboot(request: web.Request) -> web.Response:
    state = request.app[WEB_KEY]
    if state.busy():
        return _error("Flash operation already in progress", 409)
    state.start("Reboot", lambda shell: shell.execute("module reset"))
    return web.json_response({"ok": True})


async def job_status(request: web.Request) -> web.Response:
    state = request.app[WEB_KEY]
    job = state.job
    payload: dict[str, object] = {"status": _status(state)}
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
    app[WEB_KEY] = FirmwareWeb(module)
    app.router.add_get("/", _redirect)
    app.router.add_get("/cfg/firmware", page)
    app.router.add_post("/api/firmware/settings", save_settings)
    app.router.add_get("/api/firmware/updatecheck", update_check)
    app.router.add_post("/api/firmware/flash", flash)
    app.router.add_post("/api/firmware/upload", upload)
    app.router.add_post("/api/firmware/boot", boot)
    app.router.add_post("/api/firmware/reboot", reboot)
    app.router.add_get("/api/firmware/status", job_status)
    app.router.add_static("/static", Path(__file__).with_name("static"))
    return app


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/cfg/firmware")

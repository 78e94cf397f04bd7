"""``/cfg/firmware`` (the page and its Setup form) and ``/api/execute`` (the console commands the page runs),
as OVMS 3.3.006's web server answers them (``HandleCfgFirmware``, ``HandleCommand``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from ovota.device import fetch
from ovota.device.console.exclusive import BUSY
from ovota.device.console.shell import Shell
from ovota.device.images import partition_version
from ovota.device.module import Module
from ovota.device.web import forms
from ovota.device.web.forms import FieldError
from ovota.device.web.jobs import CONSOLE_KEY, LOG_LINE, Console
from ovota.device.web.page import Alert, FormValues, PageInfo, render_firmware_page, render_reboot

STREAM_POLL = 0.1  # seconds between chunks of a command's streamed output
MAX_SD_FILES = 100


def _sd_files(sd_dir: Path | None) -> list[str]:
    """The datalist of the File path field: /sd/ files named *.bin* or *.done* (OVMS's strstr test)."""
    if sd_dir is None:
        return []
    try:
        names = sorted(p.name for p in sd_dir.iterdir() if p.is_file() and (".bin" in p.name or ".done" in p.name))
    except OSError:
        return []
    return [f"/sd/{name}" for name in names[:MAX_SD_FILES]]


async def page_info(m: Module) -> PageInfo:
    """OvmsOTA::GetStatus as the 3.3.006 page calls it: with the server check, if any network is up."""
    server = None
    if m.network.any:
        server = await fetch.fetch_version(m.server_url("ovms3.ver"), m.user_agent, m.http_timeout)
    boot = m.boot_partition
    return PageInfo(
        firmware=m.firmware_metric,
        running=m.running.name,
        boot=boot.name if boot else "",
        images={p.name: partition_version(m.flash, p) for p in [m.layout.factory, *m.layout.ota_slots] if p},
        hardware=m.product,
        server_version=server.version if server else "",
        changelog=server.changelog if server else "",
        http_mru=m.config.get("ota", "http.mru"),
        vfs_mru=m.config.get("ota", "vfs.mru"),
        sd_files=_sd_files(m.sd_dir),
        modem_only=m.network.modem and not m.network.wifi,
    )


def config_values(m: Module) -> FormValues:
    return FormValues(
        auto_enable=m.config.get_bool("auto", "ota", True),
        auto_hour=m.config.get("ota", "auto.hour", "2"),
        auto_allow_modem=m.config.get_bool("ota", "auto.allow.modem", False),
        server=m.config.get("ota", "server"),
        tag=m.config.get("ota", "tag"),
    )


def posted_values(fields: Mapping[str, str]) -> FormValues:
    """A refused form shows again what was posted (cut to each field's limit), as OVMS shows the posted form."""
    limits = forms.LIMITS
    return FormValues(
        auto_enable=fields.get("auto_enable") == "yes",
        auto_hour=fields.get("auto_hour", "")[: limits["auto_hour"]],
        auto_allow_modem=fields.get("auto_allow_modem") == "yes",
        server=fields.get("server", "")[: limits["server"]],
        tag=fields.get("tag", "")[: limits["tag"]],
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def _page(
    console: Console, alert: Alert | None = None, status: int = 200, form: FormValues | None = None
) -> web.Response:
    info = await page_info(console.module)
    return _html(render_firmware_page(info, form or config_values(console.module), alert), status)


async def firmware_page(request: web.Request) -> web.Response:
    return await _page(request.app[CONSOLE_KEY])


async def firmware_post(request: web.Request) -> web.Response:
    """The Setup form: ``set`` / ``set-reboot`` (boot partition, then the settings) and ``reboot``.

    As on OVMS: a changed boot selection runs ``ota boot``, and an ``Error:`` in its output answers 400
    "Error!" with nothing saved; any other action is 400 "Unknown action.". Unlike OVMS, every field is
    checked first (a bad one answers 400 with its reason and changes nothing), and nothing runs while a flash
    does (409)."""
    console = request.app[CONSOLE_KEY]
    try:
        fields = await forms.read_form(request)
    except FieldError as err:
        return await _page(console, Alert(False, [str(err)]), err.status)
    action = fields.get("action", "")
    if action == "reboot":
        if console.busy():
            return await _page(console, Alert(False, [BUSY]), 409)
        return _html(render_reboot(Alert(True)))
    if action not in ("set", "set-reboot"):
        return await _page(console, Alert(False, ["Unknown action."]), 400)
    try:
        setup = forms.Setup.parse(fields, console.labels)
    except FieldError as err:
        return await _page(console, Alert(False, [str(err)]), err.status, posted_values(fields))
    if console.busy():
        return await _page(console, Alert(False, [BUSY]), 409, posted_values(fields))

    def apply(shell: Shell) -> bool:
        if setup.boot != setup.boot_old:
            shell.execute(f"ota boot {setup.boot}")
            if console.job is not None and any("Error:" in line for line in console.job.output):
                return False
        shell.module.config.update(setup.changes)
        return True

    job = console.start("Set", apply)
    await console.wait()
    output = "\n".join(job.output)
    if not job.ok:
        return await _page(console, Alert(False, output=output), 400, posted_values(fields))
    lines = [] if setup.boot != setup.boot_old else ["Boot partition unchanged."]
    if action == "set-reboot":
        return _html(render_reboot(Alert(True, lines, output)))
    return await _page(console, Alert(True, lines, output))


async def execute(request: web.Request) -> web.StreamResponse:
    """POST ``command=<line>``: run one of the page's console commands, streaming its output as it prints.

    Only the commands the Firmware page runs are accepted (see forms.command), one at a time: while another
    runs the answer is 409 with OVMS's "already in progress" line. A client that goes away does not stop the
    command (it runs to the end, as on the module)."""
    console = request.app[CONSOLE_KEY]
    try:
        fields = await forms.read_form(request)
        line = forms.command(fields.get("command", ""), console.labels)
    except FieldError as err:
        return web.Response(status=err.status, text=f"{err}\n")
    if console.busy():
        return web.Response(status=409, text=f"{BUSY}\n")
    job = console.run(line)
    response = web.StreamResponse(
        headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"},
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    try:
        while True:
            done = job.done  # read first: every line is in place once done is set
            new = job.lines[sent:]
            sent += len(new)
            shown = [line for line in new if not LOG_LINE.match(line)]
            if shown:
                await response.write(("\n".join(shown) + "\n").encode())
            if done:
                break
            await asyncio.sleep(STREAM_POLL)
        await response.write_eof()
    except ConnectionError:
        pass  # the browser left; the command goes on
    return response

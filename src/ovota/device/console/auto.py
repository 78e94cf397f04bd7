"""Automatic updates: OvmsOTA::Ticker600 and the AutoFlash task's body, logging like OVMS (log tag ``ota``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

from ovota.device import fetch
from ovota.device.console import resume
from ovota.device.console.delta import DELTA_IM, Broken, delta_base, delta_target, flash_delta, resume_headers
from ovota.device.console.flashing import too_small
from ovota.device.console.session import Session
from ovota.device.module import Module
from ovota.device.ota import EspError, OtaUpdate, next_update_partition, set_boot_partition
from ovota.formats.partition_table import Partition
from ovota.formats.posix_tz import parse_tz
from ovota.formats.versions import buildverscmp

RESTART_DELAY = timedelta(seconds=5)
TICK_SECONDS = 600  # OVMS's ticker.600: every 600 s of uptime, not aligned to the clock
_ATOI = re.compile(r"\s*[+-]?[0-9]+")


def local_time(m: Module, utc: datetime | None = None) -> datetime:
    """localtime_r of ``utc`` (default: now) under ``vehicle timezone`` (a POSIX TZ string; empty is UTC)."""
    return parse_tz(m.config.get("vehicle", "timezone")).local(m.clock.now if utc is None else utc)


def atoi(text: str) -> int:
    """C's atoi: the leading whole number, 0 when there is none."""
    match = _ATOI.match(text)
    return int(match.group(0)) if match else 0


def run_due_ticks(session: Session) -> None:
    """The ticks that fell due while real time passed (between commands, or during ``sleep``), each at the time
    it fell due."""
    clock = session.module.clock
    while clock.uptime >= session.next_tick:
        due = clock.now - timedelta(seconds=clock.uptime - session.next_tick)
        session.next_tick += TICK_SECONDS
        ticker600(session, due)


def advance(session: Session, delta: timedelta) -> None:
    """Move the clock forward, running the 10-minute ticker at every tick passed. The clock does not run ahead
    of an AutoFlash task: each tick waits for the task it started, and for the reboot that follows it."""
    clock = session.module.clock
    session.settle()
    remaining = delta.total_seconds()
    while True:
        to_tick = max(session.next_tick - clock.uptime, 0.0)
        if to_tick > remaining:
            clock.advance(timedelta(seconds=remaining))
            return
        clock.advance(timedelta(seconds=to_tick))
        remaining -= to_tick
        run_due_ticks(session)
        session.settle()


def ticker600(session: Session, due: datetime) -> None:
    """OvmsOTA::Ticker600 at UTC time ``due``: the daily check, at ``ota auto.hour`` local time, once a day
    unless a fault clears the day so the next tick tries again."""
    m = session.module
    if m.partition_update or not m.config.get_bool("auto", "ota", True):
        return
    hour_text = m.config.get("ota", "auto.hour")
    hour = atoi(hour_text) if hour_text else 2
    now = local_time(m, due)
    if now.hour == hour and now.day != m.last_check_day:
        m.last_check_day = now.day
        session.launch_auto_flash(force=False)


def auto_flash(session: Session, force: bool) -> bool:
    """OvmsOTA::AutoFlash, the body of the AutoFlash task; True when it flashed (the module then restarts)."""
    m = session.module
    log = session.log
    log(f"AutoFlash OTA: Task is running{' forced' if force else ''}")
    running = m.running
    target = next_update_partition(m.layout, running)
    if target is None or target == running:
        log("AutoFlash: Target partition cannot be determined - aborting", "W")
        m.last_check_day = None
        return False
    server = (
        session.task.run(fetch.fetch_version(m.server_url("ovms3.ver"), m.user_agent, m.http_timeout))
        if m.network.any
        else None
    )
    session.task.check()  # the module may have rebooted while the request waited
    if server is None:
        log("AutoFlash: Server version could not be determined", "W")
        m.last_check_day = None
        return False
    if not force and buildverscmp(server.version, m.firmware_metric) <= 0:
        log(f"AutoFlash: No new firmware available ({server.version} is current)")
        return False
    if not m.network.wifi and not m.config.get_bool("ota", "auto.allow.modem", False):
        log("AutoFlash: Cannot flash without wifi connection, or auto.allow.modem", "W")
        if session.notified_version != server.version:
            session.notify(
                "info", "ota.update", f"New firmware {server.version} is available. Connect to WIFI to update"
            )
            session.notified_version = server.version
        return False
    if not session.flashing.acquire(blocking=False):
        log("AutoFlash: Flash operation already in progress - cannot auto flash", "W")
        m.last_check_day = None
        return False
    try:
        url = m.server_url("ovms3.bin")
        log(f"AutoFlash: Update {target.name} to {server.version} ({url})")
        session.notify("info", "ota.update", f"New OTA firmware {server.version} is now being downloaded")
        size = session.task.run(_download(session, url, running, target))
    finally:
        session.status.clear()
        session.flashing.release()
    if size is None:
        return False
    log(f"AutoFlash: Success flash of {size} bytes from {url}")
    session.notify("info", "ota.update", f"OTA firmware {server.version} has been updated (OVMS will restart)")
    m.config.set("ota", "http.mru", url)
    m.clock.advance(RESTART_DELAY)  # OTAFlashTask waits 5 s before it asks for the restart
    log("AutoFlash OTA: Task complete. Requesting restart...")
    return True


async def _download(session: Session, url: str, running: Partition, part: Partition) -> int | None:
    m = session.module
    base = delta_base(session)
    if base is not None:
        session.log(f"AutoFlash: Download delta (base {base.hex()[:16]})")
        try:
            kept = resume.load(session, url, delta_target(part))
            async with fetch.get(url, m.user_agent, m.http_timeout, resume_headers(base, kept)) as resp:
                if resp.header("IM") == DELTA_IM and resp.status in (206, 226):
                    try:
                        update = await flash_delta(
                            session, resp, running, part, base, _log_line(session), "AutoFlash", url, kept
                        )
                    except Broken:
                        m.last_check_day = None  # try again at the next ticker
                        return None
                    if update is not None:
                        session.log("AutoFlash: Setting boot partition...")
                        set_boot_partition(m.flash, m.layout, part, m.rollback, m.security)
                        return update.written
                    session.log("AutoFlash: Delta update failed, downloading the whole image")
                else:
                    return await _whole(session, resp, running, part)
        except fetch.RequestFailed:
            session.log(f"AutoFlash: http://{url} request failed", "E")
            m.last_check_day = None
            return None
        except EspError as err:
            session.log(f"AutoFlash: ESP32 error #{err.code}: {err.reason}", "E")
            return None
    try:
        async with fetch.get(url, m.user_agent, m.http_timeout) as resp:
            return await _whole(session, resp, running, part)
    except fetch.RequestFailed:
        session.log(f"AutoFlash: http://{url} request failed", "E")
        m.last_check_day = None
        return None


def _log_line(session: Session) -> Callable[[str], None]:
    return lambda text: session.log(text.rstrip("\n"))


async def _whole(session: Session, resp: fetch.Response, running: Partition, part: Partition) -> int | None:
    """The whole image from an answer to ovms3.bin, as OvmsOTA::AutoFlash writes it."""
    m = session.module
    log = session.log
    try:
        if resp.status != 200:
            # OVMS would flash the error page; refused before anything is erased, as `ota flash http` does.
            log(f"AutoFlash: Request failed (server answered {resp.status} {resp.reason})", "E")
            m.last_check_day = None
            return None
        expected = resp.content_length or 0
        if expected < fetch.MIN_DOWNLOAD:
            log(f"AutoFlash: Expected download file size ({expected}) is invalid", "E")
            m.last_check_day = None
            return None
        if expected > part.size:
            too_small(session, part, lambda line: log(line, "E"))
            return None
        session.status.set("OTA Auto Flash: Preparing flash partition...", log=True)
        update = OtaUpdate(m.flash, running, part, expected, security=m.security)
        session.status.set("OTA Auto Flash: Downloading OTA image...")
        filesize = 0
        outcome = "complete"
        try:
            async for chunk in resp.chunks():
                update.write(chunk)
                filesize += len(chunk)
                session.status.progress(filesize * 100 // expected)
        except fetch.BodyFailed as err:
            outcome = "complete" if err.closed else "failed"  # OVMS reads a closed connection as the end
        log(f"AutoFlash:: Download {outcome} (at {filesize} bytes)")
        if filesize != expected:
            log(f"AutoFlash: Download file size ({filesize}) does not match expected ({expected})", "E")
            m.last_check_day = None
            return None
        session.status.set("OTA Auto Flash: Finalising flash partition...", log=True)
        update.end()
        log("AutoFlash: Setting boot partition...")
        set_boot_partition(m.flash, m.layout, part, m.rollback, m.security)
        return filesize
    except EspError as err:
        log(f"AutoFlash: ESP32 error #{err.code}: {err.reason}", "E")
        return None

"""``ota flash http``: a whole image, a delta patch (RFC 3229) or the rest of an interrupted download, from
the update server into the next OTA slot, with OVMS 3.3.006's exact output."""

from __future__ import annotations

import asyncio

from ovota.device import fetch
from ovota.device.console import resume
from ovota.device.console.delta import DELTA_IM, Broken, delta_base, delta_target, flash_delta, resume_headers
from ovota.device.console.flashing import ESP_OTA_TAG, finish, pending, target_slots, too_small
from ovota.device.console.session import Session
from ovota.device.ota import EspError, OtaUpdate
from ovota.formats.partition_table import Partition

PROGRESS_EVERY = 200000


def ota_flash_http(session: Session, args: list[str]) -> None:
    parts = target_slots(session)
    if parts is None:
        return
    m = session.module
    url = args[0] if args else m.server_url("ovms3.bin")
    session.out.write(f"Download firmware from {url} to {parts[1].name}\n")
    size = asyncio.run(_flash_http(session, url, parts[0], parts[1]))
    if size is not None:
        session.out.write(
            f"OTA flash was successful\n  Flashed {size} bytes from {url}\n  Next boot will be from '{parts[1].name}'\n"
        )
        m.config.set("ota", "http.mru", url)


async def _flash_http(session: Session, url: str, running: Partition, target: Partition) -> int | None:
    out = session.out
    m = session.module
    base = delta_base(session)
    progress = resume.load(session, url, target.name)
    try:
        if base is not None:
            out.write(f"Download delta from {url} (base {base.hex()[:16]})\n")
            kept = resume.load(session, url, delta_target(target))
            async with fetch.get(url, m.user_agent, m.http_timeout, resume_headers(base, kept)) as resp:
                if resp.header("IM") != DELTA_IM or resp.status not in (206, 226):
                    if resp.status == 200:
                        session.log("OTA Flash HTTP: no delta for this base, the server sent the whole image")
                    return await _flash_body(session, resp, running, target, url, None)
                try:
                    update = await flash_delta(
                        session, resp, running, target, base, out.write, "OTA Flash HTTP", url, kept
                    )
                except Broken:
                    out.puts("Error: Delta download failed - 'ota flash http' again continues it")
                    return None
            if update is not None:
                return update.written if finish(session, update, target, "OTA Flash HTTP") else None
            # Once, and only once: the whole image, as a module without delta support would fetch it.
            out.puts("Delta update failed: downloading the whole image")
        headers = resume.range_headers(progress) if progress is not None else None
        async with fetch.get(url, m.user_agent, m.http_timeout, headers) as resp:
            return await _flash_body(session, resp, running, target, url, progress)
    except fetch.RequestFailed as err:
        out.puts("Error: Request failed")
        session.log(f"OTA Flash HTTP: {err}")
        return None


async def _flash_body(
    session: Session,
    resp: fetch.Response,
    running: Partition,
    target: Partition,
    url: str,
    progress: resume.Progress | None,
) -> int | None:
    """Flash a whole image from an answer to ``ovms3.bin`` (OVMS's ota_flash_http after the request), or
    its rest after an interrupted download (``progress``, answered with 206)."""
    out = session.out
    resumed = progress is not None and resp.status == 206 and resume.continues(resp, progress)
    if progress is not None and not resumed:
        out.puts("The file on the server changed, or it cannot resume: downloading from the start")
        resume.clear(session)
    if resumed and progress is not None:
        return await _resume_body(session, resp, running, target, url, progress)
    if resp.status != 200:
        # OVMS ignores the status and would flash the error page; refusing it keeps the slot intact.
        out.write(f"Error: Request failed (server answered {resp.status} {resp.reason})\n")
        return None
    expected = resp.content_length or 0
    if expected < fetch.MIN_DOWNLOAD:
        out.write(f"Error: Expected download file size ({expected}) is invalid\n")
        return None
    out.write(f"Expected file size is {expected}\n")
    if expected > target.size:
        too_small(session, target)
        return None
    out.puts("OTA Flash HTTP: Preparing flash partition...")
    session.status.set("OTA Flash HTTP: Preparing flash partition...")
    try:
        update = OtaUpdate(
            session.module.flash, running, target, expected, pending(session), security=session.module.security
        )
    except EspError as err:
        out.write(f"Error: ESP32 error #{err.code} when starting OTA operation\n")
        return None
    return await _download_into(session, resp, update, url, expected, 0)


async def _download_into(
    session: Session, resp: fetch.Response, update: OtaUpdate, url: str, expected: int, filesize: int
) -> int | None:
    """The download loop of ota_flash_http, from ``filesize`` bytes already in the slot."""
    out = session.out
    target = update.target
    etag = resp.header("ETag")
    tracker = (
        resume.Tracker.for_update(session, update, url, expected, etag) if resume.enabled(session) and etag else None
    )
    write = tracker.write if tracker is not None else update.write
    sofar = 0
    outcome = "complete"
    session.status.set("OTA Flash HTTP: Downloading OTA image...", filesize * 100 // expected)
    try:
        async for chunk in resp.chunks():
            filesize += len(chunk)
            sofar += len(chunk)
            if filesize > target.size:
                out.puts("Error: Download firmware is bigger than available partition space - state is inconsistent")
                return None
            try:
                write(chunk)
            except EspError as err:
                session.log(err.reason, "E", ESP_OTA_TAG)  # esp_ota_write logs it before OVMS prints its error
                out.write(f"Error: ESP32 error #{err.code} when writing to flash - state is inconsistent\n")
                return None
            session.status.progress(filesize * 100 // expected)
            if sofar > PROGRESS_EVERY:
                out.write(f"Downloading... {filesize * 100 // expected}% ({filesize} bytes so far)\n")
                sofar = 0
    except fetch.BodyFailed as err:
        outcome = "complete" if err.closed else "failed"  # OVMS reads a closed connection as the end
        session.log(f"OTA Flash HTTP: {err}")
    out.write(f"Download {outcome} (at {filesize} bytes)\n")
    if filesize != expected:
        if tracker is not None:
            tracker.save()
            session.log(f"OTA Flash HTTP: {tracker.verified} bytes kept; 'ota flash http' again resumes there")
        out.write(f"Error: Download file size ({filesize}) does not match expected ({expected})\n")
        return None
    session.status.set("OTA Flash HTTP: Finalising flash write")
    if not finish(session, update, target, "OTA Flash HTTP"):
        return None
    resume.clear(session)
    return filesize


async def _resume_body(
    session: Session, resp: fetch.Response, running: Partition, target: Partition, url: str, progress: resume.Progress
) -> int | None:
    out = session.out
    out.write(f"Resuming download at {progress.done} of {progress.size} bytes\n")
    try:
        update = OtaUpdate(
            session.module.flash,
            running,
            target,
            progress.size,
            pending(session),
            resume_at=progress.done,
            security=session.module.security,
        )
    except EspError as err:
        out.write(f"Error: ESP32 error #{err.code} when starting OTA operation\n")
        return None
    return await _download_into(session, resp, update, url, progress.size, progress.done)

"""``ota …`` commands with OVMS 3.3.006's exact output (see ovms_ota.cpp)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ovota.device import fetch
from ovota.device.console import auto, resume
from ovota.device.console import partitions as migration
from ovota.device.console.delta import DELTA_IM, Broken, delta_base, delta_target, flash_delta, resume_headers
from ovota.device.console.session import Session
from ovota.device.console.tree import Command
from ovota.device.flash import SECTOR_SIZE
from ovota.device.images import partition_version
from ovota.device.layout import LayoutType
from ovota.device.ota import (
    ESP_ERR_INVALID_ARG,
    ESP_ERR_NOT_FOUND,
    ESP_ERR_OTA_VALIDATE_FAILED,
    EspError,
    OtaUpdate,
    copy_partition,
    mark_app_valid,
    next_update_partition,
    running_state,
    set_boot_partition,
)
from ovota.formats.otadata import OtaState
from ovota.formats.partition_table import Partition
from ovota.formats.versions import buildverscmp

PROGRESS_EVERY = 200000
NEW_LAYOUT_SLOT = 0x700000
VFS_CHUNK = 4096  # OVMS freads 512 bytes; flash writes of one sector keep the emulator's op count low
BOOT_ERRORS = {
    ESP_ERR_INVALID_ARG: "Error: partition argument didn't point to a valid OTA partition of type 'app'",
    ESP_ERR_OTA_VALIDATE_FAILED: "Error: partition contained invalid app image, or signature validation failed",
    ESP_ERR_NOT_FOUND: "Error: OTA partition not found",
}


def register(root: Command, has_factory: bool, layout_type: LayoutType) -> None:
    ota = root.add(Command("ota", "OTA framework", ota_status))
    status = ota.add(Command("status", "Show OTA status", ota_status, max_args=0))
    status.add(Command("nocheck", "Show OTA status (skip check for available update)", ota_status))
    flash = ota.add(Command("flash", "OTA flash"))
    flash.add(Command("vfs", "OTA flash vfs", ota_flash_vfs, "<file>", 1, 1))
    flash.add(Command("http", "OTA flash http", ota_flash_http, "[<url>]", 0, 1))
    flash.add(Command("auto", "Automatic regular OTA flash (over web)", ota_flash_auto, "[force]", 0, 1))
    labels = (["factory"] if has_factory else []) + ["ota_0", "ota_1"]
    boot = ota.add(Command("boot", "OTA boot"))
    erase = ota.add(Command("erase", "OTA erase"))
    for label in labels:
        boot.add(Command(label, f"Boot from {label} partition", ota_boot))
        erase.add(Command(label, f"Erase {label} partition", ota_erase))
    ota.add(Command("copy", "OTA copy", ota_copy, "<from> <to>", 2, 2))
    rollback = ota.add(Command("rollback", "App rollback (emulator; off by default, as on OVMS)"))
    for action in ("enable", "disable", "confirm"):
        rollback.add(Command(action, f"Rollback {action}", ota_rollback))
    partitions = ota.add(Command("partitions", "OTA partitions"))
    partitions.add(Command("list", "Show partition table", ota_partitions_list))
    migration.register(partitions, layout_type)


# -- status ---------------------------------------------------------------------------------------------


def ota_status(session: Session, args: list[str]) -> None:
    m = session.module
    out = session.out
    check = session.words[:2] == ["ota", "status"] and "nocheck" not in session.words
    out.write(f"Hardware:          {m.identity.hardware}\n")
    out.write(f"Firmware:          {m.firmware_metric}\n")
    out.write(f"Partition type:    {m.layout.type.value}\n")
    out.write(f"Partition table:   0x{m.layout.table_offset:04x}\n")
    out.write(f"Running partition: {m.running.name}\n")
    boot = m.boot_partition
    out.write(f"Boot partition:    {boot.name if boot else ''}\n")
    for label, part in (
        ("Factory image:     ", m.layout.factory),
        ("OTA_O image:       ", m.layout.get("ota_0")),
        ("OTA_1 image:       ", m.layout.get("ota_1")),
    ):
        version = partition_version(m.flash, part)
        if version:
            out.write(f"{label}{version}\n")
    if check and m.network.any:
        server = asyncio.run(fetch.fetch_version(m.server_url("ovms3.ver"), m.user_agent, m.http_timeout))
        if server is not None:
            newer = buildverscmp(server.version, m.firmware_metric) > 0
            out.write(f"Server Available:  {server.version}{' (is newer)' if newer else ' (no update required)'}\n")
            if server.changelog:
                out.puts("")
                out.puts(server.changelog)


# -- flashing -------------------------------------------------------------------------------------------


def _target(session: Session) -> tuple[Partition, Partition] | None:
    """The running and target partitions, with OVMS's lines and errors."""
    m = session.module
    session.out.write(f"Current running partition is: {m.running.name}\n")
    target = next_update_partition(m.layout, m.running)
    if target is None:
        session.out.puts("Error: Target partition cannot be determined - aborting")
        return None
    session.out.write(f"Target partition is: {target.name}\n")
    if target == m.running:
        session.out.puts("Error: Cannot flash to running image partition")
        return None
    return m.running, target


def _too_small(session: Session, target: Partition) -> None:
    session.out.write(f"Error: target partition too small ({target.size} bytes capacity) - aborting\n")
    if target.size < NEW_LAYOUT_SLOT:
        session.out.puts("Consider upgrading your partitioning scheme to v3-35.")
        session.notify("alert", "ota.partitiontype", migration.PARTITION_ALERT.format("have now stopped"))


def _finish(session: Session, update: OtaUpdate, target: Partition, prefix: str) -> bool:
    """esp_ota_end and set boot; the OVMS messages for their failures."""
    m = session.module
    try:
        update.end()
    except EspError as err:
        session.out.write(f"Error: ESP32 error #{err.code} finalising OTA operation - state is inconsistent\n")
        session.log(f"{prefix}: {err.reason}")
        return False
    session.out.puts(f"{prefix}: Setting boot partition...")
    try:
        set_boot_partition(m.flash, m.layout, target, m.rollback, m.security)
    except EspError as err:
        session.out.write(f"Error: ESP32 error #{err.code} setting boot partition - check before rebooting\n")
        return False
    return True


def ota_flash_http(session: Session, args: list[str]) -> None:
    parts = _target(session)
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
                return update.written if _finish(session, update, target, "OTA Flash HTTP") else None
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
        _too_small(session, target)
        return None
    out.puts("OTA Flash HTTP: Preparing flash partition...")
    try:
        update = OtaUpdate(
            session.module.flash, running, target, expected, _pending(session), security=session.module.security
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
                out.write(f"Error: ESP32 error #{err.code} when writing to flash - state is inconsistent\n")
                session.log(f"OTA Flash HTTP: {err.reason}")
                return None
            if sofar > PROGRESS_EVERY:
                out.write(f"Downloading... {filesize * 100 // expected}% ({filesize} bytes so far)\n")
                sofar = 0
    except fetch.BodyFailed as err:
        outcome = "failed"
        session.log(f"OTA Flash HTTP: {err}")
    out.write(f"Download {outcome} (at {filesize} bytes)\n")
    if filesize != expected:
        if tracker is not None:
            tracker.save()
            session.log(f"OTA Flash HTTP: {tracker.verified} bytes kept; 'ota flash http' again resumes there")
        out.write(f"Error: Download file size ({filesize}) does not match expected ({expected})\n")
        return None
    if not _finish(session, update, target, "OTA Flash HTTP"):
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
            _pending(session),
            resume_at=progress.done,
            security=session.module.security,
        )
    except EspError as err:
        out.write(f"Error: ESP32 error #{err.code} when starting OTA operation\n")
        return None
    return await _download_into(session, resp, update, url, progress.size, progress.done)


def ota_flash_vfs(session: Session, args: list[str]) -> None:
    if flash_file(session, vfs_local(session.module.sd_dir, args[0]), args[0]):
        session.module.config.set("ota", "vfs.mru", args[0])


def flash_file(session: Session, local: Path | None, path: str) -> bool:
    """Flash a local file into the next OTA slot (the body of `ota flash vfs`); True on success."""
    parts = _target(session)
    if parts is None:
        return False
    running, target = parts
    if local is None or not local.is_file():
        session.out.write(f"Error: Cannot find file {path}\n")
        return False
    size = local.stat().st_size
    session.out.write(f"Source image is {size} bytes in size\n")
    if size > target.size:
        _too_small(session, target)
        return False
    try:
        source = local.open("rb")
    except OSError:
        session.out.write(f"Error: Cannot open {path}\n")
        return False
    with source:
        session.out.puts("OTA Flash VFS: Preparing flash partition...")
        try:
            update = OtaUpdate(
                session.module.flash, running, target, size, _pending(session), security=session.module.security
            )
        except EspError as err:
            session.out.write(f"Error: ESP32 error #{err.code} when starting OTA operation\n")
            return False
        session.out.puts("OTA Flash VFS: Flashing image partition...")
        while chunk := source.read(VFS_CHUNK):
            try:
                update.write(chunk)
            except EspError as err:
                session.out.write(f"Error: ESP32 error #{err.code} when writing to flash - state is inconsistent\n")
                session.log(f"OTA Flash VFS: {err.reason}")
                return False
    if not _finish(session, update, target, "OTA Flash VFS"):
        return False
    session.out.write(
        f"OTA flash was successful\n  Flashed {size} bytes from {path}\n  Next boot will be from '{target.name}'\n"
    )
    return True


def ota_flash_auto(session: Session, args: list[str]) -> None:
    if args and args[0] != "force":
        session.out.puts("Usage: ota flash auto [force]")
        return
    session.out.puts("Triggering automatic firmware update...")
    auto.auto_flash(session, force=bool(args))


# -- boot, erase, copy, partitions ------------------------------------------------------------------------


def ota_boot(session: Session, args: list[str]) -> None:
    m = session.module
    part = m.layout.get(session.words[-1])
    if part is None:
        return
    try:
        set_boot_partition(m.flash, m.layout, part, m.rollback, m.security)
    except EspError as err:
        session.out.puts(BOOT_ERRORS.get(err.code, f"Error: cannot set OTA boot partition (error {err.code})"))
        return
    session.out.write(f"Boot from {part.name} at 0x{part.offset:08x} (size 0x{part.size:08x})\n")


def _pending(session: Session) -> bool:
    m = session.module
    return m.rollback and running_state(m.flash, m.layout) == OtaState.PENDING_VERIFY


def ota_rollback(session: Session, args: list[str]) -> None:
    m = session.module
    action = session.words[-1]
    if action == "confirm":
        try:
            mark_app_valid(m.flash, m.layout, m.running, m.security)
        except EspError as err:
            session.out.puts(f"Error: {err.reason}")
            return
        session.out.puts(f"Firmware in {m.running.name} confirmed valid")
        return
    if action == "disable" and m.identity.anti_rollback:
        session.out.puts("Error: this module's bootloader has anti-rollback, which needs app rollback: it stays on")
        return
    m.config.set("ota", "rollback", "yes" if action == "enable" else "no")
    m.rollback = action == "enable"
    if m.rollback:
        session.out.puts("App rollback enabled: a new image must be confirmed ('ota rollback confirm') before a reset")
    else:
        session.out.puts("App rollback disabled")


def ota_erase(session: Session, args: list[str]) -> None:
    m = session.module
    part = m.layout.get(session.words[-1])
    if part is None:
        session.out.puts("Error: Cannot find specified partition")
        return
    if part == m.running:
        session.out.puts("Error: Cannot erase currently running partition")
        return
    if part == m.boot_partition:
        session.out.puts("Error: Cannot erase boot partition")
        return
    session.out.puts("OTA Erase: Erasing partition...")
    if part.ota_slot is None:
        m.flash.erase(part.offset, part.size)
    else:
        OtaUpdate(m.flash, m.running, part)  # esp_ota_begin(OTA_SIZE_UNKNOWN) erases the whole slot
    session.out.puts("Partition erase complete")


def ota_copy(session: Session, args: list[str]) -> None:
    m = session.module
    source, dest = m.layout.get(args[0]), m.layout.get(args[1])
    if dest is not None and dest == m.running:
        session.out.puts("Error: Cannot copy to currently running partition")
        return
    if dest is not None and dest == m.boot_partition:
        session.out.puts("Error: Cannot copy to boot partition")
        return
    if source is None:
        session.out.puts("Error: Could not find partition to copy from")
        return
    if dest is None:
        session.out.puts("Error: Could not find partition to copy to")
        return
    if source.size != dest.size:
        session.out.puts("Error: The two specified partitions are not the same size")
        return
    session.out.write(
        f"OTA copy {source.name} ({source.offset:08d}) -> {dest.name} ({dest.offset:08x}) "
        f"size {source.size} with block size {SECTOR_SIZE}\n"
    )
    copy_partition(m.flash, source, dest, source.size, session.out.puts)


def _size_text(size: int) -> str:
    if size % 0x100000 == 0:
        return f"{size // 0x100000} MB"
    if size % 0x400 == 0:
        return f"{size // 0x400} KB"
    return f"0x{size:08x}"


def ota_partitions_list(session: Session, args: list[str]) -> None:
    m = session.module
    out = session.out
    out.puts("Partition table:")
    out.write(f"{'Label':<16} {'Type':>4} {'Subtype':<12} {'Address':>10} {'Size':<10.10}\n")
    for p in m.layout.table:
        out.write(
            f"{p.name:<16} {p.type_keyword:<4.4} {p.subtype_keyword:<12.12} 0x{p.offset:08x} {_size_text(p.size)}\n"
        )
    if m.layout.stored_md5 is not None:
        verdict = "pass" if m.layout.md5_ok else "FAIL"
        out.write(f"Digest:          {m.layout.stored_md5.hex()} {verdict}\n")


def vfs_local(sd_dir: Path | None, path: str) -> Path | None:
    """Map an OVMS VFS path under /sd to the emulator's --sd folder; None for anything else or an escape."""
    if sd_dir is None or not path.startswith("/sd/"):
        return None
    local = (sd_dir / path[4:]).resolve()
    root = sd_dir.resolve()
    return local if local == root or root in local.parents else None

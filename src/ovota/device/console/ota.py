"""``ota …`` commands with OVMS 3.3.006's exact output (see ovms_ota.cpp)."""

from __future__ import annotations

import asyncio

from ovota.device import fetch
from ovota.device.console import partitions as migration
from ovota.device.console.exclusive import BUSY_TABLE, exclusive
from ovota.device.console.flash_http import ota_flash_http
from ovota.device.console.flashing import flash_file, ovms_realpath, vfs_local
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
    set_boot_partition,
)
from ovota.formats.versions import buildverscmp

BOOT_ERRORS = {
    ESP_ERR_INVALID_ARG: "Error: partition argument didn't point to a valid OTA partition of type 'app'",
    ESP_ERR_OTA_VALIDATE_FAILED: "Error: partition contained invalid app image, or signature validation failed",
    ESP_ERR_NOT_FOUND: "Error: OTA partition not found",
}


def register(root: Command, has_factory: bool, layout_type: LayoutType) -> None:
    ota = root.add(Command("ota", "OTA framework", ota_status))
    status = ota.add(Command("status", "Show OTA status", ota_status))
    status.add(Command("nocheck", "…skip check for available update", ota_status))
    flash = ota.add(Command("flash", "OTA flash"))
    flash.add(Command("vfs", "OTA flash vfs", exclusive(ota_flash_vfs), "<file>", 1, 1))
    flash.add(Command("http", "OTA flash http", exclusive(ota_flash_http), "[<url>]", 0, 1))
    auto_cmd = flash.add(Command("auto", "Automatic regular OTA flash (over web)", ota_flash_auto, "[force]", 0, 1))
    auto_cmd.add(Command("force", "…force update (even if server version older)", ota_flash_auto))
    labels = (["factory"] if has_factory else []) + ["ota_0", "ota_1"]
    boot = ota.add(Command("boot", "OTA boot"))
    erase = ota.add(Command("erase", "OTA erase"))
    copy = ota.add(Command("copy", "OTA copy"))
    for label in labels:
        boot.add(Command(label, f"Boot from {label} image", exclusive(ota_boot)))
        erase.add(Command(label, f"Erase {label} image", exclusive(ota_erase)))
        source = copy.add(Command(label, f"OTA copy {label} <to>"))
        for dest in labels:
            if dest != label:
                source.add(Command(dest, f"Copy {label} to {dest} image", exclusive(ota_copy)))
    rollback = ota.add(Command("rollback", "App rollback (emulator; off by default, as on OVMS)"))
    for action in ("confirm", "disable", "enable"):
        rollback.add(Command(action, f"Rollback {action}", ota_rollback))
    partitions = ota.add(Command("partitions", "OTA partitions"))
    partitions.add(Command("list", "Show partition table", exclusive(ota_partitions_list, BUSY_TABLE)))
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
    status = session.status.line()
    if status is not None:
        out.puts(status)
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
                out.write("\n" + server.changelog + "\n", counted=False)  # the server's text, not a failure


# -- flashing -------------------------------------------------------------------------------------------


def ota_flash_vfs(session: Session, args: list[str]) -> None:
    """From /sd (the --sd folder) or from /store and /store2, read through the mounted FAT volume."""
    found = session.module.stores.locate(ovms_realpath(args[0]))  # flash_file refuses a protected path
    local = found[0].read(found[1]) if found is not None else vfs_local(session.module.sd_dir, args[0])
    if flash_file(session, local, args[0]):
        session.module.config.set("ota", "vfs.mru", args[0])


def ota_flash_auto(session: Session, args: list[str]) -> None:
    """Starts the AutoFlash task and returns; the task's output is its log."""
    session.out.puts("Triggering automatic firmware update...")
    session.launch_auto_flash(force=session.words[-1] == "force")


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
        # esp_ota_begin refuses a partition that is not an OTA slot before erasing anything.
        session.out.write(f"Error: ESP32 error #{ESP_ERR_INVALID_ARG} starting OTA operation\n")
        return
    OtaUpdate(m.flash, m.running, part)  # esp_ota_begin(OTA_SIZE_UNKNOWN) erases the whole slot
    session.out.puts("Partition erase complete")


def ota_copy(session: Session, args: list[str]) -> None:
    m = session.module
    source, dest = m.layout.get(session.words[-2]), m.layout.get(session.words[-1])
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

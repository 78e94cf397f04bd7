"""What every ``ota flash`` shares: the target slot, OVMS's errors for a slot too small, esp_ota_end and set
boot with their messages; and flashing a local file (``ota flash vfs``, the SD card, the web page)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ovota.device.console import partitions as migration
from ovota.device.console.session import Session
from ovota.device.ota import EspError, OtaUpdate, next_update_partition, running_state, set_boot_partition
from ovota.formats.otadata import OtaState
from ovota.formats.partition_table import Partition

NEW_LAYOUT_SLOT = 0x700000
VFS_CHUNK = 4096  # OVMS freads 512 bytes; flash writes of one sector keep the emulator's op count low
READ_SIZE = 512  # ... and its progress counts those 512-byte reads
CONFIG_PATH = "/store/ovms_config"
ESP_OTA_TAG = "esp_ota_ops"  # ESP-IDF's log tag for esp_ota_begin/write/end


def ovms_realpath(path: str) -> str:
    """OVMS's realpath: ``.`` and ``..`` resolved lexically, relative paths rooted at ``/``, nothing looked up."""
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def protected_path(path: str) -> bool:
    """OvmsConfig::ProtectedPath: the config files in /store are not for VFS commands."""
    return CONFIG_PATH in ovms_realpath(path)


def target_slots(session: Session) -> tuple[Partition, Partition] | None:
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


def too_small(session: Session, target: Partition, say: Callable[[str], None] | None = None) -> None:
    """OVMS's refusal of an image bigger than the target slot, with its hint to migrate the partitions; ``say``
    prints each line (the console by default; the AutoFlash task logs them)."""
    say = say or session.out.puts
    say(f"Error: target partition too small ({target.size} bytes capacity) - aborting")
    if target.size < NEW_LAYOUT_SLOT:
        say("Consider upgrading your partitioning scheme to v3-35.")
        session.notify("alert", "ota.partitiontype", migration.PARTITION_ALERT.format("have now stopped"))


def finish(session: Session, update: OtaUpdate, target: Partition, prefix: str) -> bool:
    """esp_ota_end and set boot; the OVMS messages for their failures."""
    m = session.module
    try:
        update.end()
    except EspError as err:
        session.log(err.reason, "E", ESP_OTA_TAG)
        session.out.write(f"Error: ESP32 error #{err.code} finalising OTA operation - state is inconsistent\n")
        return False
    session.out.puts(f"{prefix}: Setting boot partition...")
    try:
        set_boot_partition(m.flash, m.layout, target, m.rollback, m.security)
    except EspError as err:
        session.out.write(f"Error: ESP32 error #{err.code} setting boot partition - check before rebooting\n")
        return False
    return True


def pending(session: Session) -> bool:
    """Whether a new image must be confirmed first (app rollback on, the running one not yet confirmed)."""
    m = session.module
    return m.rollback and running_state(m.flash, m.layout) == OtaState.PENDING_VERIFY


def flash_file(session: Session, local: Path | bytes | None, path: str) -> bool:
    """Flash a file into the next OTA slot (the body of `ota flash vfs`, the SD card's auto-flash and the web
    page's upload): a local file, or the bytes of one read from /store; True on success. The ``Status:`` line it
    sets ends with it."""
    try:
        return _flash_file(session, local, path)
    finally:
        session.status.clear()


def _flash_file(session: Session, local: Path | bytes | None, path: str) -> bool:
    parts = target_slots(session)
    if parts is None:
        return False
    running, target = parts
    if protected_path(path):
        session.out.puts("Error: protected path")
        return False
    if local is None or (isinstance(local, Path) and not local.is_file()):
        session.out.write(f"Error: Cannot find file {path}\n")
        return False
    size = len(local) if isinstance(local, bytes) else local.stat().st_size
    session.out.write(f"Source image is {size} bytes in size\n")
    if size > target.size:
        too_small(session, target)
        return False
    try:
        source: BinaryIO = io.BytesIO(local) if isinstance(local, bytes) else local.open("rb")
    except OSError:
        session.out.write(f"Error: Cannot open {path}\n")
        return False
    with source:
        session.out.puts("OTA Flash VFS: Preparing flash partition...")
        session.status.set("OTA Flash VFS: Preparing flash partition...")
        try:
            update = OtaUpdate(
                session.module.flash, running, target, size, pending(session), security=session.module.security
            )
        except EspError as err:
            session.out.write(f"Error: ESP32 error #{err.code} when starting OTA operation\n")
            return False
        session.out.puts("OTA Flash VFS: Flashing image partition...")
        session.status.set("OTA Flash VFS: Flashing image partition...")
        done = 0
        while chunk := source.read(VFS_CHUNK):
            try:
                update.write(chunk)
            except EspError as err:
                session.log(err.reason, "E", ESP_OTA_TAG)  # esp_ota_write logs it before OVMS prints its error
                session.out.write(f"Error: ESP32 error #{err.code} when writing to flash - state is inconsistent\n")
                return False
            for read in range(READ_SIZE, len(chunk) + READ_SIZE, READ_SIZE):
                session.status.progress((done + min(read, len(chunk))) * 100 // size)
            done += len(chunk)
        session.status.set("OTA Flash VFS: Finalising flash write")
    if not finish(session, update, target, "OTA Flash VFS"):
        return False
    session.out.write(
        f"OTA flash was successful\n  Flashed {size} bytes from {path}\n  Next boot will be from '{target.name}'\n"
    )
    return True


def vfs_local(sd_dir: Path | None, path: str) -> Path | None:
    """Map an OVMS VFS path under /sd to the emulator's --sd folder; None for anything else or an escape."""
    if sd_dir is None or not (path == "/sd" or path.startswith("/sd/")):
        return None
    local = (sd_dir / path[4:]).resolve()
    root = sd_dir.resolve()
    return local if local == root or root in local.parents else None

"""Partition-scheme migration v3-30 -> v3-34 -> v3-35, step by step as OVMS 3.3.006 does it.

Each call of :func:`autocont` inspects the flash (table type, running and boot partition) and performs
the one step that is due, then asks for a reboot. A power cut anywhere leaves a bootable module whose
config is intact, except inside the partition-table rewrites (erase + program of the sector at 0x8000,
two flash operations each): the ESP32 ROM bootloader only reads that sector, so there is no second copy
it could fall back to. Everything a rewrite needs (new table, copied store, verified images) is prepared
and checked before the erase, the table is programmed in one operation and read back.
"""

from __future__ import annotations

import enum
from dataclasses import replace

import numpy as np

from ovota.device.fat_store import VolumeError
from ovota.device.flash import SECTOR_SIZE, Flash
from ovota.device.images import verify_partition_image
from ovota.device.layout import FAT, LayoutType, read_layout
from ovota.device.ota import COPY_PROGRESS_EVERY, EspError, set_boot_partition
from ovota.device.security import NO_SECURITY, Security
from ovota.device.store_copy import LOG_PATH, STORE2, STORE2_LOG, StepWriter, Stores, copy_store
from ovota.device.store_volume import StoreVolume, has_wear_levelling
from ovota.formats.partition_table import APP, DATA, ENTRY, MAX_TABLE_LENGTH, Partition, PartitionTable
from ovota.formats.versions import strverscmp

NEW_SLOT = 0x700000
REQUIRED_FLASH = 16 * 1024 * 1024
MIN_VERSION = "3.3.006"  # the first release built for (and able to run from) the 7 MB slots
WARNING = "!! Do not power off the module while the upgrade is running !!"


class Restart(enum.Enum):
    PARTITION_UPDATE = "partition update"  # reboot into maintenance mode and continue there
    SOFT = "soft"  # reboot into normal mode


class MigrationError(Exception):
    """A refusal or failure, with OVMS's message."""


# -- pure table transforms -------------------------------------------------------------------------------


def is_store2(p: Partition) -> bool:
    return (p.type, p.subtype, p.offset, p.size) == (DATA, FAT, STORE2.offset, STORE2.size)


def with_store2(table: PartitionTable) -> PartitionTable:
    """v3-30 -> v3-34: append the store2 entry (data/fat 0xe10000, 0x1f0000)."""
    return PartitionTable((*table.partitions, STORE2))


def without_factory(table: PartitionTable) -> PartitionTable:
    """v3-34 -> v3-35, as ovms_partition_table_upgrade_factory edits the records in place:
    factory becomes ota_0 (7 MB), ota_0 becomes ota_1 (7 MB at 0x710000), the ota_1 record takes the
    store2 entry renamed "store", and the records after it are dropped."""
    parts = list(table.partitions)
    factory = next(i for i, p in enumerate(parts) if p.type == APP and p.subtype == 0x00)
    ota0 = next(i for i, p in enumerate(parts) if p.type == APP and p.subtype == 0x10)
    ota1 = next(i for i, p in enumerate(parts) if p.type == APP and p.subtype == 0x11)
    store2 = next(p for p in parts if is_store2(p))
    parts[factory] = replace(parts[factory], name="ota_0", subtype=0x10, size=NEW_SLOT)
    parts[ota0] = replace(parts[ota0], name="ota_1", subtype=0x11, offset=0x710000, size=NEW_SLOT)
    parts[ota1] = replace(store2, name="store")
    return PartitionTable(tuple(parts[: ota1 + 1]))


def downgraded_binary(table: PartitionTable) -> bytes:
    """v3-34 -> v3-30 (ovms_partition_table_downgrade_store): the records before store2, then the MD5 record in
    store2's slot. OVMS zeroes that record before setting its magic and digest, so its padding is 0x00, not
    0xFF as gen_esp32part writes it."""
    keep = PartitionTable(tuple(p for p in table.partitions[: _store2_index(table)]))
    data = bytearray(keep.to_binary())
    md5_record = len(keep) * ENTRY.size
    data[md5_record + 2 : md5_record + 16] = bytes(14)
    return bytes(data)


def _store2_index(table: PartitionTable) -> int:
    return next(i for i, p in enumerate(table.partitions) if is_store2(p))


# -- flash steps --------------------------------------------------------------------------------------------


def rewrite_table(flash: Flash, offset: int, data: bytes, writer: StepWriter) -> None:
    """ovms_partition_table_rewrite: the unprotected window is exactly these two flash operations.

    OVMS prints "Writing new partition table" between them; the emulator writes that line right after the
    program, so that appending it to the log file (a flash write too) does not widen the window."""
    PartitionTable.from_binary(data).verify()  # never erase the old table for a new one that would not parse
    writer.puts(f"Erasing old partition table ({SECTOR_SIZE} bytes at 0x{offset:08x})...")
    flash.erase(offset, SECTOR_SIZE)
    flash.program(offset, data)
    writer.puts(f"Writing new partition table ({SECTOR_SIZE} bytes at 0x{offset:08x})...")
    if flash.read(offset, MAX_TABLE_LENGTH) != data:
        raise MigrationError("Error: partition table read-back does not match what was written")


def copy_to_factory(flash: Flash, source: Partition, factory: Partition, writer: StepWriter) -> None:
    """ovms_partition_copy into factory: erase the whole slot, then copy it in 4 KiB sectors, with OVMS's
    progress line every 256 KiB. Erasing a blank sector or programming 0xFF bytes changes no bit, so the
    emulator leaves those flash operations out (a power cut there would find the same flash)."""
    for sector in _used_sectors(flash.read(factory.offset, factory.size)):
        flash.erase(factory.offset + sector, SECTOR_SIZE)
    data = flash.read(source.offset, factory.size)
    used = _used_sectors(data)
    for end in range(COPY_PROGRESS_EVERY, factory.size + 1, COPY_PROGRESS_EVERY):
        for sector in (s for s in used if end - COPY_PROGRESS_EVERY <= s < end):
            flash.program(factory.offset + sector, data[sector : sector + SECTOR_SIZE])
        writer.puts(f"OTA Factory Copy: {end * 100 // factory.size}% progress ({end} bytes)")
    writer.puts("OTA copy complete")


def _used_sectors(data: bytes) -> list[int]:
    """Offsets of the sectors of ``data`` that are not all 0xFF."""
    words = np.frombuffer(data, dtype=np.uint64).reshape(-1, SECTOR_SIZE // 8)
    return [int(i) * SECTOR_SIZE for i in np.flatnonzero((words != np.uint64(2**64 - 1)).any(axis=1))]


def check_can_migrate(flash: Flash, layout_type: LayoutType, running_version: str) -> None:
    """The emulator's refusals that must come before anything is written."""
    if flash.size < REQUIRED_FLASH:
        size = flash.size // 0x100000
        raise MigrationError(f"Error: the v3-35 layout needs 16 MB of flash, this module has {size} MB")
    if layout_type is LayoutType.UNKNOWN:
        raise MigrationError("Error: Unknown partition table type")
    if strverscmp(running_version, MIN_VERSION) < 0:
        raise MigrationError(
            f"Error: running firmware {running_version} cannot run on the v3-35 layout; update to {MIN_VERSION} "
            "or later first"
        )


def autocont(
    flash: Flash,
    running: Partition,
    boot: Partition | None,
    running_version: str,
    maintenance: bool,
    writer: StepWriter,
    stores: Stores,
    security: Security = NO_SECURITY,
) -> Restart | None:
    """ovms_partition_table_upgrade_autocont: do the next due step. Returns how to reboot afterwards, None when
    nothing is left; raises MigrationError (its message not yet written) when the step fails.
    ``stores``: this boot's mounts, which the store migration copies between.
    ``security``: what the chip enforces, so the factory copy is checked as the bootloader will check it."""
    layout = read_layout(flash)
    kind = layout.type
    if kind is LayoutType.V3_35:
        writer.puts("v3-35 Partition table is already up to date")
        return None
    check_can_migrate(flash, kind, running_version)
    prefix = "v3-30" if kind is LayoutType.V3_30 else "v3-34"
    if not maintenance:
        if kind is LayoutType.V3_30:
            writer.puts("v3-30 Partition upgrade started, rebooting now into partition update mode...")
        else:
            writer.puts("v3-34 We need to upgrade the store partition to the new format, rebooting now...")
        writer.puts(f"{prefix} {WARNING}")
        return Restart.PARTITION_UPDATE
    factory = layout.factory
    if factory is None or layout.store is None:
        raise MigrationError(f"{prefix} Error: Failed to find factory partition")
    if kind is LayoutType.V3_30 and (running != factory or boot != factory):
        writer.puts("v3-30 We need to copy the currently running partition to factory, and then reboot")
        if running != factory:  # OVMS would erase the running factory slot here; the emulator does not
            copy_to_factory(flash, running, factory, writer)
            if verify_partition_image(flash, factory, security) is not None:
                raise MigrationError("v3-30 Error: Failed to copy currently running partition to factory")
        try:
            set_boot_partition(flash, layout, factory, security=security)
        except EspError:
            raise MigrationError("v3-30 Error: Failed to set boot partition") from None
        writer.puts("v3-30 Factory boot partition is ready and set to boot. Rebooting now...")
        writer.puts(f"v3-30 {WARNING}")
        return Restart.PARTITION_UPDATE
    if kind is LayoutType.V3_30:
        writer.puts(
            "v3-30 The currently running partition is factory, so we can upgrade the partition table, and then reboot"
        )
        try:
            upgrade_store_table(flash, layout.table_offset, layout.table, writer)
        except MigrationError as err:
            writer.puts(str(err))
            raise MigrationError("v3-30 Error: Failed to upgrade partition store table") from None
        writer.puts("v3-30 Partition table store upgraded successfully, rebooting now...")
        writer.puts(f"v3-30 {WARNING}")
        return Restart.PARTITION_UPDATE
    if running != factory or boot != factory:  # the emulator's guard: ota_0 would not hold this image
        raise MigrationError("Error: Cannot upgrade partition table if running partition is not factory")
    writer.puts("v3-34 We need to upgrade the store partition to the new format, and then reboot")
    if not migrate_store(flash, stores, writer):
        if writer.log_path == STORE2_LOG:  # OVMS switches the log writer back to the old store
            writer.notify_vfs_migration(STORE2_LOG, LOG_PATH)
        raise MigrationError("v3-34 Store migration failed")
    try:
        upgrade_factory_table(flash, layout.table_offset, layout.table, writer, stores)
    except MigrationError as err:
        writer.puts(str(err))
        raise MigrationError("v3-34 Error: Failed to upgrade factory partition table") from None
    writer.puts("v3-34 Store migrated successfully, factory partition table upgraded successfully, rebooting now...")
    return Restart.SOFT


def upgrade_store_table(flash: Flash, offset: int, table: PartitionTable, writer: StepWriter) -> None:
    """v3-30 -> v3-34: add store2 to the table (ovms_partition_table_upgrade_store)."""
    for p in table:
        writer.puts(f"0x{p.offset:08x} Skipping over {_type_name(p)} partition")
    new = with_store2(table)
    writer.puts("Added new store2 partition to partition table")
    erase_store2(flash, writer)
    writer.puts("Recalculated MD5 checksum")
    rewrite_table(flash, offset, new.to_binary(), writer)
    writer.puts("Partition table upgraded successfully - reboot required")


def downgrade_store_table(flash: Flash, offset: int, table: PartitionTable, writer: StepWriter) -> None:
    """v3-34 -> v3-30: remove store2 from the table (ovms_partition_table_downgrade_store)."""
    for p in table:
        if is_store2(p):
            writer.puts("Removing store2 partition from partition table")
            rewrite_table(flash, offset, downgraded_binary(table), writer)
            writer.puts("Store partition downgraded successfully - reboot required")
            return
        writer.puts(f"0x{p.offset:08x} Skipping over {_type_name(p)} partition")
    raise MigrationError("Error: Failed to downgrade store (could not find store2 partition)")


def store_migrated(flash: Flash, stores: Stores) -> bool:
    """The emulator's guard before the v3-35 table: store2 holds a FAT volume with every config file of /store,
    each of its size (checked without formatting or initialising anything)."""
    if stores.store2 is not None or not has_wear_levelling(flash, STORE2):
        return False  # mounted: the copy may be under way
    try:
        copy = StoreVolume(flash, STORE2, format_if_mount_failed=False)
        copies = {e.name: e.size for e in copy.listdir("/ovms_config") or [] if not e.is_dir}
        originals = {e.name: e.size for e in stores.store.listdir("/ovms_config") or [] if not e.is_dir}
        return copy.is_dir("/ovms_config") and all(copies.get(name) == size for name, size in originals.items())
    except VolumeError:
        return False


def upgrade_factory_table(flash: Flash, offset: int, table: PartitionTable, writer: StepWriter, stores: Stores) -> None:
    """v3-34 -> v3-35 (ovms_partition_table_upgrade_factory); refuses before the store was migrated."""
    if not store_migrated(flash, stores):
        raise MigrationError("v3-34 Error: store has not been migrated to store2 yet")
    new = without_factory(table)
    for p in table.partitions[:3]:
        writer.puts(f"0x{p.offset:08x} Skipping over {_type_name(p)} partition")
    writer.puts("0x00010000 Converted factory partition to 6MB OTA 0")
    writer.puts("0x00710000 Converted OTA 0 partition to 6MB OTA 1")
    writer.puts("0x00e10000 Moved data/fat partition up two positions")
    writer.puts("           Recalculated MD5 checksum")
    rewrite_table(flash, offset, new.to_binary(), writer)
    writer.puts("Partition table upgraded successfully - reboot required")


def erase_store2(flash: Flash, writer: StepWriter) -> None:
    writer.puts(f"Erasing store2 data ({STORE2.size} bytes)...")
    flash.erase(STORE2.offset, STORE2.size)


def mount_store2(flash: Flash, stores: Stores, sd_mounted: bool, writer: StepWriter) -> bool:
    """ovms_partition_table_mount_store2 (the caller has checked the table type)."""
    if stores.store2 is not None:
        writer.puts("Error: /store2 is already mounted")
        return False
    if sd_mounted:
        writer.puts("Error: Please unmount SD CARD before migrating store")
        return False
    stores.mount_store2(flash)
    writer.puts("Mounted /store2")
    return True


def unmount_store2(stores: Stores, writer: StepWriter) -> bool:
    if stores.store2 is None:
        writer.puts("Error: /store2 is not mounted")
        return False
    stores.unmount_store2()
    writer.puts("Unmounted /store2")
    return True


def migrate_store(flash: Flash, stores: Stores, writer: StepWriter, sd_mounted: bool = False) -> bool:
    """ovms_partition_table_migrate_store: copy /store into store2 (erased and mounted first unless mounted
    already); the old store stays as it is. Errors are written; returns success."""
    if stores.store2 is None:
        erase_store2(flash, writer)
        if not mount_store2(flash, stores, sd_mounted, writer):
            writer.puts("Error: Migration failed - could not mount /store2")
            return False
    if not copy_store(stores, writer):
        writer.puts("Error: Migration failed - could not copy /store to /store2")
        return False
    unmount_store2(stores, writer)
    writer.puts("Store migrated successfully - please check, and then proceed")
    return True


def _type_name(p: Partition) -> str:
    return f"{p.type_keyword}/{p.subtype_keyword}"

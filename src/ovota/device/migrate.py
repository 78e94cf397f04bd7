"""Partition-scheme migration v3-30 -> v3-34 -> v3-35, step by step as OVMS 3.3.006 does it.

Each call of :func:`next_step` inspects the flash (table type, running and boot partition) and performs
the one step that is due, then asks for a reboot. A power cut anywhere leaves a bootable module whose
config is intact, except inside the two partition-table rewrites (erase + program of the sector at
0x8000, two flash operations each): the ESP32 ROM bootloader only reads that sector, so there is no
second copy it could fall back to. Everything a rewrite needs (new table, copied store, verified images)
is prepared and checked before the erase, the table is programmed in one operation and read back.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import replace

from ovota.device.flash import SECTOR_SIZE, Flash
from ovota.device.images import verify_partition_image
from ovota.device.layout import LayoutType, read_layout
from ovota.device.ota import copy_partition, set_boot_partition
from ovota.device.records import RecordBanks, encode_json
from ovota.device.security import NO_SECURITY, Security
from ovota.device.store import BANK_SIZE, CONFIG_MAGIC
from ovota.formats.partition_table import APP, DATA, MAX_TABLE_LENGTH, Partition, PartitionTable
from ovota.formats.versions import strverscmp

STORE2 = Partition("store2", DATA, 0x81, 0xE10000, 0x1F0000)
NEW_SLOT = 0x700000
REQUIRED_FLASH = 16 * 1024 * 1024
MIN_VERSION = "3.3.006"  # the first release built for (and able to run from) the 7 MB slots
LOG_MAGIC = b"OVPL"
LOG_OFFSET = 2 * BANK_SIZE  # the step log lives after the config banks in /store
WARNING = "!! Do not power off the module while the upgrade is running !!"


class Restart(enum.Enum):
    PARTITION_UPDATE = "partition update"  # reboot into maintenance mode and continue there
    SOFT = "soft"  # reboot into normal mode


class MigrationError(Exception):
    """A refusal or failure, with OVMS's message."""


Say = Callable[[str], None]


# -- pure table transforms -------------------------------------------------------------------------------


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
    store2 = next(p for p in parts if (p.offset, p.size) == (STORE2.offset, STORE2.size))
    parts[factory] = replace(parts[factory], name="ota_0", subtype=0x10, size=NEW_SLOT)
    parts[ota0] = replace(parts[ota0], name="ota_1", subtype=0x11, offset=0x710000, size=NEW_SLOT)
    parts[ota1] = replace(store2, name="store")
    return PartitionTable(tuple(parts[: ota1 + 1]))


# -- flash steps --------------------------------------------------------------------------------------------


def rewrite_table(flash: Flash, offset: int, table: PartitionTable, say: Say) -> None:
    """Replace the partition table: the unprotected window is exactly these two flash operations."""
    data = table.to_binary()
    PartitionTable.from_binary(data).verify()  # never erase the old table for a new one that would not parse
    say(f"Erasing old partition table ({SECTOR_SIZE} bytes at 0x{offset:08x})...")
    flash.erase(offset, SECTOR_SIZE)
    say(f"Writing new partition table ({SECTOR_SIZE} bytes at 0x{offset:08x})...")
    flash.program(offset, data)
    if flash.read(offset, MAX_TABLE_LENGTH) != data:
        raise MigrationError("Error: partition table read-back does not match what was written")
    say("Partition table upgraded successfully - reboot required")


def _banks(flash: Flash, store: Partition, log: bool) -> RecordBanks:
    offset = store.offset + (LOG_OFFSET if log else 0)
    return RecordBanks(flash, offset, BANK_SIZE, LOG_MAGIC if log else CONFIG_MAGIC)


def read_log(flash: Flash, store: Partition) -> list[str]:
    loaded = _banks(flash, store, log=True).load()
    return list(json.loads(loaded[1])) if loaded else []


def append_log(flash: Flash, store: Partition, lines: list[str]) -> None:
    """/store/partition-update.log: the step log, saved once per step (crash-safe like the config)."""
    if lines:
        _banks(flash, store, log=True).save(encode_json(read_log(flash, store) + lines))


def copy_image_to_factory(flash: Flash, running: Partition, factory: Partition, say: Say) -> None:
    """Copy the running image into factory: only the sectors it uses (OVMS copies all 4 MB)."""
    used = len(flash.read(running.offset, running.size).rstrip(b"\xff"))
    copy_partition(flash, running, factory, min(factory.size, -(-used // SECTOR_SIZE) * SECTOR_SIZE), say)


def check_can_migrate(flash: Flash, layout_type: LayoutType, running_version: str) -> None:
    """Refusals that must come before anything is written."""
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


def next_step(
    flash: Flash,
    running: Partition,
    boot: Partition | None,
    running_version: str,
    maintenance: bool,
    say: Say,
    security: Security = NO_SECURITY,
) -> Restart | None:
    """Do the next due migration step. Returns how to reboot afterwards, None when nothing is left.
    ``security``: what the chip enforces, so the factory copy is checked as the bootloader will check it."""
    layout = read_layout(flash)
    kind = layout.type
    if kind is LayoutType.V3_35:
        say("v3-35 Partition table is already up to date")
        return None
    check_can_migrate(flash, kind, running_version)
    prefix = "v3-30" if kind is LayoutType.V3_30 else "v3-34"
    if not maintenance:
        if kind is LayoutType.V3_30:
            say("v3-30 Partition upgrade started, rebooting now into partition update mode...")
        else:
            say("v3-34 We need to upgrade the store partition to the new format, rebooting now...")
        say(f"{prefix} {WARNING}")
        return Restart.PARTITION_UPDATE
    factory = layout.factory
    store = layout.store
    if factory is None or store is None:
        raise MigrationError(f"{prefix} Error: Failed to find factory partition")
    if running != factory or boot != factory:
        if kind is LayoutType.V3_34:
            raise MigrationError("Error: Cannot upgrade partition table if running partition is not factory")
        say("v3-30 We need to copy the currently running partition to factory, and then reboot")
        if running != factory:
            copy_image_to_factory(flash, running, factory, say)
            if verify_partition_image(flash, factory, security) is not None:
                raise MigrationError("v3-30 Error: Failed to copy currently running partition to factory")
        set_boot_partition(flash, layout, factory, security=security)
        say("v3-30 Factory boot partition is ready and set to boot. Rebooting now...")
        say(f"v3-30 {WARNING}")
        return Restart.PARTITION_UPDATE
    if kind is LayoutType.V3_30:
        say("v3-30 The currently running partition is factory, so we can upgrade the partition table, and then reboot")
        upgrade_store_table(flash, layout.table_offset, layout.table, say)
        say("v3-30 Partition table store upgraded successfully, rebooting now...")
        say(f"v3-30 {WARNING}")
        return Restart.PARTITION_UPDATE
    say("v3-34 We need to upgrade the store partition to the new format, and then reboot")
    migrate_store(flash, store, say)
    upgrade_factory_table(flash, layout.table_offset, layout.table, say)
    say("v3-34 Store migrated successfully, factory partition table upgraded successfully, rebooting now...")
    return Restart.SOFT


def upgrade_store_table(flash: Flash, offset: int, table: PartitionTable, say: Say) -> None:
    """v3-30 -> v3-34: add store2 to the table (ovms_partition_table_upgrade_store)."""
    for p in table:
        say(f"0x{p.offset:08x} Skipping over {_type_name(p)} partition")
    new = with_store2(table)
    say("Added new store2 partition to partition table")
    _erase_store2(flash, say)
    say("Recalculated MD5 checksum")
    rewrite_table(flash, offset, new, say)


def upgrade_factory_table(flash: Flash, offset: int, table: PartitionTable, say: Say) -> None:
    """v3-34 -> v3-35 (ovms_partition_table_upgrade_factory); refuses before the store was migrated."""
    if _banks(flash, STORE2, log=False).load() is None:
        raise MigrationError("v3-34 Error: store has not been migrated to store2 yet")
    new = without_factory(table)
    for p in table.partitions[:3]:
        say(f"0x{p.offset:08x} Skipping over {_type_name(p)} partition")
    say("0x00010000 Converted factory partition to 6MB OTA 0")
    say("0x00710000 Converted OTA 0 partition to 6MB OTA 1")
    say("0x00e10000 Moved data/fat partition up two positions")
    say("           Recalculated MD5 checksum")
    rewrite_table(flash, offset, new, say)


def _erase_store2(flash: Flash, say: Say) -> None:
    say(f"Erasing store2 data ({STORE2.size} bytes)...")
    # The record banks' header sectors are what makes a record valid: erasing them clears any stale copy.
    for bank in range(4):
        flash.erase(STORE2.offset + bank * BANK_SIZE, SECTOR_SIZE)


def migrate_store(flash: Flash, store: Partition, say: Say) -> None:
    """ovms_partition_table_migrate_store: copy /store's config and log into store2; the old store stays."""
    _erase_store2(flash, say)
    say("Mounted /store2")
    say("Copy /store -> /store2 ...")
    config = _banks(flash, store, log=False).load()
    copied = 0
    if config is not None:
        say("Copy file: /store/ovms_config -> /store2/ovms_config")
        _banks(flash, STORE2, log=False).save(config[1])
        copied += 1
    say("Postponing log output file /store/partition-update.log")
    log = _banks(flash, store, log=True).load()
    if log is not None:
        _banks(flash, STORE2, log=True).save(log[1])
        copied += 1
    copy = _banks(flash, STORE2, log=False).load()
    if config is not None and (copy is None or copy[1] != config[1]):
        raise MigrationError("v3-34 Store migration failed")
    say(f"Copy finished: {copied} files copied, 0 errors")
    say("Unmounted /store2")
    say("Store migrated successfully - please check, and then proceed")


def _type_name(p: Partition) -> str:
    return f"{p.type_keyword}/{p.subtype_keyword}"

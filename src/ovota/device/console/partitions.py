"""``ota partitions upgrade|store …`` and the partition-update (maintenance) boot, with OVMS's strings.

Run from the console, the commands print to the console. In a partition-update boot the step writes only to
/store/partition-update.log (OVMS's FileWriter with log_writes: each line appended, and logged with tag
``file-writer``).
"""

from __future__ import annotations

from collections.abc import Callable

from ovota.device.console.exclusive import BUSY_TABLE, exclusive
from ovota.device.console.session import Session
from ovota.device.console.tree import Command
from ovota.device.fat_store import VolumeError
from ovota.device.layout import Layout, LayoutType, read_layout
from ovota.device.migrate import (
    MigrationError,
    Restart,
    autocont,
    check_can_migrate,
    downgrade_store_table,
    migrate_store,
    mount_store2,
    store_migrated,
    unmount_store2,
    upgrade_factory_table,
    upgrade_store_table,
)
from ovota.device.store_copy import LogFileWriter, StepWriter
from ovota.formats.versions import strverscmp

NOTIFY_VERSION = "3.3.006"
PARTITION_ALERT = (
    "The module is running an outdated flash partitioning scheme.\n"
    "OTA updates {} working due to its 4MB firmware size limit.\n"
    "Upgrading is recommended to leverage the limit to 7MB.\n"
    "To upgrade, open the web UI, menu Config -> Partitioning.\n"
)
NOT_V3_30 = "Error: Cannot upgrade partition tables not in factory (factory, ota1, ota2, 1MB store) format"
NOT_V3_34_DOWNGRADE = (
    "Error: Cannot downgrade partition tables not in extended store (factory, ota1, ota2, dual store) format"
)
NOT_V3_34_MIGRATE = "Error: Cannot migrate store - partition table is not in v3-34 format"
NOT_V3_34_MOUNT = "Error: Cannot mount store - partition table is not in v3-34 format"
NOT_V3_34_FACTORY = "Error: Cannot upgrade factory - partition table is not in v3-34 format"
NOT_FACTORY_RUNNING = "Error: Cannot upgrade partition table if running partition is not factory"
NOT_FACTORY_BOOT = "Error: Cannot upgrade partition table if boot partition is not factory"


def register(partitions: Command, layout_type: LayoutType) -> None:
    """Built at every boot, from the table the boot found."""
    if layout_type is LayoutType.V3_35:
        return  # OVMS registers the upgrade commands only while the table is not v3-35
    upgrade = partitions.add(Command("upgrade", "Upgrade partition table"))
    upgrade.add(
        Command(
            "factory",
            "Upgrade factory partition table to dual OTA",
            exclusive(upgrade_factory, BUSY_TABLE),
            "[-noconfirm]",
            0,
            1,
        )
    )
    upgrade.add(
        Command(
            "autocont",
            "Upgrade partition table automatically",
            exclusive(upgrade_autocont, BUSY_TABLE),
            "[-noconfirm]",
            0,
            1,
        )
    )
    store = partitions.add(Command("store", "Store partition"))
    store.add(
        Command(
            "upgrade", "Upgrade and extend store partition", exclusive(store_upgrade, BUSY_TABLE), "[-noconfirm]", 0, 1
        )
    )
    store.add(
        Command("downgrade", "Downgrade store partition", exclusive(store_downgrade, BUSY_TABLE), "[-noconfirm]", 0, 1)
    )
    store.add(Command("mount", "Mount store2", exclusive(store_mount, BUSY_TABLE)))
    store.add(Command("unmount", "Unmount store2", exclusive(store_unmount, BUSY_TABLE)))
    store.add(
        Command("migrate", "Migrate store to new partition", exclusive(store_migrate, BUSY_TABLE), "[-noconfirm]", 0, 1)
    )


def _confirmed(session: Session, args: list[str], question: str, aborted: str) -> bool:
    """OVMS: anything but ``-noconfirm`` asks; any answer but ``y`` aborts."""
    if args[:1] == ["-noconfirm"]:
        return True
    if session.ask(f"{question} (y/n): ") == "y":
        return True
    session.out.puts(aborted)
    return False


def _console(session: Session) -> StepWriter:
    return StepWriter(session.out.puts)


def _table(session: Session) -> Layout:
    """The table as it is on flash now (OVMS reads it for every operation; a rewrite updates its cached type)."""
    return read_layout(session.module.flash)


def _run(session: Session, step: Callable[[StepWriter], None]) -> None:
    writer = _console(session)
    try:
        step(writer)
    except MigrationError as err:
        writer.puts(str(err))


# -- autocont and the partition-update boot -----------------------------------------------------------------


def upgrade_autocont(session: Session, args: list[str]) -> None:
    if not _confirmed(session, args, "Upgrade partition table automatically", "Partition table upgrade aborted"):
        return
    m = session.module
    writer = _console(session)
    try:
        restart = autocont(m.flash, m.running, m.boot_partition, m.running_version, False, writer, m.stores, m.security)
    except MigrationError as err:
        writer.puts(str(err))
        return
    if restart is not None:
        session.restart(partition_update=restart is Restart.PARTITION_UPDATE)


def system_start(session: Session) -> bool:
    """OvmsOTA::SystemStart and CheckNotifyPartitionType, run at every boot. True in maintenance mode
    (the partition update ran and the module restarted, so nothing else of this boot happens)."""
    m = session.module
    if m.partition_update:
        session.log("Checking for partition update...")
        if m.layout.type is LayoutType.V3_35:
            session.log("Partition update finished, rebooting into standard mode")
            session.restart()
            return True
        session.log("Partition table is not up to date, continuing to upgrade the partition table")
        restart, finished = _maintenance_step(session)
        if restart is None:
            if finished:
                session.log("Partition update finished, rebooting into standard mode")
            else:
                session.log("Aborting partition update, rebooting into standard mode")
        session.restart(partition_update=restart is Restart.PARTITION_UPDATE)
        return True
    if (
        m.layout.type is not LayoutType.V3_35
        and strverscmp(m.version_string, m.config.get("ota", "parttype.notifyversion", NOTIFY_VERSION)) >= 0
        and not m.config.get_bool("ota", "parttype.notified", False)
    ):
        session.notify("info", "ota.partitiontype", PARTITION_ALERT.format("will soon stop"))
        m.config.set("ota", "parttype.notified", "yes")
    return False


def _maintenance_step(session: Session) -> tuple[Restart | None, bool]:
    """autocont with the FileWriter on /store/partition-update.log: (how to reboot, whether it succeeded)."""
    m = session.module
    writer = LogFileWriter(m.stores, session.log)
    try:
        restart = autocont(m.flash, m.running, m.boot_partition, m.running_version, True, writer, m.stores, m.security)
    except (MigrationError, VolumeError) as err:
        writer.puts(str(err))
        return None, False
    return restart, True


# -- the step commands --------------------------------------------------------------------------------------


def upgrade_factory(session: Session, args: list[str]) -> None:
    m = session.module
    layout = _table(session)
    refusal = None
    if layout.type is not LayoutType.V3_34:
        refusal = NOT_V3_34_FACTORY
    elif m.running != layout.factory:
        refusal = NOT_FACTORY_RUNNING
    elif m.boot_partition != layout.factory:
        refusal = NOT_FACTORY_BOOT
    else:
        try:
            check_can_migrate(m.flash, layout.type, m.running_version)
        except MigrationError as err:
            refusal = str(err)
        if refusal is None and not store_migrated(m.flash, m.stores):
            refusal = "v3-34 Error: store has not been migrated to store2 yet"
    if refusal is not None:
        session.out.puts(refusal)
        return
    question, aborted = "Upgrade partition table to new format", "Partition table upgrade aborted"
    if _confirmed(session, args, question, aborted):
        _run(session, lambda w: upgrade_factory_table(m.flash, layout.table_offset, layout.table, w, m.stores))


def store_upgrade(session: Session, args: list[str]) -> None:
    m = session.module
    layout = _table(session)
    if layout.type is not LayoutType.V3_30:
        session.out.puts(NOT_V3_30)
        return
    if _confirmed(session, args, "Upgrade store partition to new format", "Store upgrade aborted"):
        _run(session, lambda w: upgrade_store_table(m.flash, layout.table_offset, layout.table, w))


def store_downgrade(session: Session, args: list[str]) -> None:
    layout = _table(session)
    if layout.type is not LayoutType.V3_34:
        session.out.puts(NOT_V3_34_DOWNGRADE)
        return
    if not _confirmed(session, args, "Downgrade store partition to old format", "Store downgrade aborted"):
        return
    writer = _console(session)
    stores = session.module.stores
    if stores.store2 is not None:
        unmount_store2(stores, writer)
    _run(session, lambda w: downgrade_store_table(session.module.flash, layout.table_offset, layout.table, w))


def store_mount(session: Session, args: list[str]) -> None:
    if _table(session).type is not LayoutType.V3_34:
        session.out.puts(NOT_V3_34_MOUNT)
        return
    m = session.module
    mount_store2(m.flash, m.stores, m.sd_dir is not None, _console(session))


def store_unmount(session: Session, args: list[str]) -> None:
    unmount_store2(session.module.stores, _console(session))


def store_migrate(session: Session, args: list[str]) -> None:
    m = session.module
    layout = _table(session)
    if layout.type is not LayoutType.V3_34 or layout.store is None:
        session.out.puts(NOT_V3_34_MIGRATE)
        return
    if _confirmed(session, args, "Migrate store to new partition", "Store migration aborted"):
        migrate_store(m.flash, m.stores, _console(session), m.sd_dir is not None)

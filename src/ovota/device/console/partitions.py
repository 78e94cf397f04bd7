"""``ota partitions upgrade|store …`` and the partition-update (maintenance) boot, with OVMS's strings."""

from __future__ import annotations

from collections.abc import Callable

from ovota.device.console.session import Session
from ovota.device.console.tree import Command
from ovota.device.layout import LayoutType, read_layout
from ovota.device.migrate import (
    MigrationError,
    Restart,
    Say,
    append_log,
    check_can_migrate,
    migrate_store,
    next_step,
    read_log,
    upgrade_factory_table,
    upgrade_store_table,
)
from ovota.formats.versions import strverscmp

NOTIFY_VERSION = "3.3.006"
PARTITION_ALERT = (
    "The module is running an outdated flash partitioning scheme.\n"
    "OTA updates {} working due to its 4MB firmware size limit.\n"
    "Upgrading is recommended to leverage the limit to 7MB.\n"
    "To upgrade, open the web UI, menu Config -> Partitioning.\n"
)


def register(partitions: Command, layout_type: LayoutType) -> None:
    partitions.add(Command("log", "Show /store/partition-update.log", partitions_log))
    if layout_type is LayoutType.V3_35:
        return  # OVMS registers the upgrade commands only while the table is not v3-35
    upgrade = partitions.add(Command("upgrade", "Upgrade partition table"))
    upgrade.add(Command("autocont", "Upgrade partition table automatically", upgrade_autocont, "[-noconfirm]", 0, 1))
    upgrade.add(
        Command("factory", "Upgrade factory partition table to dual OTA", upgrade_factory, "[-noconfirm]", 0, 1)
    )
    store = partitions.add(Command("store", "Store partition"))
    store.add(Command("upgrade", "Upgrade and extend store partition", store_upgrade, "[-noconfirm]", 0, 1))
    store.add(Command("migrate", "Migrate store to new partition", store_migrate, "[-noconfirm]", 0, 1))


def _confirmed(session: Session, args: list[str], question: str, aborted: str) -> bool:
    if args == ["-noconfirm"]:
        return True
    if args:
        session.out.puts("Usage: [-noconfirm]")
        return False
    if session.ask(f"{question} (y/n): ") == "y":
        return True
    session.out.puts(aborted)
    return False


def _say_and_log(session: Session, lines: list[str]) -> Say:
    def say(line: str) -> None:
        session.out.puts(line)
        lines.append(line)

    return say


def run_step(session: Session, maintenance: bool) -> Restart | None:
    """One migration step, its lines saved to the step log in /store. Refusals write nothing."""
    m = session.module
    if m.layout.type is not LayoutType.V3_35:
        try:
            check_can_migrate(m.flash, m.layout.type, m.running_version)
        except MigrationError as err:
            session.out.puts(str(err))
            return None
    lines: list[str] = []
    say = _say_and_log(session, lines)
    failed = False
    try:
        restart = next_step(m.flash, m.running, m.boot_partition, m.running_version, maintenance, say, m.security)
    except MigrationError as err:
        say(str(err))
        restart, failed = None, True
    if restart is not None or failed:
        _save_log(session, lines)
    return restart


def _save_log(session: Session, lines: list[str]) -> None:
    # The table may have just changed: the log goes to whatever /store is now.
    store = read_layout(session.module.flash).store
    if store is not None:
        append_log(session.module.flash, store, lines)


def upgrade_autocont(session: Session, args: list[str]) -> None:
    if _confirmed(session, args, "Upgrade partition table automatically", "Partition table upgrade aborted"):
        restart = run_step(session, maintenance=False)
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
        restart = run_step(session, maintenance=True)
        if restart is None:
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


def _manual(session: Session, args: list[str], question: str, aborted: str, wanted: LayoutType) -> bool:
    m = session.module
    if not _confirmed(session, args, question, aborted):
        return False
    try:
        check_can_migrate(m.flash, m.layout.type, m.running_version)
    except MigrationError as err:
        session.out.puts(str(err))
        return False
    if m.layout.type is not wanted:
        session.out.puts(f"Error: this step needs a {wanted.value.split()[0]} partition table")
        return False
    if m.running != m.layout.factory:
        session.out.puts("Error: Cannot upgrade partition table if running partition is not factory")
        return False
    if m.boot_partition != m.layout.factory:
        session.out.puts("Error: Cannot upgrade partition table if boot partition is not factory")
        return False
    return True


def store_upgrade(session: Session, args: list[str]) -> None:
    m = session.module
    if _manual(session, args, "Upgrade store partition to new format", "Store upgrade aborted", LayoutType.V3_30):
        _guarded(session, lambda say: upgrade_store_table(m.flash, m.layout.table_offset, m.layout.table, say))


def store_migrate(session: Session, args: list[str]) -> None:
    m = session.module
    store = m.layout.store
    if store and _manual(session, args, "Migrate store to new partition", "Store migration aborted", LayoutType.V3_34):
        _guarded(session, lambda say: migrate_store(m.flash, store, say))


def upgrade_factory(session: Session, args: list[str]) -> None:
    m = session.module
    question, aborted = "Upgrade partition table to new format", "Partition table upgrade aborted"
    if _manual(session, args, question, aborted, LayoutType.V3_34):
        _guarded(session, lambda say: upgrade_factory_table(m.flash, m.layout.table_offset, m.layout.table, say))


def _guarded(session: Session, step: Callable[[Say], None]) -> None:
    lines: list[str] = []
    say = _say_and_log(session, lines)
    try:
        step(say)
    except MigrationError as err:
        say(str(err))
    _save_log(session, lines)


def partitions_log(session: Session, args: list[str]) -> None:
    store = session.module.layout.store
    for line in read_log(session.module.flash, store) if store else []:
        session.out.puts(line)

"""``ota partitions upgrade|store …`` and the partition-update (maintenance) boot, with OVMS's strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from ovota.device.console.shell import Shell

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


def _confirmed(shell: Shell, args: list[str], question: str, aborted: str) -> bool:
    if args == ["-noconfirm"]:
        return True
    if args:
        shell.out.puts("Usage: [-noconfirm]")
        return False
    if shell.ask(f"{question} (y/n): ") == "y":
        return True
    shell.out.puts(aborted)
    return False


def _say_and_log(shell: Shell, lines: list[str]) -> Say:
    def say(line: str) -> None:
        shell.out.puts(line)
        lines.append(line)

    return say


def run_step(shell: Shell, maintenance: bool) -> Restart | None:
    """One migration step, its lines saved to the step log in /store. Refusals write nothing."""
    m = shell.module
    if m.layout.type is not LayoutType.V3_35:
        try:
            check_can_migrate(m.flash, m.layout.type, m.running_version)
        except MigrationError as err:
            shell.out.puts(str(err))
            return None
    lines: list[str] = []
    say = _say_and_log(shell, lines)
    failed = False
    try:
        restart = next_step(m.flash, m.running, m.boot_partition, m.running_version, maintenance, say)
    except MigrationError as err:
        say(str(err))
        restart, failed = None, True
    if restart is not None or failed:
        _save_log(shell, lines)
    return restart


def _save_log(shell: Shell, lines: list[str]) -> None:
    # The table may have just changed: the log goes to whatever /store is now.
    store = read_layout(shell.module.flash).store
    if store is not None:
        append_log(shell.module.flash, store, lines)


def upgrade_autocont(shell: Shell, args: list[str]) -> None:
    if _confirmed(shell, args, "Upgrade partition table automatically", "Partition table upgrade aborted"):
        restart = run_step(shell, maintenance=False)
        if restart is not None:
            shell.restart(partition_update=restart is Restart.PARTITION_UPDATE)


def system_start(shell: Shell) -> bool:
    """OvmsOTA::SystemStart and CheckNotifyPartitionType, run at every boot. True in maintenance mode
    (the partition update ran and the module restarted, so nothing else of this boot happens)."""
    m = shell.module
    if m.partition_update:
        shell.log("Checking for partition update...")
        if m.layout.type is LayoutType.V3_35:
            shell.log("Partition update finished, rebooting into standard mode")
            shell.restart()
            return True
        shell.log("Partition table is not up to date, continuing to upgrade the partition table")
        restart = run_step(shell, maintenance=True)
        if restart is None:
            shell.log("Aborting partition update, rebooting into standard mode")
        shell.restart(partition_update=restart is Restart.PARTITION_UPDATE)
        return True
    if (
        m.layout.type is not LayoutType.V3_35
        and strverscmp(m.version_string, m.config.get("ota", "parttype.notifyversion", NOTIFY_VERSION)) >= 0
        and not m.config.get_bool("ota", "parttype.notified", False)
    ):
        shell.notify("info", "ota.partitiontype", PARTITION_ALERT.format("will soon stop"))
        m.config.set("ota", "parttype.notified", "yes")
    return False


def _manual(shell: Shell, args: list[str], question: str, aborted: str, wanted: LayoutType) -> bool:
    m = shell.module
    if not _confirmed(shell, args, question, aborted):
        return False
    try:
        check_can_migrate(m.flash, m.layout.type, m.running_version)
    except MigrationError as err:
        shell.out.puts(str(err))
        return False
    if m.layout.type is not wanted:
        shell.out.puts(f"Error: this step needs a {wanted.value.split()[0]} partition table")
        return False
    if m.running != m.layout.factory:
        shell.out.puts("Error: Cannot upgrade partition table if running partition is not factory")
        return False
    if m.boot_partition != m.layout.factory:
        shell.out.puts("Error: Cannot upgrade partition table if boot partition is not factory")
        return False
    return True


def store_upgrade(shell: Shell, args: list[str]) -> None:
    m = shell.module
    if _manual(shell, args, "Upgrade store partition to new format", "Store upgrade aborted", LayoutType.V3_30):
        _guarded(shell, lambda say: upgrade_store_table(m.flash, m.layout.table_offset, m.layout.table, say))


def store_migrate(shell: Shell, args: list[str]) -> None:
    m = shell.module
    store = m.layout.store
    if store and _manual(shell, args, "Migrate store to new partition", "Store migration aborted", LayoutType.V3_34):
        _guarded(shell, lambda say: migrate_store(m.flash, store, say))


def upgrade_factory(shell: Shell, args: list[str]) -> None:
    m = shell.module
    question, aborted = "Upgrade partition table to new format", "Partition table upgrade aborted"
    if _manual(shell, args, question, aborted, LayoutType.V3_34):
        _guarded(shell, lambda say: upgrade_factory_table(m.flash, m.layout.table_offset, m.layout.table, say))


def _guarded(shell: Shell, step: Callable[[Say], None]) -> None:
    lines: list[str] = []
    say = _say_and_log(shell, lines)
    try:
        step(say)
    except MigrationError as err:
        say(str(err))
    _save_log(shell, lines)


def partitions_log(shell: Shell, args: list[str]) -> None:
    store = shell.module.layout.store
    for line in read_log(shell.module.flash, store) if store else []:
        shell.out.puts(line)

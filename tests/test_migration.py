"""Partition-scheme migration v3-30 -> v3-34 -> v3-35 (issue #5), with OVMS 3.3.006's output and commands."""

from __future__ import annotations

import hashlib
import io
import mmap
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ovota.device import store_copy
from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.fat_store import VolumeError
from ovota.device.flash import Flash, PowerCut, PowerLoss
from ovota.device.layout import LayoutType, read_layout
from ovota.device.migrate import downgraded_binary, with_store2, without_factory
from ovota.device.module import Module, create_module
from ovota.device.store_copy import STORE2, StepWriter
from ovota.device.store_volume import StoreVolume
from ovota.formats.partition_table import PartitionTable
from tests.conftest import CliRunner
from tests.loops import in_thread
from tests.module_helpers import REPLAY_CLOCK, fat_windows, image, run_commands, store_of
from tests.servers import StaticServer

FACTORY = "3.3.005"
OTA0 = "3.3.006-10-gaaaaaaa"
OTA1 = "3.3.006-20-gbbbbbbb"
UPGRADE = "ota partitions upgrade autocont -noconfirm"
SETTINGS = [
    "config set ota tag edge",
    "config set ota server 127.0.0.1:9/firmware/ota",
    "config set ota auto.hour 4",
    "config set vehicle id DEMO",
    "config set auto ota no",
]
LOG = "/store/partition-update.log"
WARNING = "!! Do not power off the module while the upgrade is running !!"

# The strings of ovms-ota.md §12.3 and ovms-twin.md §4, for the module of old_module().
BEFORE_REBOOT = [
    "v3-30 Partition upgrade started, rebooting now into partition update mode...",
    f"v3-30 {WARNING}",
]
FACTORY_COPY = [
    "v3-30 We need to copy the currently running partition to factory, and then reboot",
    *(
        f"OTA Factory Copy: {percent}% progress ({n * 262144} bytes)"
        for n, percent in enumerate((6, 12, 18, 25, 31, 37, 43, 50, 56, 62, 68, 75, 81, 87, 93, 100), start=1)
    ),
    "OTA copy complete",
    "v3-30 Factory boot partition is ready and set to boot. Rebooting now...",
    f"v3-30 {WARNING}",
]
SKIP_V3_30 = [
    "0x00009000 Skipping over data/nvs partition",
    "0x0000d000 Skipping over data/ota partition",
    "0x0000f000 Skipping over data/phy partition",
    "0x00010000 Skipping over app/factory partition",
    "0x00410000 Skipping over app/ota_0 partition",
    "0x00810000 Skipping over app/ota_1 partition",
    "0x00c10000 Skipping over data/fat partition",
]
TABLE_WRITE = [
    "Erasing old partition table (4096 bytes at 0x00008000)...",
    "Writing new partition table (4096 bytes at 0x00008000)...",
]
STORE_TABLE = [
    *SKIP_V3_30,
    "Added new store2 partition to partition table",
    "Erasing store2 data (2031616 bytes)...",
    "Recalculated MD5 checksum",
    *TABLE_WRITE,
    "Partition table upgraded successfully - reboot required",
]
STORE_STEP = [
    "v3-30 The currently running partition is factory, so we can upgrade the partition table, and then reboot",
    *STORE_TABLE,
    "v3-30 Partition table store upgraded successfully, rebooting now...",
    f"v3-30 {WARNING}",
]
CONFIG_COPY = [  # in directory order: the order SETTINGS created the files
    f"Copy file: /store/ovms_config/{param} -> /store2/ovms_config/{param}" for param in ("ota", "vehicle", "auto")
]
MIGRATE_TO_LOG_COPY = [
    "v3-34 We need to upgrade the store partition to the new format, and then reboot",
    "Erasing store2 data (2031616 bytes)...",
    "Mounted /store2",
    "Copy /store -> /store2 ...",
    "Scanning directory: /store",
    "Create directory: /store2/ovms_config",
    "Queued directory: /store/ovms_config",
    "Postponing log output file /store/partition-update.log",
    "Scanning directory: /store/ovms_config",
    *CONFIG_COPY,
    "Copy file: /store/partition-update.log -> /store2/partition-update.log",
]
FACTORY_TABLE = [
    "0x00009000 Skipping over data/nvs partition",
    "0x0000d000 Skipping over data/ota partition",
    "0x0000f000 Skipping over data/phy partition",
    "0x00010000 Converted factory partition to 6MB OTA 0",
    "0x00710000 Converted OTA 0 partition to 6MB OTA 1",
    "0x00e10000 Moved data/fat partition up two positions",
    "           Recalculated MD5 checksum",
    *TABLE_WRITE,
    "Partition table upgraded successfully - reboot required",
]
AFTER_LOG_COPY = [
    "Copy finished: 4 files copied, 0 errors",
    "Unmounted /store2",
    "Store migrated successfully - please check, and then proceed",
    *FACTORY_TABLE,
    "v3-34 Store migrated successfully, factory partition table upgraded successfully, rebooting now...",
]
MAINTENANCE_START = [
    "Checking for partition update...",
    "Partition table is not up to date, continuing to upgrade the partition table",
]


def old_module(tmp_path: Path, size: int = 65536, name: str = "old.img") -> Path:
    """A v3-30 module with firmware in factory, ota_0 and ota_1, running ota_1, and a configured /store."""
    flash = tmp_path / name
    create_module(flash, "v3-30", image(FACTORY, size))
    sd = tmp_path / "sd"
    sd.mkdir(exist_ok=True)
    (sd / "a.bin").write_bytes(image(OTA0, size))
    (sd / "b.bin").write_bytes(image(OTA1, size))
    out = run_commands(
        flash, *SETTINGS, "ota flash vfs /sd/a.bin", "module reset", "ota flash vfs /sd/b.bin", "module reset", sd=sd
    ).output
    assert "Error" not in out, out
    return flash


def config_of(flash: Path) -> dict[str, dict[str, str]]:
    module = Module.open(flash)
    try:
        return module.config.snapshot()
    finally:
        module.close()


def layout_of(flash: Path) -> LayoutType:
    with Flash(flash) as f:
        return read_layout(f).type


def log_lines(output: str, tag: str) -> list[str]:
    """The messages of the ESP-IDF log lines ``I (<ms>) <tag>: <message>`` in console output."""
    return re.findall(rf"^I \(\d+\) {re.escape(tag)}: (.*)$", output, re.MULTILINE)


def transcript(path: Path, *commands: str, sd: Path | None = None) -> str:
    """Console commands run in-process, their output after an ``OVMS# <command>`` line as `module run` shows it."""

    def run() -> str:
        stream = io.StringIO()
        with Flash(path) as flash:
            shell = Shell(Module(flash, sd), Writer(stream))
            for command in commands:
                stream.write(f"OVMS# {command}\n")
                shell.execute(command)
        return stream.getvalue()

    return in_thread(run)


def after(output: str, command: str) -> list[str]:
    """The console lines a command printed (up to the next prompt)."""
    return output.split(f"OVMS# {command}\n", 1)[1].split("OVMS# ", 1)[0].splitlines()


def console_only(lines: list[str]) -> list[str]:
    """Lines the command itself wrote, without the log lines of the boots it caused."""
    return [line for line in lines if not re.match(r"^[IWE] \(\d+\) ", line)]


def test_upgrade_reaches_the_esp_idf_v3_35_table(tmp_path: Path, vectors: Path, ovota: CliRunner) -> None:
    flash = old_module(tmp_path)
    before = config_of(flash)
    run = ovota("module", "run", flash, "--", UPGRADE, "ota status nocheck", f"vfs cat {LOG}")
    assert run.code == 0, run.out
    table = flash.read_bytes()[0x8000:0x8C00]
    assert table == (vectors / "partition_tables/ovms_v3-35_ota_only.bin").read_bytes()
    status = after(run.out, "ota status nocheck")
    assert status[1].startswith(f"Firmware:          {OTA1}/ota_0/edge (build ")
    assert status[1].endswith(", product v3.3-5)")
    assert status[2] == "Partition type:    v3-35 (ota1, ota2, no factory, maximized store)"
    assert status[4:6] == ["Running partition: ota_0", "Boot partition:    ota_0"]
    assert config_of(flash) == before
    # The user's console shows what was printed before the reboot into partition-update mode; there, every
    # step line goes only to the log file, echoed as a file-writer log line.
    upgrade = after(run.out, UPGRADE)
    assert console_only(upgrade) == BEFORE_REBOOT
    steps = FACTORY_COPY + STORE_STEP + MIGRATE_TO_LOG_COPY
    assert log_lines(run.out, "file-writer") == [
        *(f"{LOG}: {line}" for line in steps),
        "Migrating to write to /store2/partition-update.log",
        *(f"/store2/partition-update.log: {line}" for line in AFTER_LOG_COPY),
    ]
    assert log_lines(run.out, "ota") == MAINTENANCE_START * 3
    # The log file now lives in the v3-35 store (the former store2). The lines after "Unmounted /store2" are only
    # in the ESP log: the writer's file is on the volume just unmounted, and FatFs refuses writes to it.
    assert after(run.out, f"vfs cat {LOG}") == [*steps, *AFTER_LOG_COPY[:1]]
    again = ovota("module", "run", flash, "--", "ota partitions list", "ota partitions")
    assert "Digest:          520877a00f2b1f7506844246b950ab23 pass" in again.out
    assert "upgrade" not in after(again.out, "ota partitions")  # gone on v3-35
    assert "store" not in after(again.out, "ota partitions")


def test_intermediate_tables_match_ovms(tmp_path: Path, vectors: Path) -> None:
    raw = (vectors / "partition_tables/ovms_v3-30_factory_ota.bin").read_bytes()
    old = PartitionTable.from_binary(raw)
    v34 = with_store2(old).to_binary()
    assert v34[0x100:0x110] == b"\xeb\xeb" + b"\xff" * 14
    assert v34[0x110:0x120].hex() == "b0a4220846381b6bcf0c89bb0a84e63d"  # OVMS's v3-34 digest
    v35 = without_factory(PartitionTable.from_binary(v34)).to_binary()
    assert v35 == (vectors / "partition_tables/ovms_v3-35_ota_only.bin").read_bytes()
    # The downgrade puts the MD5 record into store2's slot, zeroed first (OVMS's memset), then voids the next.
    back = downgraded_binary(PartitionTable.from_binary(v34))
    assert PartitionTable.from_binary(back) == old
    assert back[0xE0:0xF0] == b"\xeb\xeb" + bytes(14)
    assert back[0xF0:0x100].hex() == "cfe36765a6bfe1b802a2abd4ec9f6851"  # the v3-30 digest
    assert back[:0xE0] == raw[:0xE0] and back[0x100:] == b"\xff" * (len(back) - 0x100)


def test_a_6mb_image_flashes_after_migrating(tmp_path: Path, ovota: CliRunner) -> None:
    flash = old_module(tmp_path)
    big = image("3.3.007", 6 * 1024 * 1024)
    sd = tmp_path / "sd"
    (sd / "big.bin").write_bytes(big)
    refused = ovota("module", "run", flash, "--sd", sd, "--", "ota flash vfs /sd/big.bin")
    assert "Consider upgrading your partitioning scheme to v3-35." in refused.out
    assert (
        "Notification alert/ota.partitiontype: The module is running an outdated flash partitioning scheme."
        in refused.out
    )
    assert ovota("module", "run", flash, "--", UPGRADE).code == 0
    root = tmp_path / "www"
    root.mkdir()
    server = StaticServer(root)
    try:
        server.publish("v3.3-5", "edge", big, "3.3.007\n")
        run = ovota(
            "module", "run", flash, "--",
            f"config set ota server {server.base}", "ota status", "ota flash http", "module reset",
            "ota status nocheck",
        )  # fmt: skip
    finally:
        server.stop()
    assert run.code == 0, run.out
    assert "Server Available:  3.3.007 (is newer)" in run.out
    assert f"Expected file size is {6 * 1024 * 1024}" in run.out
    assert "Firmware:          3.3.007/ota_1/edge" in run.out


def _refused(flash: Path, ovota: CliRunner, message: str) -> None:
    digest = hashlib.sha256(flash.read_bytes()).hexdigest()
    run = ovota("module", "run", flash, "--", UPGRADE)
    assert run.code == 1
    assert message in run.out.splitlines(), run.out
    assert hashlib.sha256(flash.read_bytes()).hexdigest() == digest  # nothing written


def test_refusals_write_nothing(tmp_path: Path, ovota: CliRunner) -> None:
    too_old = tmp_path / "too-old.img"
    create_module(too_old, "v3-30", image("3.3.005", 8192))
    run_commands(too_old)  # first boot records the slot in otadata
    _refused(
        too_old, ovota,
        "Error: running firmware 3.3.005 cannot run on the v3-35 layout; update to 3.3.006 or later first",
    )  # fmt: skip
    small = tmp_path / "8mb.img"
    create_module(small, "8MB", image("3.3.006", 8192))
    run_commands(small)
    _refused(small, ovota, "Error: the v3-35 layout needs 16 MB of flash, this module has 8 MB")
    unknown = tmp_path / "unknown.img"
    create_module(unknown, "v3-35", image("3.3.006", 8192))
    odd = PartitionTable.from_csv(
        "nvs,data,nvs,0x9000,0x4000\notadata,data,ota,0xd000,0x2000\nphy_init,data,phy,0xf000,0x1000\n"
        "ota_0,app,ota_0,0x10000,7M\nota_1,app,ota_1,0x710000,7M\nstore,data,fat,0xe10000,1M\n"
    )
    with Flash(unknown) as f:
        f.erase(0x8000, 0x1000)
        f.program(0x8000, odd.to_binary())
    run_commands(unknown)
    _refused(unknown, ovota, "Error: Unknown partition table type")
    out = transcript(unknown, "ota partitions upgrade factory", "ota partitions store upgrade")
    assert after(out, "ota partitions upgrade factory") == [
        "Error: Cannot upgrade factory - partition table is not in v3-34 format"
    ]
    assert after(out, "ota partitions store upgrade") == [
        "Error: Cannot upgrade partition tables not in factory (factory, ota1, ota2, 1MB store) format"
    ]


def test_checks_come_before_the_prompts(tmp_path: Path, pristine: Path) -> None:
    """Each step command checks the table (and `upgrade factory` the running and boot partitions) first, then
    asks; without an interactive user the answer is empty, which aborts."""
    flash = tmp_path / "m.img"
    shutil.copyfile(pristine, flash)
    v3_30 = {  # on v3-30, running ota_1
        "ota partitions upgrade autocont": [
            "Upgrade partition table automatically (y/n): ",
            "Partition table upgrade aborted",
        ],
        "ota partitions upgrade factory": ["Error: Cannot upgrade factory - partition table is not in v3-34 format"],
        "ota partitions store upgrade": ["Upgrade store partition to new format (y/n): ", "Store upgrade aborted"],
        "ota partitions store upgrade no": ["Upgrade store partition to new format (y/n): ", "Store upgrade aborted"],
        "ota partitions store downgrade": [
            "Error: Cannot downgrade partition tables not in extended store (factory, ota1, ota2, dual store) format"
        ],
        "ota partitions store mount": ["Error: Cannot mount store - partition table is not in v3-34 format"],
        "ota partitions store unmount": ["Error: /store2 is not mounted"],
        "ota partitions store migrate": ["Error: Cannot migrate store - partition table is not in v3-34 format"],
    }
    out = transcript(flash, *v3_30)
    assert {command: after(out, command) for command in v3_30} == v3_30
    # OVMS's `store upgrade` does not mind the running partition; `upgrade factory` does.
    out = transcript(flash, "ota partitions store upgrade -noconfirm", "module reset")
    assert after(out, "ota partitions store upgrade -noconfirm") == STORE_TABLE
    v3_34 = {
        "ota partitions upgrade factory": ["Error: Cannot upgrade partition table if running partition is not factory"],
        "ota partitions store upgrade": [
            "Error: Cannot upgrade partition tables not in factory (factory, ota1, ota2, 1MB store) format"
        ],
        "ota partitions store downgrade": [
            "Downgrade store partition to old format (y/n): ",
            "Store downgrade aborted",
        ],
        "ota partitions store migrate": ["Migrate store to new partition (y/n): ", "Store migration aborted"],
    }
    out = transcript(flash, *v3_34, "ota copy ota_1 factory", "ota boot factory", "module reset", "ota boot ota_0",
                       "ota partitions upgrade factory")  # fmt: skip
    assert {command: after(out, command) for command in v3_34} == v3_34
    assert out.endswith(
        "OVMS# ota partitions upgrade factory\nError: Cannot upgrade partition table if boot partition is not factory\n"
    )
    # In a partition-update boot a failed step is logged to the file only, and the module reboots normally.
    out = transcript(flash, UPGRADE)
    assert console_only(after(out, UPGRADE)) == [
        "v3-34 We need to upgrade the store partition to the new format, rebooting now...",
        f"v3-34 {WARNING}",
    ]
    assert log_lines(out, "file-writer") == [
        f"{LOG}: Error: Cannot upgrade partition table if running partition is not factory"
    ]
    assert log_lines(out, "ota") == [*MAINTENANCE_START, "Aborting partition update, rebooting into standard mode"]
    assert read_log_of(flash) == ["Error: Cannot upgrade partition table if running partition is not factory"]


def read_log_of(flash: Path) -> list[str]:
    """The lines of /store/partition-update.log (none when there is no such file)."""
    module = Module.open(flash)
    try:
        return (module.config.volume.read("/partition-update.log") or b"").decode("utf-8", "replace").splitlines()
    finally:
        module.close()


def test_step_commands_mount_migrate_and_downgrade(tmp_path: Path, pristine: Path) -> None:
    """The manual path, printing to the console: store upgrade, mount, migrate, factory; and downgrade."""
    flash = tmp_path / "m.img"
    shutil.copyfile(pristine, flash)
    expected = config_of(flash)
    out = transcript(
        flash, "ota copy ota_1 factory", "ota boot factory", "module reset",
        "ota partitions store upgrade -noconfirm", "module reset",
        "ota partitions upgrade factory",
        "ota partitions store mount", "ota partitions store mount", "vfs ls /store2",
        "ota partitions store migrate -noconfirm", "ota partitions store mount", "vfs ls /store2/ovms_config",
        "ota partitions store unmount", "ota partitions store unmount", "vfs ls /store2",
        "ota partitions store downgrade -noconfirm",
    )  # fmt: skip
    assert after(out, "ota partitions store upgrade -noconfirm") == STORE_TABLE
    assert after(out, "ota partitions upgrade factory") == ["v3-34 Error: store has not been migrated to store2 yet"]
    assert "OVMS# ota partitions store mount\nMounted /store2\nOVMS# ota partitions store mount\n" in out
    assert "Error: /store2 is already mounted\n" in out
    assert after(out, "vfs ls /store2") == []  # mounted: a fresh volume
    # Mounted already: no erase and mount. The manual path never wrote the log file, so there is none to copy.
    assert after(out, "ota partitions store migrate -noconfirm") == [
        "Copy /store -> /store2 ...",
        "Scanning directory: /store",
        "Create directory: /store2/ovms_config",
        "Queued directory: /store/ovms_config",
        "Scanning directory: /store/ovms_config",
        *CONFIG_COPY,
        "Copy finished: 3 files copied, 0 errors",
        "Unmounted /store2",
        "Store migrated successfully - please check, and then proceed",
    ]
    # Mounted again after the migration, /store2 shows the copies; unmounted, it is gone.
    assert [line.split()[-1] for line in after(out, "vfs ls /store2/ovms_config")] == ["ota", "vehicle", "auto"]
    assert after(out, "ota partitions store unmount") == ["Unmounted /store2"]
    assert "Unmounted /store2\nOVMS# ota partitions store unmount\nError: /store2 is not mounted\n" in out
    assert "OVMS# vfs ls /store2\nError: VFS cannot open directory listing for that directory\n" in out
    assert after(out, "ota partitions store downgrade -noconfirm") == [
        *SKIP_V3_30,
        "Removing store2 partition from partition table",
        *TABLE_WRITE,
        "Store partition downgraded successfully - reboot required",
    ]
    assert layout_of(flash) is LayoutType.V3_30
    out = transcript(
        flash, "ota partitions list", "ota partitions store upgrade -noconfirm", "module reset",
        "ota partitions store mount", "ota partitions store downgrade -noconfirm", "module reset",
        "ota partitions store upgrade -noconfirm", "module reset",
        "ota partitions store migrate -noconfirm", "ota partitions upgrade factory -noconfirm", "module reset",
        "ota status nocheck",
    )  # fmt: skip
    assert "Digest:          cfe36765a6bfe1b802a2abd4ec9f6851 pass" in out
    downgrade = after(out, "ota partitions store downgrade -noconfirm")
    assert downgrade[0] == "Unmounted /store2"  # a mounted store2 is unmounted first
    assert after(out, "ota partitions store migrate -noconfirm")[:3] == [
        "Erasing store2 data (2031616 bytes)...",
        "Mounted /store2",
        "Copy /store -> /store2 ...",
    ]
    assert after(out, "ota partitions upgrade factory -noconfirm") == FACTORY_TABLE
    assert "Partition type:    v3-35 (ota1, ota2, no factory, maximized store)" in out
    assert f"Firmware:          {OTA1}/ota_0/edge" in out
    assert config_of(flash) == expected


def test_a_failed_store_copy_keeps_v3_34_and_logs_to_the_old_store(
    tmp_path: Path, pristine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flash = tmp_path / "m.img"
    shutil.copyfile(pristine, flash)
    expected = config_of(flash)
    transcript(flash, "ota copy ota_1 factory", "ota boot factory", "module reset")
    transcript(flash, "ota partitions store upgrade -noconfirm")

    copy_file = store_copy._copy_file

    def failing_copy(src: StoreVolume, dst: StoreVolume, path: str, writer: StepWriter) -> tuple[int, bool]:
        """An I/O error on one file's copy (a worn sector): OVMS's size check reports it."""
        if path != "/ovms_config/auto":
            return copy_file(src, dst, path, writer)
        writer.puts(f"Copy file: /store{path} -> /store2{path}")
        writer.puts(f"Error: size mismatch on /store{path}: 0 bytes copied, 8 expected (/store corrupted)")
        return 0, False

    monkeypatch.setattr(store_copy, "_copy_file", failing_copy)
    out = transcript(flash, UPGRADE)
    assert log_lines(out, "file-writer")[-6:] == [
        f"{LOG}: Copy file: /store/partition-update.log -> /store2/partition-update.log",
        "Migrating to write to /store2/partition-update.log",
        "/store2/partition-update.log: Copy finished: 3 files copied, 1 errors",
        "/store2/partition-update.log: Error: Migration failed - could not copy /store to /store2",
        f"Migrating to write to {LOG}",
        f"{LOG}: v3-34 Store migration failed",
    ]
    assert log_lines(out, "ota")[-1] == "Aborting partition update, rebooting into standard mode"
    assert layout_of(flash) is LayoutType.V3_34 and config_of(flash) == expected
    assert read_log_of(flash)[-1] == "v3-34 Store migration failed"


def test_store_mount_refused_with_an_sd_card(tmp_path: Path, pristine: Path) -> None:
    flash = tmp_path / "m.img"
    shutil.copyfile(pristine, flash)
    transcript(flash, "ota partitions store upgrade -noconfirm")
    sd = tmp_path / "card"
    sd.mkdir()
    out = transcript(flash, "ota partitions store mount", "ota partitions store migrate -noconfirm", sd=sd)
    assert after(out, "ota partitions store mount") == ["Error: Please unmount SD CARD before migrating store"]
    assert after(out, "ota partitions store migrate -noconfirm") == [
        "Erasing store2 data (2031616 bytes)...",
        "Error: Please unmount SD CARD before migrating store",
        "Error: Migration failed - could not mount /store2",
    ]


def test_the_log_file_survives_cuts_while_appending(tmp_path: Path, pristine: Path) -> None:
    """FileWriter's appends on /store: a cut anywhere leaves a volume that mounts, the config and the log lines
    appended before; outside the sectors' erase-program windows nothing is lost."""
    flash = tmp_path / "m.img"
    lines = [f"line {n:02} " + "x" * 500 for n in range(9)]  # crosses a 4 KiB cluster
    shutil.copyfile(pristine, flash)
    expected = config_of(pristine)
    with Flash(flash) as f:
        module = Module(f)
        f.trace = []
        start = f.ops
        for line in lines:
            module.config.volume.append("/partition-update.log", f"{line}\n".encode())
        total, windows = f.ops - start, fat_windows(f.trace, [store_of(pristine)], start)
    assert total > 2 * len(lines)
    lost = 0
    for at in range(total):
        for torn in (False, True):
            shutil.copyfile(pristine, flash)
            with Flash(flash) as f:
                module = Module(f)
                f.cut = PowerCut(f.ops + at, torn)
                with pytest.raises(PowerLoss):
                    for line in lines:
                        module.config.volume.append("/partition-update.log", f"{line}\n".encode())
            try:
                kept = read_log_of(flash)
            except VolumeError:  # a file whose sectors the cut left half-written: FatFs fails to read it too
                kept = ["unreadable"]
            intact = config_of(flash) == expected and kept == lines[: len(kept)]
            assert intact or (at, torn) in windows, (at, torn, kept)
            lost += not intact
    assert 0 < lost < 2 * total
    print(f"\nlog appends on FAT: {total} operations, {2 * total} cut points, {lost} inside a sector's window")


# -- power loss ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield old_module(tmp_path_factory.mktemp("migration"), size=8192)


@pytest.fixture(scope="module")
def pristine_v3_34(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The v3-30 module after `ota partitions store upgrade` (store2 added, still running ota_1)."""
    flash = tmp_path_factory.mktemp("v3-34") / "v3-34.img"
    shutil.copyfile(pristine, flash)
    run_commands(flash, "ota partitions store upgrade -noconfirm")
    assert layout_of(flash) is LayoutType.V3_34
    yield flash


def _restore(work: Path, pristine: bytes) -> None:
    """Make ``work`` a copy of ``pristine`` again, rewriting only the 64 KiB blocks that differ (a whole-file copy
    would leave every page dirty for the flash file's msync at close)."""
    with open(work, "r+b") as f, mmap.mmap(f.fileno(), 0) as current:
        now = np.frombuffer(current, dtype=np.uint64).reshape(-1, 0x2000)
        then = np.frombuffer(pristine, dtype=np.uint64).reshape(-1, 0x2000)
        changed = np.flatnonzero((now != then).any(axis=1))
        del now  # no export of the mapping may outlive it
        for block in changed.tolist():
            current[block * 0x10000 : (block + 1) * 0x10000] = pristine[block * 0x10000 : (block + 1) * 0x10000]


def _cut_everywhere(
    pristine: Path,
    work: Path,
    command: str,
    finished: Callable[[str, Path, dict[str, dict[str, str]]], bool],
    torn_cuts: tuple[bool, ...],
) -> tuple[int, set[int], dict[str, int]]:
    """Cut power at every flash operation of ``command`` (plain or torn, as ``torn_cuts`` says). Outside the
    table window the module must boot the same firmware, and running the command again must finish the job
    (``finished(output, flash, config the module booted with)``). Outside the FAT volumes' sector windows
    (:class:`SectorWindows`) the config must be intact too; inside one, a real module can lose a FAT or
    directory sector, and so can this one."""
    expected = config_of(pristine)
    original = pristine.read_bytes()
    shutil.copyfile(pristine, work)
    uncut = run_commands(work, command, clock_at=REPLAY_CLOCK)
    total = uncut.ops
    # The partition-table rewrites (the erase and program of the sector at 0x8000) and the FAT sectors' windows.
    window = {index for index, _, address in uncut.trace if 0x8000 <= address < 0x9000}
    sectors = fat_windows(uncut.trace, [store_of(pristine), STORE2])
    results = {
        "boots with config": 0,
        "boots, sector lost": 0,
        "resumed": 0,
        "window: unbootable": 0,
        "window: survived": 0,
    }
    failures = []
    for at_op in range(total):
        for torn in torn_cuts:
            _restore(work, original)
            with pytest.raises(PowerLoss):
                run_commands(work, command, cut=PowerCut(at_op, torn), clock_at=REPLAY_CLOCK)
            try:
                module = Module.open(work)
            except Exception as err:
                if at_op in window:
                    results["window: unbootable"] += 1
                else:
                    failures.append((at_op, torn, f"no boot: {err}"))
                continue
            running, config = module.running_version, module.config.snapshot()
            module.close()
            results["window: survived"] += at_op in window
            if running != OTA1:
                failures.append((at_op, torn, f"runs {running}"))
                continue
            if config == expected:
                results["boots with config"] += 1
            elif (at_op, torn) in sectors:
                results["boots, sector lost"] += 1
            else:
                failures.append((at_op, torn, f"config changed: {config}"))
                continue
            # Re-running the command resumes from wherever the cut left the flash.
            if finished(run_commands(work, command, "ota status nocheck").output, work, config):
                results["resumed"] += 1
            else:
                failures.append((at_op, torn, "did not resume"))
    cuts = len(torn_cuts) * total
    print(f"\n{command}: {total} flash operations, {cuts} cut points; table window = {len(window)} operations")
    for outcome, count in results.items():
        print(f"  {outcome}: {count}")
    assert failures == []
    assert results["resumed"] == cuts - results["window: unbootable"]
    return total, window, results


def kept(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> bool:
    """Every value of ``before`` is in ``after`` (a boot may add one: the old-layout notification's flag)."""
    return all(after.get(param, {}).get(k) == v for param, values in before.items() for k, v in values.items())


@pytest.mark.parametrize("torn", [False, True], ids=["clean cut", "torn operation"])
def test_power_loss_during_the_whole_migration(tmp_path: Path, pristine: Path, torn: bool) -> None:
    def finished(out: str, flash: Path, config: dict[str, dict[str, str]]) -> bool:
        return "Partition type:    v3-35" in out and kept(config, config_of(flash))

    _, window, _ = _cut_everywhere(pristine, tmp_path / "work.img", UPGRADE, finished, (torn,))
    assert len(window) == 4  # two table rewrites, one erase and one program each


def test_power_loss_during_the_store_downgrade(tmp_path: Path, pristine_v3_34: Path) -> None:
    def finished(out: str, flash: Path, config: dict[str, dict[str, str]]) -> bool:
        return layout_of(flash) is LayoutType.V3_30 and kept(config, config_of(flash))

    total, window, results = _cut_everywhere(
        pristine_v3_34, tmp_path / "work.img", "ota partitions store downgrade -noconfirm", finished, (False, True)
    )
    assert total == 2 and window == {0, 1}  # the downgrade is nothing but a table rewrite
    assert results["window: survived"] == 2  # before the erase; after half the program (the table is short)


def test_old_layout_notification_once(tmp_path: Path) -> None:
    flash = tmp_path / "n.img"
    create_module(flash, "v3-30", image("3.3.005", 8192))
    assert "ota.partitiontype" not in run_commands(flash).output  # 3.3.005 does not need the new layout
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "new.bin").write_bytes(image("3.3.006", 8192))
    out = run_commands(flash, "ota flash vfs /sd/new.bin", "module reset", sd=sd).output
    assert (
        "Notification info/ota.partitiontype: The module is running an outdated flash partitioning scheme.\n"
        "OTA updates will soon stop working due to its 4MB firmware size limit.\n"
    ) in out
    assert config_of(flash)["ota"]["parttype.notified"] == "yes"
    assert "ota.partitiontype" not in run_commands(flash).output  # sent once

"""Partition-scheme migration v3-30 -> v3-34 -> v3-35 (issue #5)."""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.flash import Flash, PowerCut, PowerLoss
from ovota.device.migrate import with_store2, without_factory
from ovota.device.module import Module, create_module
from ovota.formats.partition_table import PartitionTable
from tests.conftest import CliRunner
from tests.module_helpers import image, run_commands
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


def test_upgrade_reaches_the_esp_idf_v3_35_table(tmp_path: Path, vectors: Path, ovota: CliRunner) -> None:
    flash = old_module(tmp_path)
    before = config_of(flash)
    run = ovota("module", "run", flash, "--", UPGRADE, "ota status nocheck", "ota partitions log")
    assert run.code == 0, run.out
    table = flash.read_bytes()[0x8000:0x8C00]
    assert table == (vectors / "partition_tables/ovms_v3-35_ota_only.bin").read_bytes()
    status = run.out.split("OVMS# ota status nocheck\n")[1].splitlines()
    assert status[1].startswith(f"Firmware:          {OTA1}/ota_0/edge (build ")
    assert status[1].endswith(", product v3.3-5)")
    assert status[2] == "Partition type:    v3-35 (ota1, ota2, no factory, maximized store)"
    assert status[4:6] == ["Running partition: ota_0", "Boot partition:    ota_0"]
    assert config_of(flash) == before
    log = run.out.split("OVMS# ota partitions log\n")[1].splitlines()
    assert log[0] == "v3-30 Partition upgrade started, rebooting now into partition update mode..."
    assert "Store migrated successfully - please check, and then proceed" in log
    assert (
        log[-1] == "v3-34 Store migrated successfully, factory partition table upgraded successfully, rebooting now..."
    )
    again = ovota("module", "run", flash, "--", "ota partitions list")
    assert "Digest:          520877a00f2b1f7506844246b950ab23 pass" in again.out
    assert "upgrade" not in ovota("module", "run", flash, "--", "ota partitions").out  # gone on v3-35


def test_intermediate_tables_match_ovms(tmp_path: Path, vectors: Path) -> None:
    old = PartitionTable.from_binary((vectors / "partition_tables/ovms_v3-30_factory_ota.bin").read_bytes())
    v34 = with_store2(old).to_binary()
    assert v34[0x100:0x110] == b"\xeb\xeb" + b"\xff" * 14
    assert v34[0x110:0x120].hex() == "b0a4220846381b6bcf0c89bb0a84e63d"  # OVMS's v3-34 digest
    v35 = without_factory(PartitionTable.from_binary(v34)).to_binary()
    assert v35 == (vectors / "partition_tables/ovms_v3-35_ota_only.bin").read_bytes()


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
    step = ovota("module", "run", unknown, "--", "ota partitions upgrade factory -noconfirm")
    assert "Error: Unknown partition table type" in step.out


def test_confirmation_and_step_commands(tmp_path: Path, ovota: CliRunner) -> None:
    flash = old_module(tmp_path)
    asked = ovota("module", "run", flash, "--", "ota partitions upgrade autocont")
    assert "Upgrade partition table automatically (y/n): " in asked.out
    assert "Partition table upgrade aborted" in asked.out
    refused = ovota("module", "run", flash, "--", "ota partitions store upgrade -noconfirm")
    assert "Error: Cannot upgrade partition table if running partition is not factory" in refused.out
    steps = ovota(
        "module", "run", flash, "--",
        "ota copy ota_1 factory", "ota boot factory", "module reset",
        "ota partitions store upgrade -noconfirm", "module reset", "ota status nocheck",
        "ota partitions upgrade factory -noconfirm", "ota partitions store migrate -noconfirm",
        "ota partitions upgrade factory -noconfirm", "module reset", "ota status nocheck",
    )  # fmt: skip
    assert "Partition type:    v3-34 (factory, ota1, ota2, dual store)" in steps.out
    assert "v3-34 Error: store has not been migrated to store2 yet" in steps.out
    assert "Partition type:    v3-35 (ota1, ota2, no factory, maximized store)" in steps.out
    assert f"Firmware:          {OTA1}/ota_0/edge" in steps.out
    assert config_of(flash)["vehicle"] == {"id": "DEMO"}


# -- power loss ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield old_module(tmp_path_factory.mktemp("migration"), size=8192)


def _window(flash: Path) -> set[int]:
    """Operation indices of the partition-table rewrites: the erase and program of the sector at 0x8000."""
    f = Flash(flash)
    f.trace = []
    module = Module(f)
    try:
        Shell(module, Writer(io.StringIO())).execute(UPGRADE)
    finally:
        f.close()
    assert f.trace is not None
    return {index for index, _, address in f.trace if 0x8000 <= address < 0x9000}


def test_power_loss_during_the_whole_migration(tmp_path: Path, pristine: Path) -> None:
    expected = config_of(pristine)
    work = tmp_path / "work.img"
    shutil.copyfile(pristine, work)
    total = run_commands(work, UPGRADE).ops
    shutil.copyfile(pristine, work)
    window = _window(work)
    assert len(window) == 4  # two table rewrites, one erase and one program each
    results = {"boots with config": 0, "resumed to v3-35": 0, "window: unbootable": 0, "window: survived": 0}
    failures = []
    for at_op in range(total):
        for torn in (False, True):
            shutil.copyfile(pristine, work)
            with pytest.raises(PowerLoss):
                run_commands(work, UPGRADE, cut=PowerCut(at_op, torn))
            try:
                module = Module.open(work)
            except Exception as err:
                if at_op in window:
                    results["window: unbootable"] += 1
                else:
                    failures.append((at_op, torn, f"no boot: {err}"))
                continue
            ok = module.running_version in (OTA1,) and module.config.snapshot() == expected
            module.close()
            if at_op in window:
                results["window: survived"] += 1
            if not ok:
                failures.append((at_op, torn, "wrong image or config"))
                continue
            results["boots with config"] += 1
            # Re-running the command resumes from wherever the cut left the flash.
            out = run_commands(work, UPGRADE, "ota status nocheck").output
            if "Partition type:    v3-35" in out and config_of(work) == expected:
                results["resumed to v3-35"] += 1
            else:
                failures.append((at_op, torn, "did not resume"))
    print(f"\nmigration: {total} flash operations, {2 * total} cut points; window = {len(window)} operations")
    for outcome, count in results.items():
        print(f"  {outcome}: {count}")
    assert failures == []
    assert results["boots with config"] == 2 * total - results["window: unbootable"]


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

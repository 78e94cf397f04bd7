"""A real module's /store in the emulator: FAT (4 KiB sectors, OVMS's device format) on ESP-IDF's wear levelling,
with OVMS's config files. A dump assembled from other tools' output runs as it is; what the emulator writes is
read back by dosfstools and mtools from the volume the wear levelling maps; power cuts leave a readable FAT."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyfatfs.PyFat import PyFat

from ovota.device.config_files import config_file, parse_config_file
from ovota.device.fat_store import SectorFile, _FatFsVolume
from ovota.device.flash import Flash, PowerCut, PowerLoss
from ovota.device.identity import Identity, read_identity
from ovota.device.layout import read_layout
from ovota.device.module import Module, create_module
from ovota.device.store import StoreError
from ovota.device.store_volume import StoreVolume
from ovota.device.wear_levelling import WearLevelled
from ovota.formats.fat_names import fatfs_case_bits
from ovota.formats.fat_volume import device_format
from ovota.formats.nvs import build_nvs
from ovota.formats.partition_table import Partition, PartitionTable
from ovota.formats.wear_levelling import SECTOR, Layout, State, config_sector
from tests.conftest import CliRunner
from tests.module_helpers import image, new_module, run_commands
from tests.real_builds import real_shaped_build
from tests.servers import StaticServer

NEW = "3.3.007"
TOOLS = ("/usr/sbin/fsck.fat", "/usr/sbin/mkfs.fat", "/usr/bin/mtype")


def store(flash: Flash) -> Partition:
    part = read_layout(flash).get("store")
    assert part is not None
    return part


def real_dump(path: Path, files: dict[str, bytes], layout: str = "v3-35") -> Path:
    """A module flash whose store partition is what a real module's holds: wear levelling, a freshly formatted
    FAT as OVMS's f_mkfs makes it, and the given files written by pyfatfs."""
    new_module(path, layout=layout, version="3.3.006")
    with Flash(path) as flash:
        part = store(flash)
        flash.erase(part.offset, part.size)
        volume = SectorFile(WearLevelled(flash, part), writable=True)
        volume.write(device_format(volume.wl.sectors, 0x0DB5_5EED))
        mounted = StoreVolume(flash, part, format_if_mount_failed=False)
        for name, data in files.items():
            parts = name.split("/")[1:-1]
            for depth in range(1, len(parts) + 1):
                mounted.makedir("/" + "/".join(parts[:depth]))
            assert mounted.write(name, data)
    return path


def plain_volume(flash_path: Path, out: Path) -> Path:
    """The FAT volume as the wear levelling maps it, as a file other tools read."""
    with Flash(flash_path) as flash:
        wl = WearLevelled(flash, store(flash))
        out.write_bytes(b"".join(wl.read(sector) for sector in range(wl.sectors)))
    return out


def tools_or_skip() -> None:
    missing = [tool for tool in TOOLS if not os.access(tool, os.X_OK)]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"{', '.join(missing)} not installed (make test installs dosfstools and mtools)")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "www"
    root.mkdir()
    srv = StaticServer(root)
    srv.publish("v3.3-5", "edge", image(NEW, 8192), f"{NEW}\nNotes\n")
    yield srv
    srv.stop()


def test_config_files_as_ovms_reads_and_writes_them() -> None:
    assert parse_config_file(b"tag\tedge\nserver api.example/ota\nnoseparator\nlast\tcut") == {
        "tag": "edge",
        "server": "api.example/ota",
        "last": "cu",  # fgets' line loses its last character, newline or not
    }
    # fgets' 2,500-byte buffer: 2,499 characters, the last cut; the rest of the line has no separator.
    assert parse_config_file(b"long\t" + b"x" * 3000 + b"\n") == {"long": "x" * 2493}
    assert parse_config_file(b"a\tb c\td\r\n") == {"a": "b c\td\r"}  # the first TAB; a CR stays
    assert config_file({"tag": "eap", "server": "x", "auto.hour": "3"}) == b"auto.hour\t3\nserver\tx\ntag\teap\n"


def test_a_real_dump_runs_with_its_own_settings(tmp_path: Path, server: StaticServer) -> None:
    tools_or_skip()
    dump = real_dump(
        tmp_path / "dump.img",
        {
            "/ovms_config/ota": f"server\t{server.base}\ntag\tedge\n".encode(),
            "/ovms_config/vehicle": b"id\tREALCAR\n",
            "/scripts/ovmsmain.js": b"// the owner's script\n",
        },
    )
    out = run_commands(dump, "config list ota", "ota status", "config set ota tag eap").output.splitlines()
    assert out[:3] == ["ota (readable writeable)", f"  server: {server.base}", "  tag: edge"]
    assert f"Server Available:  {NEW} (is newer)" in out
    # The update a vehicle would get, rehearsed on its copy: from the dump's server, on the edge channel.
    run_commands(dump, "config set ota tag edge")
    flashed = run_commands(dump, "ota flash http", "module reset", "ota status nocheck").output
    assert "OTA flash was successful" in flashed and "Running partition: ota_1" in flashed
    run_commands(dump, "config set ota tag eap")
    with Flash(dump) as flash:
        mounted = StoreVolume(flash, store(flash), format_if_mount_failed=False)
        mru = f"http.mru\t{server.base}/v3.3-5/edge/ovms3.bin\n"
        assert mounted.read("/ovms_config/ota") == f"{mru}server\t{server.base}\ntag\teap\n".encode()
        assert mounted.read("/scripts/ovmsmain.js") == b"// the owner's script\n"
    volume = plain_volume(dump, tmp_path / "store.fat")
    check = subprocess.run(["fsck.fat", "-n", str(volume)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (
        "4096 bytes per logical sector"
        in subprocess.run(["fsck.fat", "-n", "-v", str(volume)], capture_output=True, text=True, check=True).stdout
    )
    typed = subprocess.run(["mtype", "-i", str(volume), "::/ovms_config/ota"], capture_output=True, check=True)
    assert typed.stdout.endswith(f"server\t{server.base}\ntag\teap\n".encode())
    module = Module.open(dump)
    try:
        assert module.config.get("vehicle", "id") == "REALCAR"
    finally:
        module.close()


def test_the_device_format_is_ovms_s(tmp_path: Path) -> None:
    """490 sectors: FAT12, one FAT, 512 root entries, data from sector 6, 484 clusters (ovms-twin §6)."""
    tools_or_skip()
    volume = tmp_path / "v.fat"
    volume.write_bytes(device_format(490, 1).ljust(490 * SECTOR, b"\0"))
    report = subprocess.run(["fsck.fat", "-n", "-v", str(volume)], capture_output=True, text=True, check=True).stdout
    for line in ("1 FATs, 12 bit entries", "512 root directory entries", "Data area starts at byte 24576 (sector 6)",
                 "484 data clusters", "490 sectors total"):  # fmt: skip
        assert line in report, report


def test_power_cut_at_every_operation_of_a_config_write(tmp_path: Path) -> None:
    """Every cut leaves a FAT that mounts and config that loads: the tag old, new, or gone. A cut between the
    erase and the program of a FAT or directory sector loses what that sector held, on a real module too (its
    wear levelling writes a sector as erase + program, FatFs has no journal): those cut points are counted."""
    dump = real_dump(tmp_path / "dump.img", {"/ovms_config/ota": b"tag\tedge\n", "/ovms_config/vehicle": b"id\tCAR\n"})
    pristine = tmp_path / "pristine.img"
    shutil.copyfile(dump, pristine)
    with Flash(dump) as flash:
        module = Module(flash)
        start = flash.ops
        module.config.set("ota", "tag", "eap")
        total = flash.ops - start
    assert total > 4
    seen = set()
    damaged = 0
    for at in range(total):
        for torn in (False, True):
            shutil.copyfile(pristine, dump)
            with Flash(dump) as flash:
                module = Module(flash)  # the power-on's own operations come first
                flash.cut = PowerCut(flash.ops + at, torn)
                with pytest.raises(PowerLoss):
                    module.config.set("ota", "tag", "eap")
            after = Module.open(dump)
            try:
                tag = after.config.get("ota", "tag")
                assert tag in ("edge", "eap", ""), (at, torn, tag)
                assert after.config.get("vehicle", "id") in ("CAR", ""), (at, torn)
                seen.add(tag)
                damaged += after.config.get("vehicle", "id") == ""
            finally:
                after.close()
    assert {"edge", "eap"} <= seen
    assert damaged < total  # only the cuts inside a metadata sector's erase-program window
    print(f"\nconfig set on a FAT /store: {total} flash operations, {2 * total} cut points, {damaged} lose a file")


def test_the_migration_runs_on_a_real_dump_and_fatfs_tools_read_the_new_store(tmp_path: Path) -> None:
    """The 3.3.006 migration rehearsed on a v3-30 dump: every file of its /store (config, scripts, events) is
    copied into store2 by FatFs's rules, and the v3-35 /store it becomes is a clean FAT that mtools reads."""
    tools_or_skip()
    files = {
        "/ovms_config/ota": b"tag\tedge\n",
        "/ovms_config/vehicle": b"id\tREALCAR\n",
        "/scripts/ovmsmain.js": b"// the owner's script\n" * 300,  # 6.6 KB: two clusters
        "/events/vehicle.on/10-notify": b"notify raise text info x on\n",
    }
    dump = real_dump(tmp_path / "old.img", files, layout="v3-30")
    first = run_commands(dump).output  # the first power-on notes the old layout in the FAT's config, as OVMS does
    assert "Notification info/ota.partitiontype" in first
    out = run_commands(dump, "ota partitions upgrade autocont -noconfirm", "ota status nocheck").output
    assert "Partition type:    v3-35" in out, out
    for line in (
        "Create directory: /store2/scripts",
        "Copy file: /store/scripts/ovmsmain.js -> /store2/scripts/ovmsmain.js",
        "Create directory: /store2/events/vehicle.on",
        "Copy finished: 5 files copied, 0 errors",
    ):
        assert "file-writer: /store" in out and line in out, line
    listing = run_commands(dump, "config list ota", "vfs ls /store/scripts").output.splitlines()
    assert listing[:3] == ["ota (readable writeable)", "  parttype.notified: yes", "  tag: edge"]
    assert listing[3].endswith("ovmsmain.js") and "6.4k" in listing[3]
    volume = plain_volume(dump, tmp_path / "new-store.fat")
    check = subprocess.run(["fsck.fat", "-n", str(volume)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    for path, data in files.items():
        typed = subprocess.run(["mtype", "-i", str(volume), f"::{path}"], capture_output=True, check=True)
        assert typed.stdout == (b"parttype.notified\tyes\n" + data if path == "/ovms_config/ota" else data), path


def test_vfs_reads_and_writes_a_real_store(tmp_path: Path) -> None:
    tools_or_skip()
    dump = real_dump(tmp_path / "dump.img", {"/ovms_config/ota": b"tag\tedge\n", "/scripts/a.js": b"print(1)\n"})
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "b.js").write_bytes(b"print(2)\n")
    out = run_commands(
        dump,
        "vfs ls /store",
        "vfs cat /store/scripts/a.js",
        "vfs cp /sd/b.js /store/scripts/b.js",
        "vfs rm /store/scripts/a.js",
        "vfs cat /store/ovms_config/ota",
        "vfs cp /sd/b.js /store/nosuch/b.js",
        sd=sd,
    ).output.splitlines()
    assert out[0].startswith("[DIR]     ") and out[0].endswith("  ovms_config/")
    assert out[1].endswith("  scripts/")
    assert out[2:] == [
        "print(1)",
        "VFS copy complete",
        "VFS File deleted",
        "Error: protected path",
        "Error: VFS target file cannot be opened",
    ]
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(plain_volume(dump, tmp_path / "v.fat")), "::/scripts"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listing.split() == ["::/scripts/b.js"]


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    folder = tmp_path_factory.mktemp("fuzz")
    dump = real_dump(folder / "base.img", {"/ovms_config/ota": b"tag\tedge\n", "/ovms_config/vehicle": b"id\tA\n"})
    with Flash(dump) as flash:
        part = store(flash)
        wl = WearLevelled(flash, part)
        metadata = [part.offset + wl.layout.physical(s, wl.pos, wl.state.move_count) * SECTOR for s in range(8)]
    return dump, metadata


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, SECTOR - 1), st.integers(0, 255)), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_damaged_fat_is_one_error_never_a_traceback(
    fuzz_base: tuple[Path, list[int]], tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[int, int, int]]
) -> None:
    """Bytes flipped in the boot sector, FAT and directories of a dump: the module powers on and its console
    answers, or opening it is one StoreError; a config write that fails is one Error: line."""
    base, metadata = fuzz_base
    work = tmp_path_factory.mktemp("case") / "dump.img"
    data = bytearray(base.read_bytes())
    for sector, at, value in flips:
        data[metadata[sector] + at] = value
    work.write_bytes(data)
    try:
        out = run_commands(work, "config list ota", "config set ota tag eap").output
    except StoreError as err:
        assert str(err).startswith("cannot use the FAT volume in /store")
        return
    assert "Traceback" not in out


def test_the_identity_is_esp_idf_nvs_and_a_real_nvs_gives_the_defaults(tmp_path: Path) -> None:
    gen = pytest.importorskip("esp_idf_nvs_partition_gen.nvs_partition_gen")
    hardware = "OVMS WIFI BLE BT cores=2 rev=ESP32/3; MODEM SIM7600"
    flash_path = tmp_path / "m.img"
    create_module(flash_path, "v3-35", image("3.3.006", 4096), hardware, anti_rollback=True)
    with Flash(flash_path) as flash:
        nvs = read_layout(flash).get("nvs")
        assert nvs is not None
        written = flash.read(nvs.offset, nvs.size)
        # What ESP-IDF's own generator writes for the same items is the same partition, byte for byte.
        out = io.BytesIO()
        partition = gen.nvs_open(out, nvs.size - 4096, gen.Page.VERSION2)
        gen.write_entry(partition, "ovota", "namespace", "", "")
        items = [("hardware", "string", hardware), ("chip_rev", "u8", "3")]
        items += [("idf_build", "string", Identity().idf_build), ("anti_rollback", "u8", "1")]
        for key, kind, value in items:
            gen.write_entry(partition, key, "data", kind, value)
        gen.nvs_close(partition)
        assert written == out.getvalue()
        assert read_identity(flash, nvs) == Identity(hardware=hardware, anti_rollback=True)
        # A real module's nvs: PHY calibration only. Its identity is the defaults.
        flash.erase(nvs.offset, nvs.size)
        flash.program(nvs.offset, build_nvs({"phy": {"cal_data": b"\x01" * 1000, "cal_version": 0x10}}, nvs.size))
        assert read_identity(flash, nvs) == Identity()


def test_a_folder_in_the_config_folder_is_not_a_param(tmp_path: Path) -> None:
    dump = real_dump(tmp_path / "d.img", {"/ovms_config/ota": b"tag\tedge\n", "/ovms_config/odd/x": b"a\tb\n"})
    assert run_commands(dump, "config list ota").output.splitlines() == ["ota (readable writeable)", "  tag: edge"]


def test_the_whole_flash_dumps_for_esptool_write_flash(tmp_path: Path, ovota: CliRunner) -> None:
    dump = real_dump(tmp_path / "dump.img", {"/ovms_config/ota": b"tag\tedge\n"})
    run_commands(dump, "config set ota tag eap")
    out = ovota("module", "dump", dump, tmp_path / "back.bin")
    assert out.code == 0 and out.out.startswith(f"Wrote {tmp_path / 'back.bin'}: the whole flash, 16777216 bytes")
    assert (tmp_path / "back.bin").read_bytes() == dump.read_bytes()


def test_a_store_written_by_mtools_keeps_fatfs_names(tmp_path: Path) -> None:
    """mtools, like FatFs, stores ``ota`` as the 8.3 name OTA with the lower-case bits and no long name: it is
    read as ``ota``, and a config write replaces that entry instead of adding a second one."""
    tools_or_skip()
    volume = tmp_path / "v.fat"
    volume.write_bytes(device_format(490, 7).ljust(490 * SECTOR, b"\0"))
    (tmp_path / "ota").write_bytes(b"tag\tedge\n")
    subprocess.run(["mmd", "-i", str(volume), "::/ovms_config"], check=True)
    subprocess.run(["mcopy", "-i", str(volume), str(tmp_path / "ota"), "::/ovms_config/ota"], check=True)
    dump = new_module(tmp_path / "dump.img", version="3.3.006")
    with Flash(dump) as flash:
        part = store(flash)
        flash.erase(part.offset, part.size)
        SectorFile(WearLevelled(flash, part), writable=True).write(volume.read_bytes())
    out = run_commands(dump, "config list ota", "config set ota tag eap", "vfs ls /store/scripts").output.splitlines()
    assert out[:2] == ["ota (readable writeable)", "  tag: edge"]
    back = plain_volume(dump, tmp_path / "back.fat")
    listing = subprocess.run(["mdir", "-b", "-i", str(back), "::/ovms_config"], capture_output=True, text=True)
    assert listing.stdout.split() == ["::/ovms_config/ota"], listing.stdout
    typed = subprocess.run(["mtype", "-i", str(back), "::/ovms_config/ota"], capture_output=True, check=True)
    assert typed.stdout == b"tag\teap\n"


def test_vfs_on_a_real_store_refuses_what_fatfs_would_and_a_full_disk(tmp_path: Path) -> None:
    dump = real_dump(tmp_path / "d.img", {"/ovms_config/ota": b"tag\tedge\n"})
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB: more than the 1.9 MiB volume holds
    (sd / "a.txt").write_bytes(b"a\n")
    refused = [f"/store/{'n' * 300}", "/store/big.bin", '/store/a"b.txt', "/store/a:b", "/store/x?.js", "/store/..."]
    out = run_commands(
        dump, *(f"vfs cp /sd/{'big.bin' if 'big' in t else 'a.txt'} {t}" for t in refused), "config list ota", sd=sd
    ).output.splitlines()
    assert all(line.startswith("Error: ") for line in out[: len(refused)]), out
    assert "Error: the FAT volume in /store is full (" in out[1]
    assert out[len(refused) :] == ["ota (readable writeable)", "  tag: edge"]
    # The full disk cost nothing: the volume is clean, and the next boot writes files and config.
    after = run_commands(dump, "vfs rm /store/big.bin", "vfs cp /sd/a.txt /store/a.txt", "config set ota tag x", sd=sd)
    assert after.output.splitlines() == ["VFS File deleted", "VFS copy complete", "Parameter has been set."]
    tools_or_skip()
    check = subprocess.run(["fsck.fat", "-n", str(plain_volume(dump, tmp_path / "v.fat"))], capture_output=True)
    assert check.returncode == 0, check.stdout


def test_an_unchanged_value_writes_nothing(tmp_path: Path) -> None:
    dump = real_dump(tmp_path / "d.img", {"/ovms_config/ota": b"tag\tedge\n"})
    with Flash(dump) as flash:
        module = Module(flash)
        before = flash.ops
        module.config.set("ota", "tag", "edge")
        assert flash.ops == before


@given(st.lists(st.integers(0, 0xFFF), min_size=1, max_size=3000))
@settings(max_examples=80, deadline=None)
def test_the_fast_fat12_packing_is_pyfatfs_s(fat: list[int]) -> None:
    """The FAT12 packing that replaces pyfatfs's loop writes the same bytes."""
    volume = _FatFsVolume()
    volume.initialized = True
    volume.fat_type = PyFat.FAT_TYPE_FAT12
    volume.fat = fat
    try:
        assert bytes(volume) == PyFat.__bytes__(volume)
    finally:
        volume.initialized = False  # nothing to close: no file behind it


def test_short_lower_case_names_are_stored_as_fatfs_stores_them(tmp_path: Path) -> None:
    """FatFs keeps ``ota`` as the 8.3 name OTA with the lower-case bit and no long name, ``notes.txt`` with both
    bits; ``ovms_config`` and ``Mixed.txt`` need long names. mtools lists them as FatFs names them."""
    tools_or_skip()
    flash_path = new_module(tmp_path / "m.img", version="3.3.006")
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "a.txt").write_bytes(b"a\n")
    commands = ["config set ota tag eap", "vfs cp /sd/a.txt /store/notes.txt", "vfs cp /sd/a.txt /store/Mixed.txt"]
    run_commands(flash_path, *commands, sd=sd)
    volume = plain_volume(flash_path, tmp_path / "v.fat")
    listing = subprocess.run(["mdir", "-b", "-i", str(volume), "::/"], capture_output=True, text=True, check=True)
    assert sorted(listing.stdout.split()) == ["::/Mixed.txt", "::/notes.txt", "::/ovms_config/"]
    listing = subprocess.run(["mdir", "-b", "-i", str(volume), "::/ovms_config"], capture_output=True, text=True)
    assert listing.stdout.split() == ["::/ovms_config/ota"]
    raw = volume.read_bytes()
    entries = {raw[at : at + 11]: raw[at + 11 : at + 13] for at in range(0, len(raw), 32)}
    assert entries[b"OTA        "] == b"\x20\x08"  # archive attribute, lower-case base
    assert entries[b"NOTES   TXT"] == b"\x20\x18"
    assert fatfs_case_bits("ovms_config") is None and fatfs_case_bits("Mixed.txt") is None
    assert fatfs_case_bits("a.b.c") is None and fatfs_case_bits("OTA") == 0 and fatfs_case_bits("x.LOG") == 0x08


def wl_fatfsgen_image(fat: bytes, size: int, device_id: int) -> bytes:
    """A store partition as ESP-IDF's wl_fatfsgen.py lays one out (ovms-twin §7): the dummy sector (erased)
    first, the FAT's sectors after it, then the two state copies and the config sector."""
    layout = Layout.for_partition(size)
    assert len(fat) == layout.fat_sectors * SECTOR
    state = State(layout.max_pos, device_id).pack().ljust(layout.state_size, b"\xff")
    return b"\xff" * SECTOR + fat + state + state + config_sector(size)


def test_a_dump_merged_by_esptool_from_other_tools_output_runs(tmp_path: Path, vectors: Path) -> None:
    """Every part of the flash from another tool: esptool merge-bin puts together ESP-IDF's v3-35 table, an nvs
    partition from esp-idf-nvs-partition-gen (PHY calibration only, as a real module's), and a /store whose FAT
    mkfs.fat made (OVMS's geometry) and mcopy filled, in wear levelling laid out as wl_fatfsgen does. The
    emulator runs it with its settings, and what it writes is read back by fsck.fat and mtype."""
    tools_or_skip()
    pytest.importorskip("esp_idf_nvs_partition_gen.nvs_partition_gen")
    table = PartitionTable.from_binary((vectors / "partition_tables" / "ovms_v3-35_ota_only.bin").read_bytes())
    nvs, store_part = table.find("nvs"), table.find("store")
    assert nvs is not None and store_part is not None
    csv = tmp_path / "nvs.csv"
    csv.write_text("key,type,encoding,value\nphy,namespace,,\ncal_version,data,u32,16\n")
    subprocess.run(
        [sys.executable, "-m", "esp_idf_nvs_partition_gen", "generate", str(csv), str(tmp_path / "nvs.bin"),
         hex(nvs.size)], check=True, capture_output=True,
    )  # fmt: skip
    fat = tmp_path / "store.fat"
    sectors = Layout.for_partition(store_part.size).fat_sectors
    mkfs = ["mkfs.fat", "-S", "4096", "-s", "1", "-f", "1", "-r", "512", "-F", "12", "-C", str(fat)]
    subprocess.run([*mkfs, str(sectors * 4)], check=True, capture_output=True)
    (tmp_path / "ota").write_bytes(b"server\t127.0.0.1:9/firmware/ota\ntag\tedge\n")
    subprocess.run(["mmd", "-i", str(fat), "::/ovms_config", "::/scripts"], check=True)
    subprocess.run(["mcopy", "-i", str(fat), str(tmp_path / "ota"), "::/ovms_config/ota"], check=True)
    (tmp_path / "store.bin").write_bytes(wl_fatfsgen_image(fat.read_bytes(), store_part.size, 0x5EED))
    (tmp_path / "app.bin").write_bytes(image("3.3.006", 8192))
    (tmp_path / "boot.bin").write_bytes(real_shaped_build(b"bootloader", rodata=2048))
    (tmp_path / "table.bin").write_bytes(table.to_binary())
    dump = tmp_path / "dump.bin"
    parts = [(0x1000, "boot.bin"), (0x8000, "table.bin"), (nvs.offset, "nvs.bin"), (0x10000, "app.bin")]
    parts.append((store_part.offset, "store.bin"))
    merge = [sys.executable, "-m", "esptool", "--chip", "esp32", "merge-bin", "--pad-to-size", "16MB", "-o", str(dump)]
    merged = subprocess.run(
        [*merge, *(str(x) for at, name in parts for x in (hex(at), tmp_path / name))], capture_output=True, text=True
    )
    assert merged.returncode == 0, merged.stderr
    out = run_commands(dump, "config list ota", "config set ota tag eap", "vfs ls /store").output.splitlines()
    assert out[:3] == ["ota (readable writeable)", "  server: 127.0.0.1:9/firmware/ota", "  tag: edge"]
    assert out[3] == "Parameter has been set."
    assert [line.split()[-1] for line in out[4:]] == ["ovms_config/", "scripts/"]
    volume = plain_volume(dump, tmp_path / "back.fat")
    check = subprocess.run(["fsck.fat", "-n", str(volume)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    typed = subprocess.run(["mtype", "-i", str(volume), "::/ovms_config/ota"], capture_output=True, check=True)
    assert typed.stdout == b"server\t127.0.0.1:9/firmware/ota\ntag\teap\n"

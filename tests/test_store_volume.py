"""The mounted /store volume keeps FatFs's rules where pyfatfs alone would not: a file rewritten shorter, a file
removed, time stamps, a name FatFs refuses. Each case is read back by fsck.fat, or by the emulator after a
reboot."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovota.device.flash import Flash
from ovota.device.store_volume import StoreVolume
from ovota.device.wear_levelling import WearLevelled
from tests.module_helpers import REPLAY_CLOCK, image, new_module, run_commands, store_of
from tests.test_real_store import plain_volume, tools_or_skip


def fsck(flash: Path, tmp_path: Path) -> str:
    """fsck.fat -n on the volume the wear levelling maps; its summary line ("N files, M/484 clusters")."""
    tools_or_skip()
    check = subprocess.run(
        ["fsck.fat", "-n", str(plain_volume(flash, tmp_path / "v.fat"))], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return check.stdout.strip().splitlines()[-1]


@pytest.fixture
def module(tmp_path: Path) -> Path:
    return new_module(tmp_path / "m.img", version="3.3.006")


def on_volume(flash: Path, *steps: tuple[str, str, bytes | None]) -> None:
    """("write"|"append"|"remove", path, data) steps on the store's volume, then an unmount."""
    store = store_of(flash)
    with Flash(flash) as f:
        volume = StoreVolume(f, store)
        for action, path, data in steps:
            if action == "remove":
                assert volume.remove(path)
            else:
                assert getattr(volume, action)(path, data)
        volume.unmount()


def test_a_file_rewritten_shorter_then_longer_keeps_its_neighbours(module: Path, tmp_path: Path) -> None:
    """fopen "w" empties the entry and frees the whole chain; pyfatfs's own truncation kept the first cluster
    still linked to a freed one, which the next file then took."""
    big, other = bytes(range(256)) * 40, b"keep me\n" * 700  # 10,240 and 5,600 bytes: 3 and 2 clusters
    on_volume(module, ("write", "/notes.txt", big), ("write", "/notes.txt", b"tiny"), ("write", "/keep.txt", other))
    on_volume(module, ("write", "/notes.txt", big + big))
    store = store_of(module)
    with Flash(module) as f:
        volume = StoreVolume(f, store)
        assert volume.read("/keep.txt") == other and volume.read("/notes.txt") == big + big
    assert fsck(module, tmp_path).endswith(" 3 files, 8/484 clusters")  # ovms_config, notes (5), keep (2)


def test_a_removed_file_frees_its_clusters_on_flash(module: Path, tmp_path: Path) -> None:
    on_volume(module, ("write", "/big.bin", b"x" * 20_000))
    assert fsck(module, tmp_path).endswith(" 2 files, 6/484 clusters")
    on_volume(module, ("remove", "/big.bin", None))
    assert fsck(module, tmp_path).endswith(" 1 files, 1/484 clusters")


def test_time_stamps_are_the_module_clock_whatever_the_host_zone(
    module: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is stamped when it is written and again when it is rewritten or appended to (f_sync), from the
    module's clock; `vfs ls` shows it in the module's zone (UTC here), not the host's."""
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "a.txt").write_bytes(b"a\n")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        out = run_commands(
            module, "vfs cp /sd/a.txt /store/a.txt", "vfs ls /store", "time advance 2h",
            "vfs cp /sd/a.txt /store/a.txt", "vfs ls /store", sd=sd, clock_at=REPLAY_CLOCK,
        ).output.splitlines()  # fmt: skip
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    stamps = [line for line in out if line.endswith("a.txt")]
    assert stamps == ["      2   01-Jun-2026 12:00  a.txt", "      2   01-Jun-2026 14:00  a.txt"]


@pytest.fixture
def sd(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"a\n")
    yield folder


def test_names_as_fatfs_takes_them(module: Path, sd: Path, tmp_path: Path) -> None:
    """Trailing dots and spaces are not part of a name (``b.txt.`` is ``b.txt``); a long name past pyfatfs's
    limit, or a character FatFs refuses, is `cannot be opened`, not a volume error."""
    out = run_commands(
        module, "vfs cp /sd/a.txt /store/b.txt.", "vfs stat /store/b.txt", f"vfs cp /sd/a.txt /store/{'n' * 200}",
        "vfs cp /sd/a.txt /store/a|b", sd=sd,
    ).output.splitlines()  # fmt: skip
    assert out == [
        "VFS copy complete",
        "File /store/b.txt size is 2 and digest 60b725f10c9c85c70d97880dfe8191b3",
        "Error: VFS target file cannot be opened",
        "Error: VFS target file cannot be opened",
    ]
    fsck(module, tmp_path)


def test_long_names_get_fatfs_s_numbered_short_names(module: Path, sd: Path, tmp_path: Path) -> None:
    """dir_register's 8.3 name for an entry that needs a long name: ``~1`` to ``~5``, then gen_numname's hash
    (mtools makes the same names for the first five)."""
    names = ["partition-update.log", "10-notify", "a b.txt", "x+y", "Mixed.txt"]
    names += [f"ovms_conf{n}" for n in range(2, 8)]
    run_commands(module, *(f"vfs cp /sd/a.txt '/store/{name}'" for name in names), sd=sd)
    fsck(module, tmp_path)
    raw = (tmp_path / "v.fat").read_bytes()
    root = raw[2 * 4096 : 6 * 4096]  # OVMS's device format: boot sector, one FAT sector, then the root directory
    short = [root[at : at + 11] for at in range(0, len(root), 32) if root[at + 11] not in (0x0F, 0x00)]
    assert short[:12] == [
        b"OVMS_C~1   ", b"PARTIT~1LOG", b"10-NOT~1   ", b"AB~1    TXT", b"X_Y~1      ", b"MIXED   TXT",
        b"OVMS_C~2   ", b"OVMS_C~3   ", b"OVMS_C~4   ", b"OVMS_C~5   ", b"OVM~14C3   ", b"OVM~94C3   ",
    ]  # fmt: skip


def test_ota_flash_vfs_from_store_and_rm_of_an_empty_folder(module: Path, sd: Path, tmp_path: Path) -> None:
    """`ota flash vfs` reads a file in /store through the volume, as OVMS reads any VFS path; `vfs rm` deletes an
    empty folder (f_unlink) but not one with files."""
    (sd / "fw.bin").write_bytes(image("3.3.007", 8192))
    out = run_commands(
        module, "vfs cp /sd/fw.bin /store/fw.bin", "ota flash vfs /store/fw.bin", "vfs rm /store/ovms_config",
        "module reset", "ota status nocheck", sd=sd,
    ).output  # fmt: skip
    assert "Flashed 8192 bytes from /store/fw.bin" in out and "Running partition: ota_1" in out
    assert "Error: protected path" in out  # ovms_config is protected before it is a folder with files
    store = store_of(module)
    with Flash(module) as f:
        volume = StoreVolume(f, store)
        assert volume.makedir("/scripts") and volume.write("/scripts/a.js", b"1")
        assert not volume.remove("/scripts") and volume.remove("/scripts/a.js") and volume.remove("/scripts")
        assert volume.listdir("/scripts") is None
        volume.unmount()
    fsck(module, tmp_path)


def test_a_store_pyfatfs_cannot_read_still_boots_the_module(module: Path) -> None:
    """FatFs's mount reads only the boot sector, so a module with a garbled root directory boots: here it boots
    without /store (one error line, its config empty) and every other command works."""
    store = store_of(module)
    with Flash(module) as f:
        volume = StoreVolume(f, store)
        assert volume.write("/a.txt", b"a")
        volume.unmount()
    with Flash(module) as f:  # the root directory (logical sector 2) as random bytes, through the wear levelling
        wl = WearLevelled(f, store)
        wl.write(2, bytes((n * 37 + 11) % 251 for n in range(4096)))
    out = run_commands(module, "config list vehicle", "vfs ls /store", "ota status nocheck").output.splitlines()
    errors = [line for line in out if line.startswith("E (")]
    assert len(errors) == 1 and "ovms-config: Cannot mount /store: cannot use the FAT volume in /store" in errors[0]
    assert not any(line.startswith("vehicle") for line in out)  # config commands are silent without /store
    assert "Error: VFS cannot open directory listing for that directory" in out
    assert any(line.startswith("Running partition: ") for line in out)

"""The migration's /store side: /store2's mount, the partition-update log writer, and the copy of /store into
/store2 (``ovms_partition_table_copy_store``), all on the FAT volumes a real module has (store_volume.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from ovota.device.fat_store import VolumeError
from ovota.device.flash import Flash
from ovota.device.store import Config
from ovota.device.store_volume import StoreVolume
from ovota.formats.partition_table import DATA, Partition

STORE2 = Partition("store2", DATA, 0x81, 0xE10000, 0x1F0000)
SRC, DST = "/store", "/store2"
LOG_NAME = "partition-update.log"
LOG_PATH = f"{SRC}/{LOG_NAME}"
STORE2_LOG = f"{DST}/{LOG_NAME}"


@dataclass
class Stores:
    """This boot's mounts: /store (the config's volume) and /store2 while it is mounted (ovms_store2_mounted)."""

    config: Config
    store2: StoreVolume | None = None

    @property
    def store(self) -> StoreVolume:
        return self.config.volume

    def mount_store2(self, flash: Flash) -> None:
        """esp_vfs_fat_spiflash_mount("/store2", "store2", format_if_mount_failed)."""
        self.store2 = StoreVolume(flash, STORE2, clock=self.config.clock)

    def unmount_store2(self) -> None:
        if self.store2 is not None:
            volume, self.store2 = self.store2, None
            volume.unmount()

    def locate(self, path: str) -> tuple[StoreVolume, str] | None:
        """The mounted volume holding a /store or /store2 path, and the path inside it; None when the path is
        on neither, or its volume is not mounted."""
        for mount, volume in ((DST, self.store2), (SRC, self.store)):
            if volume is not None and volume.mounted and (path == mount or path.startswith(f"{mount}/")):
                return volume, path.removeprefix(mount) or "/"
        return None


# -- writers ------------------------------------------------------------------------------------------------


class StepWriter:
    """OVMS's OvmsWriter as the migration uses it: a console, or (subclass) the partition-update log."""

    log_path: str | None = None  # the file this writer appends to

    def __init__(self, puts: Callable[[str], None]) -> None:
        self._puts = puts

    def puts(self, line: str) -> None:
        self._puts(line)

    def notify_vfs_migration(self, src: str, dst: str) -> None:
        """A file was copied to ``dst``: a writer appending to ``src`` continues in ``dst``."""


class LogFileWriter(StepWriter):
    """FileWriter("/store/partition-update.log", log_writes=true): each line is appended to the file (fopen "a",
    write, fclose) and logged with tag ``file-writer``. A line the volume refuses (full, damaged) is only
    logged, as FileWriter ignores a failed fopen."""

    def __init__(self, stores: Stores, log: Callable[[str, str, str], None]) -> None:
        super().__init__(lambda line: None)
        self._stores = stores
        self._log = log
        self.log_path = LOG_PATH

    def puts(self, line: str) -> None:
        assert self.log_path is not None
        found = self._stores.locate(self.log_path)
        if found is not None:
            with suppress(VolumeError):  # see the class docstring
                found[0].append(found[1], f"{line}\n".encode())
        self._log(f"{self.log_path}: {line}", "I", "file-writer")

    def notify_vfs_migration(self, src: str, dst: str) -> None:
        if src == self.log_path:
            self._log(f"Migrating to write to {dst}", "I", "file-writer")
            self.log_path = dst


# -- the copy -----------------------------------------------------------------------------------------------


def copy_store(stores: Stores, writer: StepWriter) -> bool:
    """ovms_partition_table_copy_store: breadth-first over /store in directory order. A file whose copy already
    has its size is skipped (still listed); the writer's own log file is copied last, then the writer follows
    it. Returns whether every copy has its source's size."""
    src, dst = stores.store, stores.store2
    assert dst is not None
    copied = errors = 0
    postponed: str | None = None
    writer.puts(f"Copy {SRC} -> {DST} ...")
    queue = [""]
    while queue:
        folder = queue.pop(0)
        writer.puts(f"Scanning directory: {SRC}{folder}")
        for entry in src.listdir(folder or "/") or []:
            path = f"{folder}/{entry.name}"
            if entry.is_dir:
                if dst.makedir(path):
                    writer.puts(f"Create directory: {DST}{path}")
                queue.append(path)
                writer.puts(f"Queued directory: {SRC}{path}")
            elif f"{SRC}{path}" == writer.log_path:
                postponed = path
                writer.puts(f"Postponing log output file {SRC}{path}")
            else:
                done, ok = _copy_file(src, dst, path, writer)
                copied, errors = copied + done, errors + (not ok)
    if postponed is not None:
        done, ok = _copy_file(src, dst, postponed, writer)
        copied, errors = copied + done, errors + (not ok)
        if ok:
            writer.notify_vfs_migration(f"{SRC}{postponed}", f"{DST}{postponed}")
    writer.puts(f"Copy finished: {copied} files copied, {errors} errors")
    return errors == 0


def _copy_file(src: StoreVolume, dst: StoreVolume, path: str, writer: StepWriter) -> tuple[int, bool]:
    """One file: (files copied, whether the copy has the source's size). The line is written first, so the log
    file holds it before it is copied, as on OVMS."""
    writer.puts(f"Copy file: {SRC}{path} -> {DST}{path}")
    data = src.read(path) or b""
    existing = dst.read(path)
    if existing is not None and len(existing) == len(data):
        return 0, True  # OVMS: "file already copied (Note: won't detect same size changes)"
    with suppress(VolumeError):  # the size check below reports it, as OVMS's does after a short fwrite
        dst.write(path, data)
    got = len(dst.read(path) or b"")
    if got != len(data):
        writer.puts(f"Error: size mismatch on {SRC}{path}: {got} bytes copied, {len(data)} expected (/store corrupted)")
        return 0, False
    return 1, True

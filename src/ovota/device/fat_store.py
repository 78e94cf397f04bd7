"""A real module's /store: a FAT volume (pyfatfs) on ESP-IDF's wear levelling, on the emulated flash.

A flash dump from a real module keeps its config as OVMS does: one file per parameter in ``/store/ovms_config``,
a line ``<instance><TAB><value>`` per instance. This module reads and writes that volume in place, sector by
sector through :class:`~ovota.device.wear_levelling.WearLevelled`, so what the emulator writes is what FatFs on
the module (and ESP-IDF's tools) read back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime

from fs.base import FS
from pyfatfs.PyFat import PyFat
from pyfatfs.PyFatFS import PyFatFS

from ovota.device.flash import Flash
from ovota.device.wear_levelling import WearLevelled
from ovota.formats.partition_table import Partition
from ovota.formats.wear_levelling import SECTOR, Layout, State

CONFIG_DIR = "/ovms_config"


def has_wear_levelling(flash: Flash, partition: Partition) -> bool:
    """Whether the partition holds ESP-IDF wear-levelling metadata (a real module's /store, not the emulator's)."""
    try:
        layout = Layout.for_partition(partition.size)
    except ValueError:
        return False
    return any(State.parse(flash.read(partition.offset + at, 64)) is not None for at in (layout.state1, layout.state2))


class SectorFile(io.RawIOBase):
    """The FAT's sectors as one seekable file: reads from any offset; a write rewrites only the sectors whose
    bytes change (an erase and a program each, through wear levelling)."""

    def __init__(self, wl: WearLevelled, writable: bool) -> None:
        self.wl = wl
        self._writable = writable
        self._pos = 0
        self.size = wl.sectors * SECTOR

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self._pos + len(buffer), self.size)
        data = b"".join(self.wl.read(s) for s in range(self._pos // SECTOR, -(-end // SECTOR)))
        start = self._pos % SECTOR
        chunk = data[start : start + end - self._pos]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._writable:
            raise OSError("the store is mounted read-only")
        data = bytes(data)
        end = self._pos + len(data)
        if end > self.size:
            raise OSError(f"write past the end of the volume ({end} > {self.size})")
        for sector in range(self._pos // SECTOR, -(-end // SECTOR)):
            old = self.wl.read(sector)
            lo, hi = max(self._pos, sector * SECTOR), min(end, (sector + 1) * SECTOR)
            new = old[: lo - sector * SECTOR] + data[lo - self._pos : hi - self._pos] + old[hi - sector * SECTOR :]
            if new != old:
                self.wl.write(sector, new)
        self._pos = end
        return len(data)


class FatStore(PyFatFS):  # type: ignore[misc]  # pyfatfs has no type hints
    """pyfatfs's filesystem on a :class:`SectorFile`. PyFatFS opens files by name only; this opens the volume
    from the sector file as PyFatFS.__init__ does from a file."""

    def __init__(self, volume: SectorFile) -> None:
        FS.__init__(self)
        self.preserve_case = True
        self.tz = UTC
        self.fs = PyFat()
        self.fs.set_fp(volume)


def mount_store(flash: Flash, partition: Partition, writable: bool) -> FatStore:
    """The /store volume of a partition with wear-levelling metadata (see :func:`has_wear_levelling`)."""
    return FatStore(SectorFile(WearLevelled(flash, partition), writable))


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    modified: datetime


def _inside(path: str) -> str:
    """``/store/a/b`` → ``/a/b`` on the volume."""
    return path.removeprefix("/store") or "/"


def read_file(flash: Flash, partition: Partition, path: str) -> bytes | None:
    """A file of the volume by its /store path; None if there is none."""
    fs = mount_store(flash, partition, writable=False)
    try:
        return bytes(fs.readbytes(_inside(path))) if fs.isfile(_inside(path)) else None
    finally:
        fs.close()


def list_folder(flash: Flash, partition: Partition, path: str) -> list[Entry] | None:
    """A folder's entries by its /store path, in directory order; None if it is not a folder."""
    fs = mount_store(flash, partition, writable=False)
    try:
        inside = _inside(path)
        if not fs.isdir(inside):
            return None
        entries = []
        for name in fs.listdir(inside):
            info = fs.getinfo(f"{inside.rstrip('/')}/{name}", namespaces=["details"])
            entries.append(Entry(name, info.is_dir, info.size, info.modified or datetime.fromtimestamp(0, UTC)))
        return entries
    finally:
        fs.close()


def write_file(flash: Flash, partition: Partition, path: str, data: bytes | None) -> bool:
    """Write (or, with None, remove) a file by its /store path; False if its folder or the file is missing."""
    fs = mount_store(flash, partition, writable=True)
    try:
        inside = _inside(path)
        if data is None:
            if not fs.isfile(inside):
                return False
            fs.remove(inside)
            return True
        if not fs.isdir(inside.rsplit("/", 1)[0] or "/") or fs.isdir(inside):
            return False
        fs.writebytes(inside, data)
        return True
    finally:
        fs.close()

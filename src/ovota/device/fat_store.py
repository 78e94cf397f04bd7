"""The FAT layer of /store: pyfatfs on ESP-IDF's wear levelling, on the emulated flash, writing as FatFs writes.

Every module's /store (a real module's dump as much as one ``module create`` made) is a FAT volume that this
reads and writes in place, sector by sector through :class:`~ovota.device.wear_levelling.WearLevelled`, so what
the emulator writes is what FatFs on the module (and other FAT tools) read back. store_volume.py mounts it.
"""

from __future__ import annotations

import errno
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

import numpy as np
from fs.base import FS
from pyfatfs.FATDirectoryEntry import make_lfn_entry
from pyfatfs.PyFat import PyFat
from pyfatfs.PyFatFS import PyFatFS

from ovota.device.flash import Interrupted
from ovota.device.wear_levelling import WearLevelled
from ovota.formats.fat_names import fatfs_case_bits, fatfs_short_name, fatfs_trimmed
from ovota.formats.wear_levelling import SECTOR

T = TypeVar("T")
ARCHIVE = 0x20  # AM_ARC: FatFs sets it on a file it creates or writes

# pyfatfs warns about a damaged volume before it fails on it; the failure is what a caller gets (guarded).
# Filtered once here: warnings.catch_warnings() around each call is not thread-safe.
warnings.filterwarnings("ignore", module=r"pyfatfs(\.|$)")


class VolumeError(Exception):
    """The FAT volume in /store cannot be read or written (damaged, full, or a name FatFs would refuse)."""


def guarded(action: Callable[[], T]) -> T:
    """``action()`` on /store, the module owner's data and hostile until read: whatever pyfatfs raises on
    a broken or full volume (its own errors, and TypeError or StopIteration from deep inside it, found by
    fuzzing) is one VolumeError, and its warnings about a damaged volume are that error's business. A power
    cut or a killed task passes through."""
    try:
        return action()
    except Interrupted:
        raise
    except Exception as err:  # see above: the library's failure modes on corrupt input are not enumerable
        if getattr(err, "errno", None) == errno.ENOSPC:
            raise VolumeError(f"the FAT volume in /store is full ({err})") from None
        raise VolumeError(f"cannot use the FAT volume in /store ({str(err) or type(err).__name__})") from None


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


class _FatFsVolume(PyFat):  # type: ignore[misc]  # pyfatfs has no type hints
    """pyfatfs with FatFs's order of writes, which decides what a power cut leaves.

    - pyfatfs marks a mounted volume dirty in its boot sector and clean at unmount. FatFs never writes the
      boot sector after formatting, so this does not either.
    - pyfatfs writes a file's directory entry before the FAT. FatFs (f_sync, remove_chain) writes a new
      cluster's FAT entry before the directory entry that points to it, and frees a chain only after the entry
      that pointed to it is gone: a cut between the two leaves a lost cluster, never an entry that points at
      a free one (which FatFs, and then OVMS's migration copy, cannot read).
    """

    fat: list[int]  # pyfatfs's FAT in memory
    on_disk: list[int] = []  # noqa: RUF012  # the FAT as last written (set at mount)
    creating: str | None = None  # the name of the entry FatStore is creating

    def _mark_dirty(self) -> None:
        pass

    def _mark_clean(self) -> None:
        pass

    def keep_to_the_volume(self) -> None:
        """pyfatfs reads the whole FAT sector (2,730 FAT12 entries) and allocates from all of them, past the
        volume's last cluster: a file bigger than the free space was written beyond the volume's end and left
        chains pointing outside it. FatFs allocates only the volume's clusters, and so does this."""
        bpb = self.bpb_header
        if not bpb.get("BPB_FATSz16") or not bpb.get("BPB_SecPerClus"):
            return  # FAT32 (not an OVMS store): its FAT is as long as its clusters already
        sector = bpb["BPB_BytsPerSec"]
        root = -(-bpb["BPB_RootEntCnt"] * 32 // sector)
        total = bpb["BPB_TotSec16"] or bpb["BPB_TotSec32"]
        system = bpb["BPB_RsvdSecCnt"] + bpb["BPB_NumFATs"] * bpb["BPB_FATSz16"] + root
        clusters = max(0, total - system) // bpb["BPB_SecPerClus"]
        self.fat = self.fat[: clusters + 2]

    def flush_fat(self) -> None:
        super().flush_fat()
        self.on_disk = list(self.fat)

    def __bytes__(self) -> bytes:
        """The FAT as pyfatfs writes it, FAT12 packed with numpy: pyfatfs's own loop over the 2,730 entries of
        a 4 KiB FAT sector took a third of the time of every write."""
        if self.fat_type != self.FAT_TYPE_FAT12:
            return bytes(super().__bytes__())
        entries = np.asarray(self.fat, dtype=np.uint16)
        pairs = len(entries) // 2
        low, high = entries[0 : 2 * pairs : 2], entries[1 : 2 * pairs : 2]
        packed = np.empty((pairs, 3), dtype=np.uint8)
        packed[:, 0] = low & 0xFF
        packed[:, 1] = (low >> 8) | ((high & 0x0F) << 4)
        packed[:, 2] = high >> 4
        tail = int(entries[-1]).to_bytes(2, "little") if len(entries) % 2 else b""
        return packed.tobytes() + tail

    def update_directory_entry(self, dir_entry: Any) -> None:
        if self.creating is not None:
            entries = [e for e in dir_entry._get_entries_raw() if not e.is_special()]  # with their LFN entries
            for entry in entries:
                if str(entry) == self.creating:
                    _as_fatfs_creates(entry, {bytes(e.name.name) for e in entries if e is not entry})
        wanted = self.fat
        staged = [old if new == 0 else new for old, new in zip(self.on_disk, wanted, strict=True)]
        if staged != self.on_disk:  # allocations first; the frees follow with the next flush
            self.fat = staged
            try:
                super().flush_fat()
            finally:
                self.fat = wanted
            self.on_disk = staged
        super().update_directory_entry(dir_entry)


def _as_fatfs_creates(entry: Any, taken: set[bytes]) -> None:
    """A new entry as FatFs creates it: a file has the archive attribute (pyfatfs leaves it 0); a long name that
    fits 8.3 in one case per part is a short name with case bits; any other long name goes with FatFs's 8.3
    name (:func:`~ovota.formats.fat_names.fatfs_short_name`, not one of ``taken``), its LFN entries checksummed
    again."""
    if not entry.is_directory():
        entry.attr |= ARCHIVE
    if entry.lfn_entry is None:
        return
    long_name = str(entry.get_long_name())
    bits = fatfs_case_bits(long_name)
    if bits is not None and str(entry.get_short_name()) == long_name.upper():
        entry.lfn_entry = None
        entry.ntres = (entry.ntres & ~0x18) | bits
        return
    short = fatfs_short_name(long_name, taken)
    if short != bytes(entry.name.name):
        entry.name.set_byte_name(short)
        entry.lfn_entry = make_lfn_entry(long_name, entry.name)


class ModuleTime(tzinfo):
    """UTC whose "now" is the module's clock. pyfatfs stamps files with ``DosDateTime.now(tz)``, which asks the
    zone to convert the host's time (``fromutc``): with this zone the stamps are the module's time, as FatFs's
    get_fattime reads the module's clock."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "UTC"

    def fromutc(self, dt: datetime) -> datetime:
        now = self._clock().astimezone(UTC)
        return dt.replace(
            year=now.year, month=now.month, day=now.day, hour=now.hour, minute=now.minute, second=now.second
        )


class FatStore(PyFatFS):  # type: ignore[misc]  # pyfatfs has no type hints
    """pyfatfs's filesystem on a :class:`SectorFile`. PyFatFS opens files by name only; this opens the volume
    from the sector file as PyFatFS.__init__ does from a file. ``clock``: the time files are stamped with."""

    def __init__(self, volume: SectorFile, clock: Callable[[], datetime] | None = None) -> None:
        FS.__init__(self)
        self.preserve_case = True
        self.tz = UTC if clock is None else ModuleTime(clock)
        self.fs = _FatFsVolume()
        self.fs.set_fp(volume)
        self.fs.keep_to_the_volume()
        self.fs.on_disk = list(self.fs.fat)

    def create(self, path: str, wipe: bool = False) -> bool:
        """A new file, its entry as FatFs writes one (:func:`_as_fatfs_creates`)."""
        self.fs.creating = path.rsplit("/", 1)[-1]
        try:
            return bool(super().create(path, wipe))
        finally:
            self.fs.creating = None

    def makedir(self, path: str, permissions: Any = None, recreate: bool = False) -> Any:
        """A new folder, its entry as FatFs writes one (:func:`_as_fatfs_creates`)."""
        self.fs.creating = path.rsplit("/", 1)[-1]
        try:
            return super().makedir(path, permissions, recreate)
        finally:
            self.fs.creating = None


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    modified: datetime


def shown_name(entry: Any) -> str:
    """A directory entry's name as FatFs gives it: the long name if there is one, else the 8.3 name with the NT
    case bits applied (0x08 base, 0x10 extension in lower case: how FatFs and mtools store ``ota``)."""
    if entry.lfn_entry is not None:
        return str(entry.get_long_name())
    base, dot, ext = str(entry.get_short_name()).partition(".")
    base = base.lower() if entry.ntres & 0x08 else base
    ext = ext.lower() if entry.ntres & 0x10 else ext
    return base + dot + ext


def names(fs: FatStore, folder: str) -> dict[str, str]:
    """A folder's entries: FatFs's name (:func:`shown_name`) → the name pyfatfs opens it by."""
    folder_entry = fs.fs.root_dir.get_entry(folder) if folder != "/" else fs.fs.root_dir
    dirs, files, _ = folder_entry.get_entries()
    return {shown_name(entry): str(entry) for entry in [*dirs, *files]}


def resolve(fs: FatStore, path: str) -> str:
    """``path`` as pyfatfs opens it: each part matched as FatFs matches names (ignoring case), so writing
    ``ota`` replaces the entry a real module made as ``OTA`` with its case bits, not a second one."""
    resolved = ""
    for part in (fatfs_trimmed(p) for p in path.strip("/").split("/")):
        folder = resolved or "/"
        if not fs.isdir(folder):
            return f"{resolved}/{part}"
        known = names(fs, folder)
        match = known.get(part) or next((raw for shown, raw in known.items() if shown.lower() == part.lower()), None)
        resolved = f"{resolved}/{match or part}"
    return resolved or "/"

"""A mounted /store (or /store2): the FAT volume on ESP-IDF's wear levelling, kept mounted for a boot.

``esp_vfs_fat_spiflash_mount`` mounts wear levelling once and FatFs on top of it; the module then reads and
writes through that one mount until it unmounts (``store unmount``, which flushes the wear levelling) or
reboots. A :class:`StoreVolume` is that mount: one WL position, one access count, one FAT cache, so the dummy
sector moves as often as on the module. What cannot be mounted is formatted, as OVMS mounts with
``format_if_mount_failed``.

Paths here are inside the volume (``/ovms_config/ota``); names match as FatFs matches them (ignoring case).
Every method is one :class:`~ovota.device.fat_store.VolumeError` when the volume refuses (damaged, full, a
name FatFs would not take); a power cut passes through, and then this mount is not used again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pyfatfs.DosDateTime import DosDateTime

from ovota.device.fat_store import ARCHIVE, Entry, FatStore, SectorFile, VolumeError, guarded, resolve, shown_name
from ovota.device.flash import Flash
from ovota.device.wear_levelling import WearLevelled
from ovota.formats.fat_names import fatfs_accepts
from ovota.formats.fat_volume import SECTOR, device_format, has_filesystem
from ovota.formats.partition_table import Partition
from ovota.formats.wear_levelling import Layout, State

T = TypeVar("T")


def _host_time() -> datetime:
    return datetime.now(UTC)


def has_wear_levelling(flash: Flash, partition: Partition) -> bool:
    """Whether the partition holds wear-levelling metadata, read without writing (a mount would initialise it)."""
    try:
        layout = Layout.for_partition(partition.size)
    except ValueError:
        return False
    return any(State.parse(flash.read(partition.offset + at, 64)) is not None for at in (layout.state1, layout.state2))


class StoreVolume:
    """The FAT volume of one partition, mounted until :meth:`unmount`. Thread-safe: one operation at a time
    (the AutoFlash task saves ``http.mru`` from its own thread while the console may copy a file)."""

    def __init__(
        self,
        flash: Flash,
        partition: Partition,
        format_if_mount_failed: bool = True,
        lock: threading.RLock | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock``: the module's, for the files' time stamps (the host's UTC without one)."""
        self.partition = partition
        self.lock = lock or threading.RLock()
        self.clock = clock
        self._wl = WearLevelled(flash, partition)
        if not has_filesystem(self._wl.read(0)):
            if not format_if_mount_failed:
                raise VolumeError(f"no FAT filesystem in partition '{partition.name}'")
            self._format()
        # FatFs's mount reads only the boot sector, so a module boots whatever its directories hold. pyfatfs
        # reads the root directory too: where it fails, the volume stays unmounted (why: ``error``), and the
        # module boots without /store, its config empty, rather than not at all.
        self.error: str | None = None
        self._fs: FatStore | None = None
        try:
            self._fs = guarded(self._open)
        except VolumeError as err:
            self.error = str(err)

    def _open(self) -> FatStore:
        return FatStore(SectorFile(self._wl, writable=True), self.clock)

    def _format(self) -> None:
        """f_mkfs: the boot sector, the FAT and the root directory, sector by sector through wear levelling.
        FatFs takes the volume serial number from its clock (GET_FATTIME)."""
        image = device_format(self._wl.sectors, int((self.clock or _host_time)().timestamp()))
        for sector in range(len(image) // SECTOR):
            self._wl.write(sector, image[sector * SECTOR : (sector + 1) * SECTOR])

    @property
    def mounted(self) -> bool:
        return self._fs is not None

    def unmount(self) -> None:
        """esp_vfs_fat_spiflash_unmount: FatFs syncs and lets go, and wear levelling flushes (one dummy move)."""
        with self.lock:
            if self._fs is None:
                return
            fs, self._fs = self._fs, None
            guarded(fs.fs.flush_fat)
            guarded(fs.close)
            self._wl.flush()

    def _on(self, action: Callable[[FatStore], T], changes: bool = False) -> T:
        with self.lock:
            fs = self._fs
            if fs is None:
                raise VolumeError(f"/{self.partition.name} is not mounted")
            try:
                return guarded(lambda: action(fs))
            except VolumeError:
                if changes:  # pyfatfs's tables may hold what never reached the disk: read them again
                    try:
                        self._fs = guarded(self._open)
                    except VolumeError:
                        self._fs = None
                raise

    # -- reading --------------------------------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        """A file's bytes; None if there is no such file."""

        def read(fs: FatStore) -> bytes | None:
            inside = resolve(fs, path)
            return bytes(fs.readbytes(inside)) if fs.isfile(inside) else None

        return self._on(read)

    def is_dir(self, path: str) -> bool:
        return self._on(lambda fs: bool(fs.isdir(resolve(fs, path))))

    def listdir(self, path: str) -> list[Entry] | None:
        """A folder's entries in directory order (FatFs's names); None if it is not a folder."""

        def listing(fs: FatStore) -> list[Entry] | None:
            inside = resolve(fs, path)
            if not fs.isdir(inside):
                return None
            folder = fs.fs.root_dir.get_entry(inside) if inside != "/" else fs.fs.root_dir
            return [  # readdir's order: as the entries sit in the directory (pyfatfs's listing puts folders first)
                Entry(shown_name(e), e.is_directory(), e.filesize, e.get_mtime().replace(tzinfo=UTC))
                for e in folder._get_entries_raw()
                if not e.is_special() and not e.is_volume_id()
            ]

        return self._on(listing)

    # -- writing --------------------------------------------------------------------------------------------

    def write(self, path: str, data: bytes) -> bool:
        """fopen "w" and write: FatFs's FA_CREATE_ALWAYS (the entry emptied and its chain freed, in that order),
        then the data; False if its folder is missing, the path is a folder, or FatFs would refuse the name."""

        def write(fs: FatStore) -> bool:
            inside = _existing(fs, path)
            if inside is None:
                return False
            entry = fs.fs.root_dir.get_entry(inside)
            _truncate(fs, entry)
            _stamp(fs, entry)
            if data:
                with fs.openbin(inside, "r+b") as file:
                    file.write(data)
            return True

        return self._on(write, changes=True)

    def append(self, path: str, data: bytes) -> bool:
        """fopen "a" and write: only the file's last cluster, its directory entry (and the FAT when a cluster
        is added) are rewritten."""

        def append(fs: FatStore) -> bool:
            inside = _existing(fs, path)
            if inside is None:
                return False
            _stamp(fs, fs.fs.root_dir.get_entry(inside))
            with fs.openbin(inside, "a") as file:
                file.write(data)
            return True

        return self._on(append, changes=True)

    def makedir(self, path: str) -> bool:
        """mkdir; False if it exists already (as a folder or a file) or FatFs would refuse its name."""

        def makedir(fs: FatStore) -> bool:
            inside = resolve(fs, path)
            if fs.exists(inside) or not fatfs_accepts(inside.rsplit("/", 1)[-1]):
                return False
            fs.makedir(inside)
            return True

        return self._on(makedir, changes=True)

    def remove(self, path: str) -> bool:
        """unlink (f_unlink: the entry goes, then its chain is freed): a file, or an empty folder as ESP-IDF's
        unlink allows; False if there is neither."""

        def remove(fs: FatStore) -> bool:
            inside = resolve(fs, path)
            if fs.isdir(inside) and inside != "/" and not fs.listdir(inside):
                fs.removedir(inside)
            elif fs.isfile(inside):
                fs.remove(inside)
            else:
                return False
            fs.fs.flush_fat()  # pyfatfs frees the chain in memory only
            return True

        return self._on(remove, changes=True)


def _existing(fs: FatStore, path: str) -> str | None:
    """The name pyfatfs opens a file by, the file created empty first if it is new (as fopen "w" or "a" does);
    None if its folder is missing, the path is a folder, or FatFs would refuse the name. The name is looked up
    again after the creation: a short name such as ``ota`` is stored as FatFs stores it (``OTA`` with case bits),
    and pyfatfs then finds it only by that name."""
    inside = resolve(fs, path)
    if not fs.isdir(inside.rsplit("/", 1)[0] or "/") or fs.isdir(inside):
        return None
    if not fs.exists(inside):
        if not fatfs_accepts(inside.rsplit("/", 1)[-1]):
            return None
        fs.create(inside)
        inside = resolve(fs, path)
    return inside


def _truncate(fs: FatStore, entry: Any) -> None:
    """FA_CREATE_ALWAYS on an existing file: the entry says 0 bytes and no cluster, written first; then its
    chain is freed. (pyfatfs's own truncation kept the first cluster without ending its chain there.)"""
    first = entry.get_cluster()
    if first == 0 and entry.filesize == 0:
        return
    entry.set_cluster(0)
    entry.filesize = 0
    fs.fs.update_directory_entry(entry.get_parent_dir())
    if first:
        fs.fs.free_cluster_chain(first)
        fs.fs.flush_fat()


def _stamp(fs: FatStore, entry: Any) -> None:
    """f_sync's update of a written file's entry: the archive attribute and the modification time, written
    with the entry's next update."""
    now = DosDateTime.now(tz=fs.tz)
    entry.attr |= ARCHIVE
    entry.wrttime, entry.wrtdate = now.serialize_time(), now.serialize_date()
    entry.lstaccessdate = now.serialize_date()

"""``vfs …``: OVMS's file commands over /sd (the emulator's ``--sd`` folder) and /store, with OVMS 3.3.006's
messages. Every path is checked against OvmsConfig::ProtectedPath first: the config files are off limits.

On a real module's dump /store is its FAT volume, read and written in place. A module made by ``module create``
holds its config as a record, not as files: its /store shows the one file a user reads there,
``/store/partition-update.log``, read-only."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISDIR
from typing import TypeVar

from ovota.device import fat_store
from ovota.device.console.auto import local_time
from ovota.device.console.flashing import ovms_realpath, protected_path, vfs_local
from ovota.device.console.session import Session
from ovota.device.console.tree import Command
from ovota.device.fat_store import guarded
from ovota.device.migrate import read_log
from ovota.device.store_copy import LOG_PATH as UPDATE_LOG
from ovota.formats.partition_table import Partition

T = TypeVar("T")


def register(root: Command) -> None:
    vfs = root.add(Command("vfs", "Virtual File System framework"))
    vfs.add(Command("ls", "VFS Directory Listing", vfs_ls, "[<file>]", 0, 1))
    vfs.add(Command("cat", "VFS Display a file", vfs_cat, "<file>", 1, 1))
    vfs.add(Command("stat", "VFS Status of a file", vfs_stat, "<file>", 1, 1))
    vfs.add(Command("rm", "VFS Delete a file", vfs_rm, "<file>", 1, 1))
    vfs.add(Command("cp", "VFS Copy a file", vfs_cp, "<source> <target>", 2, 2))


def _allowed(session: Session, *paths: str) -> bool:
    if any(protected_path(path) for path in paths):
        session.out.puts("Error: protected path")
        return False
    return True


def _fat(session: Session, path: str) -> Partition | None:
    """The store partition, when ``path`` is in a real FAT /store."""
    store = session.module.layout.store
    real = ovms_realpath(path)
    in_store = real == "/store" or real.startswith("/store/")
    return store if in_store and store is not None and session.module.config.files else None


def _on_volume(session: Session, action: Callable[[], T]) -> T:
    """An operation on a real /store's volume, one at a time with the config's writes (the AutoFlash task saves
    http.mru from its own thread), its failures one VolumeError."""
    with session.module.config.lock:
        return guarded(action)


def _write_store(session: Session, store: Partition, path: str, data: bytes | None) -> bool:
    """Write (None: remove) a file of a real /store; False if its folder or the file is missing."""
    return _on_volume(session, lambda: fat_store.write_file(session.module.flash, store, ovms_realpath(path), data))


def _read(session: Session, path: str) -> bytes | None:
    """A file's bytes: from the --sd folder, a real FAT /store, or the emulator's partition-update log."""
    fat = _fat(session, path)
    if fat is not None:
        return _on_volume(session, lambda: fat_store.read_file(session.module.flash, fat, ovms_realpath(path)))
    if ovms_realpath(path) == UPDATE_LOG:
        store = session.module.layout.store
        lines = read_log(session.module.flash, store) if store is not None else []
        return "".join(f"{line}\n" for line in lines).encode() if lines else None
    local = vfs_local(session.module.sd_dir, ovms_realpath(path))
    if local is None or not local.is_file():
        return None
    try:
        return local.read_bytes()
    except OSError:
        return None


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} "
    if size < 0x100000:
        return f"{size / 1024:.1f}k"
    return f"{size / 1048576:.1f}M"


def _store_listing(session: Session) -> None:
    """/store as OVMS's FAT holds it, as far as the emulator keeps it: the config folder and the update log."""
    now = session.module.clock.now
    _ls_line(session, "ovms_config", True, 0, now)
    data = _read(session, UPDATE_LOG)
    if data is not None:
        _ls_line(session, "partition-update.log", False, len(data), now)


def vfs_ls(session: Session, args: list[str]) -> None:
    path = args[0] if args else "/"
    if args and not _allowed(session, path):
        return
    store = _fat(session, path)
    if store is not None:
        entries = _on_volume(session, lambda: fat_store.list_folder(session.module.flash, store, ovms_realpath(path)))
        if entries is None:
            session.out.puts("Error: VFS cannot open directory listing for that directory")
            return
        for item in entries:
            _ls_line(session, item.name, item.is_dir, item.size, item.modified)
        return
    if ovms_realpath(path) == "/store":
        _store_listing(session)
        return
    folder = vfs_local(session.module.sd_dir, ovms_realpath(path))
    if folder is None or not folder.is_dir():
        session.out.puts("Error: VFS cannot open directory listing for that directory")
        return
    for entry in sorted(folder.iterdir()):
        try:
            stat = entry.stat()
        except OSError:  # a link to nowhere: listed by its own entry, as readdir lists it
            stat = entry.lstat()
        modified = datetime.fromtimestamp(stat.st_mtime, UTC)
        _ls_line(session, entry.name, S_ISDIR(stat.st_mode), stat.st_size, modified)


def _ls_line(session: Session, name: str, is_dir: bool, size: int, modified: datetime) -> None:
    """vfs_ls's ``%8.8s  %17.17s  %s%s`` line, the time local to the module."""
    shown = "[DIR]   " if is_dir else _size(size)
    when = local_time(session.module, modified)
    session.out.write(f"{shown[:8]:>8}  {when:%d-%b-%Y %H:%M}  {name}{'/' if is_dir else ''}\n")


def vfs_cat(session: Session, args: list[str]) -> None:
    if not _allowed(session, args[0]):
        return
    data = _read(session, args[0])
    if data is None:
        session.out.puts("Error: VFS file cannot be opened")
        return
    session.out.write(data.decode("utf-8", "replace"), counted=False)  # a file's text is not a failed command


def vfs_stat(session: Session, args: list[str]) -> None:
    if not _allowed(session, args[0]):
        return
    data = _read(session, args[0])
    if data is None:
        session.out.puts("Error: VFS file cannot be opened")
        return
    session.out.write(f"File {args[0]} size is {len(data)} and digest {hashlib.md5(data).hexdigest()}\n")


def _sd_file(session: Session, path: str) -> Path | None:
    return vfs_local(session.module.sd_dir, ovms_realpath(path))


def vfs_rm(session: Session, args: list[str]) -> None:
    if not _allowed(session, args[0]):
        return
    store = _fat(session, args[0])
    if store is not None:
        removed = _write_store(session, store, args[0], None)
        session.out.puts("VFS File deleted" if removed else "Error: Could not delete VFS file")
        return
    local = _sd_file(session, args[0])
    try:
        if local is None or not local.is_file():
            raise OSError
        local.unlink()
    except OSError:
        session.out.puts("Error: Could not delete VFS file")
        return
    session.out.puts("VFS File deleted")


def vfs_cp(session: Session, args: list[str]) -> None:
    if not _allowed(session, args[0], args[1]):
        return
    data = _read(session, args[0])
    if data is None:
        session.out.puts("Error: VFS source file cannot be opened")
        return
    store = _fat(session, args[1])
    if store is not None:
        copied = _write_store(session, store, args[1], data)
        session.out.puts("VFS copy complete" if copied else "Error: VFS target file cannot be opened")
        return
    target = _sd_file(session, args[1])
    try:
        if target is None or target.is_dir():
            raise OSError
        target.write_bytes(data)
    except OSError:
        session.out.puts("Error: VFS target file cannot be opened")
        return
    session.out.puts("VFS copy complete")

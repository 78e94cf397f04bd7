"""``vfs …``: OVMS's file commands over /sd (the emulator's ``--sd`` folder) and /store, with OVMS 3.3.006's
messages. Every path is checked against OvmsConfig::ProtectedPath first: the config files are off limits.

/store (and /store2 while the migration has it mounted) is the FAT volume on flash, read and written in place
through the boot's mount, one operation at a time with the config's writes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISDIR

from ovota.device.console.auto import local_time
from ovota.device.console.flashing import ovms_realpath, protected_path, vfs_local
from ovota.device.console.session import Session
from ovota.device.console.tree import Command
from ovota.device.store_volume import StoreVolume


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


def _volume(session: Session, path: str) -> tuple[StoreVolume, str] | None:
    """The mounted FAT volume a /store or /store2 path is on, and the path inside it."""
    return session.module.stores.locate(ovms_realpath(path))


def _read(session: Session, path: str) -> bytes | None:
    """A file's bytes: from /store or /store2, or the --sd folder."""
    found = _volume(session, path)
    if found is not None:
        return found[0].read(found[1])
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


def vfs_ls(session: Session, args: list[str]) -> None:
    path = args[0] if args else "/"
    if args and not _allowed(session, path):
        return
    found = _volume(session, path)
    if found is not None:
        entries = found[0].listdir(found[1])
        if entries is None:
            session.out.puts("Error: VFS cannot open directory listing for that directory")
            return
        for item in entries:
            _ls_line(session, item.name, item.is_dir, item.size, item.modified)
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
    found = _volume(session, args[0])
    if found is not None:
        removed = found[0].remove(found[1])
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
    found = _volume(session, args[1])
    if found is not None:
        copied = found[0].write(found[1], data)
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

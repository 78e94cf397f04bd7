"""A consistent copy of an embedded repository while servers keep writing to it.

The database is copied with SQLite's online backup (a snapshot of one moment, taken page by page without
stopping writers); then every blob the snapshot names is copied and checked against its SHA-256. Blobs are
immutable and written before any row names them, so the snapshot never names a blob that is missing. The copy
is itself a repository folder: ``ovota server --repo COPY`` serves it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ovota.files import write_atomic
from ovota.server.store.blobstore import file_sha256
from ovota.server.store.errors import RepositoryError


def backup_folder(source: Path, target: Path) -> tuple[int, int]:
    """Copy the repository folder ``source`` to the new folder ``target``: (database bytes, blobs copied)."""
    database = source / "repo.sqlite"
    if not database.exists():
        raise RepositoryError(f"no repository at {source}")
    if target.exists() and any(target.iterdir()):
        raise RepositoryError(f"{target} exists and is not empty: back up into a new folder")
    (target / "blobs").mkdir(parents=True, exist_ok=True)
    partial = target / "repo.sqlite.partial"
    with sqlite3.connect(database) as live, sqlite3.connect(partial) as copy:
        live.backup(copy)
    with sqlite3.connect(partial) as copy:
        names = [str(r[0]) for r in copy.execute("SELECT sha256 FROM builds")]
        names += [str(r[0]) for r in copy.execute("SELECT patch_sha256 FROM deltas WHERE state = 'ready'")]
    for name in names:
        found = source / "blobs" / name[:2] / name
        if file_sha256(found) != name:
            raise RepositoryError(f"blob {name} in {source} is damaged: the backup stops here ({target} is partial)")
        write_atomic(target / "blobs" / name[:2] / name, found.read_bytes())
    partial.rename(target / "repo.sqlite")  # last: a folder without it is visibly not a finished backup
    return (target / "repo.sqlite").stat().st_size, len(names)

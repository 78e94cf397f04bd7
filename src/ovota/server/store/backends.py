"""Where a repository lives: a folder (SQLite + ``blobs/``), or PostgreSQL + an S3 bucket with a local cache."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ovota.server.store.blobstore import BlobStore, FolderBlobs, S3Blobs
from ovota.server.store.database import PostgresDatabase, SqliteDatabase, open_database


@dataclass(frozen=True)
class Backends:
    """``folder`` alone: the embedded repository. ``db`` and ``blobs`` together: the cluster backends, with
    blobs cached under ``cache`` (default ``$OVOTA_CACHE`` or ``~/.cache/ovota``, then a hash of the two URLs)."""

    folder: Path | None = None
    db: str | None = None
    blobs: str | None = None
    cache: Path | None = None

    def __post_init__(self) -> None:
        if self.folder is None and (self.db is None or self.blobs is None):
            raise ValueError("give a repository folder, or both a PostgreSQL URL and an s3:// blob store")
        if self.folder is not None and (self.db or self.blobs):
            raise ValueError("give either a repository folder or a PostgreSQL URL and an s3:// blob store, not both")
        if self.db is not None and not self.db.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"invalid database URL {self.db!r}: use postgresql://…")
        if self.blobs is not None and not self.blobs.startswith("s3://"):
            raise ValueError(f"invalid blob store URL {self.blobs!r}: use s3://BUCKET[/PREFIX]")

    @property
    def cache_dir(self) -> Path:
        if self.cache is not None:
            return self.cache
        key = hashlib.sha256(f"{self.db}\n{self.blobs}".encode()).hexdigest()[:16]
        home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(os.environ.get("OVOTA_CACHE") or Path(home) / "ovota") / key

    def open_database(self, busy_timeout: float = 30.0) -> SqliteDatabase | PostgresDatabase:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            return open_database(self.folder / "repo.sqlite", busy_timeout)
        assert self.db is not None
        return open_database(self.db, busy_timeout)

    def open_blobs(self) -> BlobStore:
        if self.folder is not None:
            return FolderBlobs(self.folder / "blobs")
        assert self.blobs is not None
        return S3Blobs(self.blobs, self.cache_dir)

    def describe(self) -> str:
        if self.folder is not None:
            return str(self.folder)
        return f"{_without_password(self.db or '')} + {self.blobs}"


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"

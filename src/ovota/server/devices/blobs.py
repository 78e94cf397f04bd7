"""Build and patch blobs, each opened once per process: blobs are content-addressed and never change, so an
open descriptor stays valid and its SHA-256 is a strong ETag."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO

from ovota.server.store.repository import Repository


@dataclass(frozen=True)
class OpenBlob:
    file: BinaryIO
    size: int
    etag: str
    last_modified: str
    mtime: float

    @classmethod
    def open(cls, path: Path, sha256: str) -> OpenBlob:
        file = path.open("rb")
        stat = os.fstat(file.fileno())
        mtime = int(stat.st_mtime)  # HTTP dates have whole seconds
        return cls(file, stat.st_size, f'"{sha256}"', formatdate(mtime, usegmt=True), mtime)


class OpenBlobs:
    """The blobs this process serves, by SHA-256 (only builds and patches the repository names)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._open: dict[str, OpenBlob] = {}

    async def get(self, sha256: str) -> OpenBlob:
        """The blob, opened on first use. With S3 the first request fetches it into the local cache (in a
        thread; BlobUnavailable if the store is down)."""
        blob = self._open.get(sha256)
        if blob is None:
            path = await asyncio.to_thread(self.repo.blob_path, sha256)
            blob = self._open[sha256] = OpenBlob.open(path, sha256)
        return blob

    def close(self) -> None:
        for blob in self._open.values():
            blob.file.close()
        self._open.clear()

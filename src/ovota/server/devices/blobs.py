"""Build and patch blobs, each opened once per process: blobs are content-addressed and never change, so an
open descriptor stays valid and its SHA-256 is a strong ETag. A blob's bytes are checked against its name when
this process first opens it: a file damaged or replaced on disk is never served under the name (503, logged)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import BinaryIO

from ovota.server.store.blobstore import BlobUnavailable
from ovota.server.store.repository import Repository

log = logging.getLogger("ovota.server")


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


BLOB_WAIT = 10.0  # seconds a device request waits for a blob to be fetched (under the idle timeout)


class OpenBlobs:
    """The blobs this process serves, by SHA-256 (only builds and patches the repository names)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._open: dict[str, OpenBlob] = {}
        self._loading: dict[str, asyncio.Future[OpenBlob]] = {}

    async def get(self, sha256: str) -> OpenBlob:
        """The blob, opened and checked on first use (in a thread, one at a time per blob). With S3 the first
        request fetches it into the local cache. BlobUnavailable if the store is down, does not answer within
        BLOB_WAIT seconds (the fetch goes on for the next request), or the blob is missing or damaged."""
        blob = self._open.get(sha256)
        if blob is not None:
            return blob
        loading = self._loading.get(sha256)
        if loading is None:
            loading = self._loading[sha256] = asyncio.ensure_future(asyncio.to_thread(self._open_checked, sha256))
            loading.add_done_callback(lambda done: self._loaded(sha256, done))
        try:
            return await asyncio.wait_for(asyncio.shield(loading), BLOB_WAIT)
        except TimeoutError:
            raise BlobUnavailable(f"blob {sha256[:12]} not fetched within {BLOB_WAIT:g} s", "timeout") from None

    def _loaded(self, sha256: str, done: asyncio.Future[OpenBlob]) -> None:
        self._loading.pop(sha256, None)
        if not done.cancelled() and done.exception() is None:
            self._open[sha256] = done.result()

    def _open_checked(self, sha256: str) -> OpenBlob:
        # The bytes checked are those of the descriptor that will be served (no window between check and open).
        for _ in range(2):
            path = self.repo.blob_path(sha256)
            try:
                blob = OpenBlob.open(path, sha256)
            except OSError as err:
                problem = f"blob {sha256} cannot be read ({path}): {err.strerror}"
                break
            found = _sha256_of(blob.file)
            if found == sha256:
                return blob
            blob.file.close()
            problem = f"blob {sha256} is damaged ({path}): its bytes hash to {found}"
            if not self.repo.blobs.discard_local(sha256):  # S3: fetch it again, once
                break
        log.error("%s: not served", problem)
        raise BlobUnavailable(problem, "damaged" if "damaged" in problem else "unreadable")

    def close(self) -> None:
        for blob in self._open.values():
            blob.file.close()
        self._open.clear()


def _sha256_of(file: BinaryIO) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(file.fileno(), 1 << 20, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()

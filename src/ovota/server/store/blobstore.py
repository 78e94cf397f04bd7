"""Content-addressed blob storage: the repository folder's ``blobs/``, or an S3 bucket with a local cache.

Blobs are named by their SHA-256 and never change. With S3, an upload is read back and its SHA-256 checked
before anyone may point at it, and the server serves from a local read-through cache (sendfile needs a local
file), filled on first use and checked against the name before it is used.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Protocol

from ovota.files import write_atomic


class BlobUnavailable(Exception):
    """The blob cannot be had now (object store unreachable) or is missing; one line for the user."""


class BlobStore(Protocol):
    def put(self, sha256: str, data: bytes) -> None:
        """Store ``data`` under its SHA-256 (nothing to do if it is there already); durable on return."""
        ...

    def local_path(self, sha256: str) -> Path:
        """A local file with the blob's bytes (fetched into the cache first if need be)."""
        ...

    def names(self) -> list[str]:
        """Every stored blob's SHA-256."""
        ...

    def discard_local(self, sha256: str) -> bool:
        """Forget a local copy found damaged, if another copy exists (S3: the next use fetches it again)."""
        ...

    def remove_partials(self, older_than: float) -> list[Path]:
        """Remove files left by writes that never finished (a killed publish), older than ``older_than``
        seconds; the paths removed."""
        ...


def _shard(root: Path, sha256: str) -> Path:
    return root / sha256[:2] / sha256


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex (read in 1 MiB pieces)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def blob_problem(blobs: BlobStore, sha256: str) -> str | None:
    """Why the blob's local copy cannot be served (missing, or other bytes than its name says), None if it
    can. A damaged copy that has another (S3) is fetched again first."""
    for _ in range(2):
        try:
            found = file_sha256(blobs.local_path(sha256))
        except OSError as err:
            return f"blob {sha256} cannot be read: {err.strerror}"
        if found == sha256:
            return None
        if not blobs.discard_local(sha256):
            break
    return f"blob {sha256} is damaged: its bytes hash to {found}"


def _remove_partials(root: Path, older_than: float) -> list[Path]:
    # write_atomic's temporary files are ".<name>.<random>" beside their target.
    limit = time.time() - older_than
    removed = []
    for path in root.glob("??/.*"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue  # finished or removed meanwhile
    return removed


class FolderBlobs:
    """``<repository>/blobs/ab/abcd…``: the embedded default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, sha256: str, data: bytes) -> None:
        path = _shard(self.root, sha256)
        # Publishing the same bytes again also repairs a stored copy that was damaged on disk.
        if path.exists() and path.stat().st_size == len(data) and file_sha256(path) == sha256:
            return
        write_atomic(path, data)

    def local_path(self, sha256: str) -> Path:
        return _shard(self.root, sha256)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.glob("??/*") if len(p.name) == 64)

    def discard_local(self, sha256: str) -> bool:
        return False  # the folder is the only copy: keep it for the operator to look at

    def remove_partials(self, older_than: float) -> list[Path]:
        return _remove_partials(self.root, older_than)


class S3Blobs:
    """``s3://BUCKET[/PREFIX]``; endpoint, region and credentials from the standard AWS variables."""

    def __init__(self, url: str, cache: Path) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"invalid blob store URL {url!r}: use s3://BUCKET[/PREFIX]")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = cache
        cache.mkdir(parents=True, exist_ok=True)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The S3 client, made on first use: most commands never touch a blob, and boto3 is slow to load."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
            self._client = boto3.client("s3", endpoint_url=endpoint, config=config)
        return self._client

    def _key(self, sha256: str) -> str:
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, sha256: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if self._stored_size(sha256) != len(data):
                self.client.put_object(Bucket=self.bucket, Key=self._key(sha256), Body=data)
            # Read back and check before any channel may point at it: a store that acknowledged but lost
            # or mangled the bytes fails the publish here, not a module later.
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"].read()
        except (BotoCoreError, ClientError) as err:
            raise BlobUnavailable(f"object store: {err}") from None
        if hashlib.sha256(body).hexdigest() != sha256:
            raise BlobUnavailable(f"object store returned other bytes for blob {sha256} after the upload")
        write_atomic(_shard(self.cache, sha256), data)

    def _stored_size(self, sha256: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(sha256))["ContentLength"])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def local_path(self, sha256: str) -> Path:
        path = _shard(self.cache, sha256)
        if path.exists():
            return path
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(sha256))["Body"].read()
        except (BotoCoreError, ClientError) as err:
            raise BlobUnavailable(f"object store: {err}") from None
        if hashlib.sha256(body).hexdigest() != sha256:
            raise BlobUnavailable(f"object store holds other bytes under blob {sha256}")
        write_atomic(path, body)
        return path

    def discard_local(self, sha256: str) -> bool:
        _shard(self.cache, sha256).unlink(missing_ok=True)
        return True

    def remove_partials(self, older_than: float) -> list[Path]:
        return _remove_partials(self.cache, older_than)

    def names(self) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        prefix = f"{self.prefix}/" if self.prefix else ""
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found += [item["Key"].rsplit("/", 1)[-1] for item in page.get("Contents", [])]
        return sorted(name for name in found if len(name) == 64)

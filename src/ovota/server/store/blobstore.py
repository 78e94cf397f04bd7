"""Content-addressed blob storage: the repository folder's ``blobs/``, or an S3 bucket with a local cache.

Blobs are named by their SHA-256 and never change. With S3, an upload is read back and its SHA-256 checked
before anyone may point at it, and the server serves from a local read-through cache (sendfile needs a local
file), filled on first use and checked against the name before it is used.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ovota.files import write_atomic


class BlobUnavailable(Exception):
    """The blob cannot be had now (object store unreachable) or is missing; one line for the user. ``cause``: a
    short name for what went wrong (for metrics and for logging each cause once)."""

    def __init__(self, message: str, cause: str = "unavailable") -> None:
        super().__init__(message)
        self.cause = cause


T = TypeVar("T")
# Error codes an S3 service gives for what may pass (throttling, a restart, an overloaded node): retried.
TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
    "RequestTimeoutException", "RequestLimitExceeded", "TooManyRequestsException", "PriorRequestNotComplete",
    "500", "502", "503", "504",
})  # fmt: skip
DEADLINE = 8.0  # seconds a blob operation keeps retrying (plus at most one call's timeouts: 7 s)


def retrying(what: str, call: Callable[[], T], until: float | None = None) -> T:
    """``call()`` again, with exponential backoff and jitter, while it fails with an error that may pass
    (throttling, a 5xx or ``InternalError``, a timeout, a connection refused or reset) and the deadline
    (``until``, on ``time.monotonic``; default DEADLINE seconds from now) has not passed; what cannot succeed
    (403, 404, a missing bucket) is raised at once. BlobUnavailable once it gives up, naming the cause."""
    from botocore.exceptions import BotoCoreError, ClientError

    give_up = time.monotonic() + DEADLINE if until is None else until
    pause = 0.1
    while True:
        try:
            return call()
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code not in TRANSIENT_CODES and status not in TRANSIENT_CODES:
                raise BlobUnavailable(f"object store: {what}: {err}", code or status or "error") from None
            cause, problem = code or status, err
        except BotoCoreError as err:
            cause, problem = type(err).__name__, err
        if time.monotonic() + pause >= give_up:
            raise BlobUnavailable(f"object store: {what}: {problem} (gave up retrying)", cause)
        time.sleep(pause * random.uniform(0.5, 1.0))
        pause = min(pause * 2, 2.0)


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

    def ping(self) -> None:
        """A real round trip to the store (BlobUnavailable if it does not answer): for readiness checks."""
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

    def ping(self) -> None:
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise BlobUnavailable(f"blob folder {self.root} cannot be read or written", "folder")


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

            # One attempt per call with short timeouts: ``retrying`` retries what may pass inside an overall deadline
            # (botocore's own retries have none: a frozen store would hold a request for minutes).
            config = Config(connect_timeout=2, read_timeout=5, retries={"total_max_attempts": 1, "mode": "standard"})
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
            self._client = boto3.client("s3", endpoint_url=endpoint, config=config)
        return self._client

    def _key(self, sha256: str) -> str:
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, sha256: str, data: bytes) -> None:
        key, until = self._key(sha256), time.monotonic() + 2 * DEADLINE  # one deadline for the three calls
        if self._stored_size(sha256, until) != len(data):
            retrying(f"upload {sha256[:12]}", lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data),
                     until)  # fmt: skip
        # Read back and check before any channel may point at it: a store that acknowledged but lost or mangled
        # the bytes fails the publish here, not a module later.
        body = self._get(sha256, until)
        if hashlib.sha256(body).hexdigest() != sha256:
            raise BlobUnavailable(f"object store returned other bytes for blob {sha256} after the upload", "mangled")
        write_atomic(_shard(self.cache, sha256), data)

    def _get(self, sha256: str, until: float | None = None) -> bytes:
        key = self._key(sha256)

        def read() -> bytes:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

        return retrying(f"read {sha256[:12]}", read, until)

    def _stored_size(self, sha256: str, until: float) -> int | None:
        key = self._key(sha256)
        try:
            head = retrying(f"look up {sha256[:12]}", lambda: self.client.head_object(Bucket=self.bucket, Key=key),
                            until)  # fmt: skip
        except BlobUnavailable as err:
            if err.cause in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def local_path(self, sha256: str) -> Path:
        path = _shard(self.cache, sha256)
        if path.exists():
            return path
        body = self._get(sha256)
        if hashlib.sha256(body).hexdigest() != sha256:
            raise BlobUnavailable(f"object store holds other bytes under blob {sha256}", "mangled")
        write_atomic(path, body)
        return path

    def ping(self) -> None:
        retrying("reach the bucket", lambda: self.client.head_bucket(Bucket=self.bucket), time.monotonic() + 1.0)

    def discard_local(self, sha256: str) -> bool:
        _shard(self.cache, sha256).unlink(missing_ok=True)
        return True

    def remove_partials(self, older_than: float) -> list[Path]:
        return _remove_partials(self.cache, older_than)

    def names(self) -> list[str]:
        prefix = f"{self.prefix}/" if self.prefix else ""

        def listing() -> list[str]:
            found = []
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [item["Key"].rsplit("/", 1)[-1] for item in page.get("Contents", [])]
            return found

        return sorted(name for name in retrying("list the bucket", listing, time.monotonic() + 60) if len(name) == 64)

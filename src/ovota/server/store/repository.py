"""The release repository: content-addressed build blobs plus a database of builds and channels.

A publish stores the blob durably (fsynced, or uploaded and read back), then moves the channel pointer in
one transaction: readers see the old build or the new one, never a half-written file. Blobs are immutable
and never rewritten. The backends are a folder (SQLite) or PostgreSQL and an S3 bucket (backends.py).
"""

from __future__ import annotations

import errno
import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ovota.server.store import channels
from ovota.server.store.audit import audited
from ovota.server.store.backends import Backends
from ovota.server.store.blobstore import BlobUnavailable, blob_problem
from ovota.server.store.clock import ServerClock, stored_clock
from ovota.server.store.database import Database
from ovota.server.store.errors import NotFound, RepositoryError, StorageFull, Unavailable
from ovota.server.store.images import check_fits, check_name, default_product, inspect_image
from ovota.server.store.product_rules import (
    add_build_product,
    build_products,
    check_channel_name,
    min_secure_version,
)
from ovota.server.store.trust import BuildSecurity, check_trusted, image_security, record_security

BIN, VER = "ovms3.bin", "ovms3.ver"  # the files a channel serves at /firmware/ota/<product>/<tag>/
_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)  # a disk full or failing


@dataclass(frozen=True)
class Build:
    sha256: str
    size: int
    version: str
    project: str
    changelog: str
    created: float


@dataclass(frozen=True)
class Channel:
    product: str
    tag: str
    build: Build
    updated: float

    @property
    def ver_file(self) -> bytes:
        """ovms3.ver: the version on line 1, then the changelog."""
        text = self.build.version + "\n" + self.build.changelog
        return text.encode() if text.endswith("\n") else (text + "\n").encode()


class Repository:
    """A folder with ``blobs/`` and ``repo.sqlite`` (safe for several processes: SQLite WAL), or PostgreSQL and
    an S3 bucket shared by several servers."""

    def __init__(self, where: Path | Backends, busy_timeout: float = 30.0) -> None:
        """Open the repository; statements wait at most ``busy_timeout`` seconds for another process's lock."""
        self.backends = where if isinstance(where, Backends) else Backends(folder=where)
        self.db = self.backends.open_database(busy_timeout)
        self.blobs = self.backends.open_blobs()
        self.actor = ""  # who acts through this connection now, for the audit log (store/audit.py)

    def close(self) -> None:
        self.db.close()

    def clock(self, scale: float | None = None, driven: bool = False) -> ServerClock:
        """The server clock kept in this repository (see ``stored_clock``)."""
        return stored_clock(self.db, scale, driven)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        with self.db.transaction():
            yield self.db

    def leads(self, role: str) -> bool:
        """True if this process decides for ``role`` (one leader per cluster; always on SQLite)."""
        return self.db.hold_lock(role)

    def data_version(self) -> int:
        """Changes when another connection or process commits: a cheap cache key for readers."""
        return self.db.change_token()

    def blob_path(self, sha256: str) -> Path:
        """A local file holding the blob (with S3: from the cache, fetched and checked on first use)."""
        return self.blobs.local_path(sha256)

    # -- builds -----------------------------------------------------------------------------------------

    def _store(self, data: bytes, version: str, project: str, changelog: str, security: BuildSecurity) -> Build:
        """Write the blob (fsynced) and its rows; the same bytes always give the same build."""
        sha256 = hashlib.sha256(data).hexdigest()
        self.write_blob(sha256, data)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO builds VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (sha256, len(data), version, project, changelog, time.time()),
            )
            record_security(db, sha256, security)
            if changelog:
                db.execute("UPDATE builds SET changelog = ? WHERE sha256 = ?", (changelog, sha256))
        return self.build(sha256)

    def write_blob(self, sha256: str, data: bytes) -> None:
        """Store content-addressed bytes durably, unless they are there already."""
        try:
            self.blobs.put(sha256, data)
        except BlobUnavailable as err:
            raise Unavailable(str(err), err.cause) from None
        except OSError as err:
            if err.errno not in _STORAGE_ERRORS:
                raise
            # The partial file is gone (write_atomic removes it): nothing of the image stays behind.
            raise StorageFull(f"cannot store the image: {err.strerror}") from None

    def find_build(self, ref: str) -> Build:
        """The one build whose version is ``ref`` or whose SHA-256 starts with it (at least 6 hex digits)."""
        prefix = ref.lower() if re.fullmatch(r"[0-9a-fA-F]{6,64}", ref) else None
        if prefix is None:
            rows = self.db.execute("SELECT * FROM builds WHERE version = ? ORDER BY created", (ref,)).fetchall()
        else:
            rows = self.db.execute(
                "SELECT * FROM builds WHERE version = ? OR substr(sha256, 1, ?) = ? ORDER BY created",
                (ref, len(prefix), prefix),
            ).fetchall()
        if not rows:
            raise NotFound(f"no build with version or SHA-256 prefix {ref!r}")
        if len(rows) > 1:
            found = ", ".join(f"{r[2]} ({r[0][:12]})" for r in rows)
            raise RepositoryError(f"{ref!r} names several builds: {found}; give a longer SHA-256 prefix")
        return Build(*rows[0])

    def build(self, sha256: str) -> Build:
        row = self.db.execute("SELECT * FROM builds WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise NotFound(f"no build {sha256}")
        return Build(*row)

    # -- channels ---------------------------------------------------------------------------------------

    def add_build(self, data: bytes, product: str | None = None, changelog: str = "") -> tuple[Build, str]:
        """Validate and store an image for ``product`` without pointing any channel at it: (build, its product).
        An image the product cannot serve (too big, not signed by a key it trusts, below its anti-rollback
        floor), or a changelog with control characters other than line ends and tabs (it reaches operators'
        terminals through OVMS's ``ota status``), is refused before anything is written."""
        check_changelog(changelog)
        version, project = inspect_image(data)
        product = check_name("product", product or default_product(version))
        check_fits(len(data), product)
        security = image_security(data)
        check_trusted(self.db, product, security)
        _check_floor(self.db, product, security.secure_version)
        build = self._store(data, version, project, changelog, security)
        with self.transaction() as db:
            add_build_product(db, build.sha256, product)
        return build, product

    def publish(
        self, data: bytes, tag: str, product: str | None = None, changelog: str = "", force: bool = False,
        new_channel: bool = False,
    ) -> Channel:  # fmt: skip
        """Validate and store an image, then point ``product``/``tag`` at it. A channel with an active
        rollout is refused unless ``force``, which aborts the rollout; a tag that is neither a standard channel
        nor one the product has is refused unless ``new_channel``."""
        with audited(self.db, self.actor, "publish", f"{product or '(derived)'}/{tag}"):
            check_name("tag", tag)
            product = check_name("product", product or default_product(inspect_image(data)[0]))
            if not new_channel:
                check_channel_name(self.db, product, tag)  # before anything is stored
            build, product = self.add_build(data, product, changelog)
            return self._point(product, tag, build, "publish", force)

    def promote(
        self, product: str, source: str, target: str, force: bool = False, new_channel: bool = False
    ) -> Channel:
        with audited(self.db, self.actor, "promote", f"{product}/{target}"):
            check_name("tag", target)
            current = self.channel(product, source)
            if not new_channel:
                check_channel_name(self.db, product, target)
            return self._point(product, target, current.build, f"promote from {source}", force)

    def rollback(self, product: str, tag: str, force: bool = False) -> Channel:
        """Point the channel back at the build it had before its current one."""
        with audited(self.db, self.actor, "rollback", f"{product}/{tag}"):
            current = self.channel(product, tag)
            moves = channels.history(self.db, product, tag)
            previous = next((m.sha256 for m in moves if m.sha256 != current.build.sha256), None)
            if previous is None:
                raise RepositoryError(f"{product}/{tag} has no earlier build to roll back to")
            return self._point(product, tag, self.build(previous), "rollback", force)

    def check_servable(self, build: Build, product: str) -> None:
        """RepositoryError unless the build was published for the product, fits its OTA slot, is signed as it
        requires, is not below its anti-rollback floor, and its stored blob still holds its bytes."""
        products = self.products(build)
        if product not in products:
            raise RepositoryError(
                f"{build.version} ({build.sha256[:12]}) is a build for {', '.join(sorted(products))}, not {product}: "
                f"publish it for {product} first"
            )
        check_fits(build.size, product)
        security = self.security(build.sha256)
        check_trusted(self.db, product, security)
        _check_floor(self.db, product, security.secure_version)
        self.verify_blob(build.sha256)

    def products(self, build: Build) -> frozenset[str]:
        """The products the build was published for."""
        return build_products(self.db, build.sha256, build.version)

    def verify_blob(self, sha256: str) -> None:
        """RepositoryError if the stored blob is missing or no longer holds the bytes of this SHA-256."""
        problem = blob_problem(self.blobs, sha256)
        if problem is not None:
            raise RepositoryError(f"{problem}: publish the image again")

    def security(self, sha256: str) -> BuildSecurity:
        """A build's secure version and signers (read from its blob once for builds stored before they were
        recorded)."""
        row = self.db.execute(
            "SELECT secure_version, signers FROM build_security WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if row is not None:
            return BuildSecurity(int(row[0]), tuple(str(row[1]).split()))
        security = image_security(self.blob_path(sha256).read_bytes())
        with self.transaction() as db:
            record_security(db, sha256, security)
        return security

    def _point(self, product: str, tag: str, build: Build, action: str, force: bool = False) -> Channel:
        self.check_servable(build, product)
        now = channels.point(self.db, self.actor, product, tag, build.sha256, build.version, action, force)
        return Channel(product, tag, build, now)

    def channel(self, product: str, tag: str) -> Channel:
        row = self.db.execute(
            "SELECT c.product, c.tag, c.updated, b.* FROM channels c JOIN builds b ON b.sha256 = c.sha256 "
            "WHERE c.product = ? AND c.tag = ?",
            (product, tag),
        ).fetchone()
        if row is None:
            raise NotFound(f"no build published for product {product!r}, tag {tag!r}")
        return Channel(row[0], row[1], Build(*row[3:]), row[2])

    def channels(self) -> list[Channel]:
        rows = self.db.execute(
            "SELECT c.product, c.tag, c.updated, b.* FROM channels c JOIN builds b ON b.sha256 = c.sha256 "
            "ORDER BY c.product, c.tag"
        ).fetchall()
        return [Channel(r[0], r[1], Build(*r[3:]), r[2]) for r in rows]


def _check_floor(db: Database, product: str, secure_version: int) -> None:
    floor = min_secure_version(db, product)
    if secure_version < floor:
        raise RepositoryError(
            f"the image has secure version {secure_version}, below {product}'s anti-rollback floor {floor}"
        )


def publish_on_own_connection(
    where: Backends, data: bytes, tag: str, product: str | None = None, changelog: str = "", busy_timeout: float = 30.0,
    actor: str = "", force: bool = False, new_channel: bool = False,
) -> Channel:  # fmt: skip
    """``publish`` on a connection of its own, for running in a thread: a server's event loop stays free to
    serve modules while a build is validated, written and (with S3) uploaded and read back."""
    repo = Repository(where, busy_timeout)
    repo.actor = actor
    try:
        return repo.publish(data, tag, product, changelog, force, new_channel)
    finally:
        repo.close()


def check_changelog(changelog: str) -> None:
    """RepositoryError for a changelog with control characters other than line ends and tabs."""
    bad = next((c for c in changelog if not c.isprintable() and c not in "\n\r\t"), None)
    if bad is not None:
        raise RepositoryError(f"the changelog holds the control character {bad!r}: text, line ends and tabs only")


def recent_builds(db: Database, limit: int = 50) -> list[tuple[Build, frozenset[str]]]:
    """The newest builds in the repository, newest first, each with the products it was published for."""
    rows = db.execute("SELECT * FROM builds ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
    return [(b, build_products(db, b.sha256, b.version)) for b in (Build(*row) for row in rows)]

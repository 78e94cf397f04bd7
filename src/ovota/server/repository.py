"""The release repository: content-addressed build blobs plus a database of builds and channels.

A publish stores the blob durably (fsynced, or uploaded and read back), then moves the channel pointer in
one transaction: readers see the old build or the new one, never a half-written file. Blobs are immutable
and never rewritten. The backends are a folder (SQLite) or PostgreSQL and an S3 bucket (backends.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ovota.formats import FormatError
from ovota.formats.app_image import AppImage
from ovota.formats.signature import read_signatures
from ovota.formats.version_marker import image_version
from ovota.formats.versions import check_version, escape_text, strverscmp
from ovota.server.backends import Backends
from ovota.server.blobstore import BlobUnavailable
from ovota.server.clock import ServerClock
from ovota.server.database import Database
from ovota.server.rollout_policy import ACTIVE_STATES
from ovota.server.trust import BuildSecurity, TrustedKey, UntrustedBuild, check_trusted, image_security, trusted_keys
from ovota.server.trust import trust as add_trusted
from ovota.server.trust import untrust as remove_trusted

OLD_SLOT = 0x400000  # v3.x products: 4 MB OTA slots
NEW_SLOT = 0x700000  # v3.x-5 products: 7 MB OTA slots
SECTOR = 0x1000
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FIRST_NEW_LAYOUT_VERSION = "3.3.006"


class RepositoryError(Exception):
    """A request the repository refuses; the message is one line for the user."""


class NotFound(RepositoryError):
    pass


class Unavailable(RepositoryError):
    """A backend (PostgreSQL, the object store) cannot be reached now: retry later."""


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


def check_name(kind: str, value: str) -> str:
    if not NAME.match(value):
        raise RepositoryError(f"invalid {kind} name {value!r}: use letters, digits, '.', '_' and '-'")
    return value


def slot_size(product: str) -> int:
    return NEW_SLOT if product.endswith("-5") else OLD_SLOT


def default_product(version: str) -> str:
    """Builds from 3.3.006 on target the two-7 MB-slot layout (v3.3-5); older ones the 4 MB slots (v3.3)."""
    return "v3.3-5" if strverscmp(version, FIRST_NEW_LAYOUT_VERSION) >= 0 else "v3.3"


class Repository:
    """A folder with ``blobs/`` and ``repo.sqlite`` (safe for several processes: SQLite WAL), or PostgreSQL and
    an S3 bucket shared by several servers."""

    def __init__(self, where: Path | Backends) -> None:
        self.backends = where if isinstance(where, Backends) else Backends(folder=where)
        self.db = self.backends.open_database()
        self.blobs = self.backends.open_blobs()

    def close(self) -> None:
        self.db.close()

    def clock(self, scale: float | None = None, driven: bool = False) -> ServerClock:
        """The server clock for this repository. With ``scale`` (a server starting): anchor a scaled or
        driven clock here, continuing the stored one if it is of the same kind; scale 1 without ``driven``
        returns to wall time. Without (other commands): the clock the server uses."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
        stored = ServerClock(**json.loads(row[0])) if row else ServerClock()
        if scale is None or (scale, driven) == (stored.scale, stored.driven):
            return stored
        if scale == 1.0 and not driven:
            with self.transaction() as db:
                db.execute("DELETE FROM meta WHERE key = 'clock'")
            return ServerClock()
        clock = ServerClock(scale, stored.now(), time.time(), driven)
        self.save_clock(clock)
        return clock

    def save_clock(self, clock: ServerClock) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta VALUES ('clock', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (json.dumps(clock.__dict__),),
            )

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

    def inspect(self, data: bytes) -> tuple[str, str]:
        """(version, project) of a valid app image; RepositoryError for anything else."""
        try:
            image = AppImage.parse(data)
        except FormatError as err:
            raise RepositoryError(f"not a valid firmware image: {err}") from None
        problem = image.verify().first_failure()
        if problem:
            raise RepositoryError(f"not a valid firmware image: {problem}")
        signatures = read_signatures(data, image.length)
        expected = image.length if signatures is None else signatures.end  # a signed file ends with its sector
        if expected != len(data):
            raise RepositoryError(f"firmware image is {expected} bytes but the upload has {len(data)}")
        desc = image.app_descriptor()
        # OVMS treats an empty marker like a missing one; the app descriptor then names the version.
        raw = image_version(data) or (desc.version.encode() if desc else b"")
        if not raw:
            raise RepositoryError("firmware image carries no version (no OVMS marker, no app descriptor)")
        try:
            version = check_version(raw)
        except FormatError as err:
            raise RepositoryError(f"firmware image has an unusable version: {err}") from None
        return version, escape_text(desc.project_name) if desc else ""

    def _store(self, data: bytes, version: str, project: str, changelog: str, security: BuildSecurity) -> Build:
        """Write the blob (fsynced) and its rows; the same bytes always give the same build."""
        sha256 = hashlib.sha256(data).hexdigest()
        self.write_blob(sha256, data)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO builds VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (sha256, len(data), version, project, changelog, time.time()),
            )
            _record_security(db, sha256, security)
            if changelog:
                db.execute("UPDATE builds SET changelog = ? WHERE sha256 = ?", (changelog, sha256))
        return self.build(sha256)

    def write_blob(self, sha256: str, data: bytes) -> None:
        """Store content-addressed bytes durably, unless they are there already."""
        try:
            self.blobs.put(sha256, data)
        except BlobUnavailable as err:
            raise Unavailable(str(err)) from None

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
        """Validate and store an image without pointing any channel at it: (build, its product). An image
        the product cannot serve (too big, not signed by a key it trusts) is refused before anything is
        written."""
        version, project = self.inspect(data)
        product = check_name("product", product or default_product(version))
        _check_fits(len(data), product)
        security = image_security(data)
        self._check_trusted(product, security)
        return self._store(data, version, project, changelog, security), product

    def publish(
        self, data: bytes, tag: str, product: str | None = None, changelog: str = "", force: bool = False
    ) -> Channel:
        """Validate and store an image, then point ``product``/``tag`` at it. A channel with an active
        rollout is refused unless ``force``, which aborts the rollout."""
        check_name("tag", tag)
        build, product = self.add_build(data, product, changelog)
        return self._point(product, tag, build, "publish", force)

    def promote(self, product: str, source: str, target: str, force: bool = False) -> Channel:
        check_name("tag", target)
        current = self.channel(product, source)
        return self._point(product, target, current.build, f"promote from {source}", force)

    def rollback(self, product: str, tag: str) -> Channel:
        """Point the channel back at the build it had before its current one."""
        current = self.channel(product, tag)
        rows = self.db.execute(
            "SELECT sha256 FROM history WHERE product = ? AND tag = ? ORDER BY id DESC", (product, tag)
        ).fetchall()
        previous = next((sha for (sha,) in rows if sha != current.build.sha256), None)
        if previous is None:
            raise RepositoryError(f"{product}/{tag} has no earlier build to roll back to")
        return self._point(product, tag, self.build(previous), "rollback")

    def check_servable(self, build: Build, product: str) -> None:
        """RepositoryError unless the build fits the product's OTA slot and is signed as the product requires."""
        _check_fits(build.size, product)
        self._check_trusted(product, self.security(build.sha256))

    def _check_trusted(self, product: str, security: BuildSecurity) -> None:
        try:
            check_trusted(self.db, product, security)
        except UntrustedBuild as err:
            raise RepositoryError(str(err)) from None

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
            _record_security(db, sha256, security)
        return security

    # -- trusted keys -----------------------------------------------------------------------------------

    def trust(self, product: str, digest: bytes, name: str) -> bool:
        with self.transaction() as db:
            return add_trusted(db, check_name("product", product), digest.hex(), name)

    def untrust(self, product: str, digest: bytes) -> bool:
        with self.transaction() as db:
            return remove_trusted(db, product, digest.hex())

    def trusted_keys(self, product: str | None = None) -> list[TrustedKey]:
        return trusted_keys(self.db, product)

    def _point(self, product: str, tag: str, build: Build, action: str, force: bool = False) -> Channel:
        self.check_servable(build, product)
        now = time.time()
        with self.transaction() as db:
            active = db.execute(
                "SELECT id, state FROM rollouts WHERE product = ? AND tag = ? AND state IN (?, ?, ?)",
                (product, tag, *ACTIVE_STATES),
            ).fetchone()
            if active is not None and not force:
                raise RepositoryError(
                    f"{product}/{tag} has a {active[1]} rollout (id {active[0]}): abort it first, or use --force"
                )
            if active is not None:
                db.execute("UPDATE rollouts SET state = 'aborted', updated = ? WHERE id = ?", (now, active[0]))
                db.execute("INSERT INTO rollout_events VALUES (?, ?, ?)", (active[0], now, f"aborted by {action}"))
            self.point_in(db, product, tag, build, action, now)
        return Channel(product, tag, build, now)

    def point_in(self, db: Database, product: str, tag: str, build: Build, action: str, now: float) -> None:
        """Move the channel inside the caller's transaction, with its history row."""
        db.execute(
            "INSERT INTO channels VALUES (?, ?, ?, ?) "
            "ON CONFLICT (product, tag) DO UPDATE SET sha256 = excluded.sha256, updated = excluded.updated",
            (product, tag, build.sha256, now),
        )
        db.execute("INSERT INTO history (product, tag, sha256, action, at) VALUES (?, ?, ?, ?, ?)",
                   (product, tag, build.sha256, action, now))  # fmt: skip

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

    def history(self, product: str, tag: str) -> list[tuple[str, str, str, float]]:
        """(sha256, version, action, time) for a channel, newest first."""
        rows = self.db.execute(
            "SELECT h.sha256, b.version, h.action, h.at FROM history h JOIN builds b ON b.sha256 = h.sha256 "
            "WHERE h.product = ? AND h.tag = ? ORDER BY h.id DESC",
            (product, tag),
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # -- tokens -----------------------------------------------------------------------------------------

    def create_token(self, name: str) -> str:
        """A new API token; only its SHA-256 is stored, so it is shown once."""
        token = "ovota_" + os.urandom(24).hex()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO tokens (name, digest, created) VALUES (?, ?, ?)", (name, _token_digest(token), time.time())
            )
        return token

    def token_name(self, token: str) -> str | None:
        row = self.db.execute("SELECT name FROM tokens WHERE digest = ?", (_token_digest(token),)).fetchone()
        return None if row is None else str(row[0])


def _record_security(db: Database, sha256: str, security: BuildSecurity) -> None:
    db.execute(
        "INSERT INTO build_security VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (sha256, security.secure_version, " ".join(security.signers)),
    )


def _check_fits(size: int, product: str) -> None:
    slot = slot_size(product)
    # ESP-IDF erases (size / 4096 + 1) sectors before writing, so that much must fit the slot.
    if (size // SECTOR + 1) * SECTOR > slot:
        raise RepositoryError(
            f"image of {size} bytes does not fit the {slot // 0x100000} MB OTA slot of product {product}"
        )


def _token_digest(token: str) -> str:
    # Tokens are 192-bit random values, so a plain SHA-256 (no salt, no slow KDF) is enough at rest.
    return hashlib.sha256(token.encode()).hexdigest()


def publish_on_own_connection(
    where: Backends, data: bytes, tag: str, product: str | None = None, changelog: str = ""
) -> Channel:
    """``publish`` on a connection of its own, for running in a thread: a server's event loop stays free to
    serve modules while a build is validated, written and (with S3) uploaded and read back."""
    repo = Repository(where)
    try:
        return repo.publish(data, tag, product, changelog)
    finally:
        repo.close()

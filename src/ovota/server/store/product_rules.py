"""What a product asks of every build it serves, besides its trusted keys: which products a build was published
for, and the product's anti-rollback floor (the lowest secure version its modules may be offered)."""

from __future__ import annotations

import difflib

from ovota.server.store.audit import audited, record
from ovota.server.store.database import Database
from ovota.server.store.errors import RepositoryError
from ovota.server.store.images import default_product

STANDARD_CHANNELS = ("edge", "eap", "main")
MAX_SECURE_VERSION = 32  # ESP32's SECURE_VERSION eFuse holds 32 bits, one per version (thermometer code)


def build_products(db: Database, sha256: str, version: str) -> frozenset[str]:
    """The products a build was published for (a build stored before that was recorded: from its version)."""
    rows = db.execute("SELECT product FROM build_products WHERE sha256 = ?", (sha256,)).fetchall()
    return frozenset(str(p) for (p,) in rows) or frozenset({default_product(version)})


def add_build_product(db: Database, sha256: str, product: str) -> None:
    """Record that a build was published for ``product`` (in the caller's transaction)."""
    db.execute("INSERT INTO build_products VALUES (?, ?) ON CONFLICT DO NOTHING", (sha256, product))


def min_secure_version(db: Database, product: str) -> int:
    row = db.execute("SELECT min_secure_version FROM product_rules WHERE product = ?", (product,)).fetchone()
    return 0 if row is None else int(row[0])


def running_secure_version(db: Database, product: str, version: str) -> int:
    """The highest secure version of a ``product`` build whose version is ``version`` (0 when none is known)."""
    row = db.execute(
        "SELECT max(s.secure_version) FROM builds b JOIN build_security s ON s.sha256 = b.sha256 "
        "JOIN build_products p ON p.sha256 = b.sha256 WHERE b.version = ? AND p.product = ?",
        (version, product),
    ).fetchone()
    return int(row[0] or 0) if row is not None else 0


def set_min_secure_version(db: Database, product: str, level: int, actor: str) -> None:
    """Never offer ``product``'s modules a build below secure version ``level`` again. Refused while a channel of
    the product serves a build below it (publish a build with that secure version first)."""
    with audited(db, actor, "release min-secure-version", product):
        if not 0 <= level <= MAX_SECURE_VERSION:
            raise RepositoryError(f"invalid secure version {level}: must be from 0 to {MAX_SECURE_VERSION}")
        if db.execute("SELECT 1 FROM channels WHERE product = ? LIMIT 1", (product,)).fetchone() is None:
            raise RepositoryError(f"no channel of product {product!r}: publish a build for it first")
        below = db.execute(
            "SELECT c.tag, b.version, COALESCE(s.secure_version, 0) FROM channels c "
            "JOIN builds b ON b.sha256 = c.sha256 LEFT JOIN build_security s ON s.sha256 = c.sha256 "
            "WHERE c.product = ? AND COALESCE(s.secure_version, 0) < ? ORDER BY c.tag",
            (product, level),
        ).fetchall()
        if below:
            served = ", ".join(f"{t} serves {v} (secure version {n})" for t, v, n in below)
            raise RepositoryError(f"{product}: {served}; publish builds with secure version {level} there first")
        with db.transaction():
            db.execute(
                "INSERT INTO product_rules VALUES (?, ?) ON CONFLICT (product) DO UPDATE SET "
                "min_secure_version = excluded.min_secure_version",
                (product, level),
            )
            record(db, actor, "release min-secure-version", product, f"{level}")


def check_channel_name(db: Database, product: str, tag: str) -> None:
    """RepositoryError unless ``tag`` is a standard channel or one ``product`` has already: a typo must not make
    a channel (the caller lets the operator make one on purpose)."""
    if tag in STANDARD_CHANNELS:
        return
    rows = db.execute("SELECT tag FROM channels WHERE product = ?", (product,)).fetchall()
    existing = sorted({str(t) for (t,) in rows} | set(STANDARD_CHANNELS))
    if tag in existing:
        return
    close = difflib.get_close_matches(tag, existing, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? To" if close else "to"
    raise RepositoryError(
        f"{product} has no channel {tag!r} (channels: {', '.join(existing)}); {hint} make a new channel, pass "
        "--new-channel (API: new_channel=true)"
    )

"""Signed builds on the server: which keys a product trusts, and what each build is signed with.

Once a product trusts at least one Secure Boot V2 key, a channel of that product only ever points at builds
carrying a valid signature block by one of its keys. Unchanged OVMS modules do not check signatures; the
rule makes sure the server never hands a secure-boot module an image its chip would refuse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ovota.formats.app_image import AppImage
from ovota.formats.signature import read_signatures
from ovota.server.store.audit import audited, record
from ovota.server.store.database import Database
from ovota.server.store.errors import RepositoryError
from ovota.server.store.images import check_name


class UntrustedBuild(RepositoryError):
    """The build is not signed by a key the product trusts; the message is one line for the user."""


@dataclass(frozen=True)
class BuildSecurity:
    secure_version: int
    signers: tuple[str, ...]  # key digests (hex) of the build's valid signature blocks

    @property
    def signer_text(self) -> str:
        return ", ".join(self.signers) if self.signers else "unsigned"


@dataclass(frozen=True)
class TrustedKey:
    product: str
    digest: str
    name: str
    added: float


def image_security(data: bytes | memoryview) -> BuildSecurity:
    """The secure version and valid signers of an image file (which must parse as an app image)."""
    image = AppImage.parse(data)
    descriptor = image.app_descriptor()
    signatures = read_signatures(data, image.length)
    signers = tuple(b.key_digest.hex() for b in signatures.valid_blocks()) if signatures else ()
    return BuildSecurity(descriptor.secure_version if descriptor else 0, signers)


def trusted_keys(db: Database, product: str | None = None) -> list[TrustedKey]:
    rows = db.execute(
        "SELECT product, digest, name, added FROM trusted_keys WHERE CAST(? AS TEXT) IS NULL OR product = ? "
        "ORDER BY product, added",
        (product, product),
    ).fetchall()
    return [TrustedKey(*row) for row in rows]


def trust(db: Database, product: str, digest: bytes, name: str, actor: str = "") -> bool:
    """Trust a key digest for ``product``; False if it already was."""
    with audited(db, actor, "trust", product):
        check_name("product", product)
        with db.transaction():
            cursor = db.execute(
                "INSERT INTO trusted_keys (product, digest, name, added) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (product, digest.hex(), name, time.time()),
            )
            if cursor.rowcount == 1:
                record(db, actor, "trust", product, f"key {digest.hex()} ({name})")
    return cursor.rowcount == 1


def untrust(db: Database, product: str, digest: bytes, actor: str = "") -> bool:
    """Stop trusting a key digest; False if it was not trusted."""
    with db.transaction():
        cursor = db.execute("DELETE FROM trusted_keys WHERE product = ? AND digest = ?", (product, digest.hex()))
        if cursor.rowcount == 1:
            record(db, actor, "untrust", product, f"key {digest.hex()}")
    return cursor.rowcount == 1


def record_security(db: Database, sha256: str, security: BuildSecurity) -> None:
    """Keep a build's secure version and signers (inside the caller's transaction)."""
    db.execute(
        "INSERT INTO build_security VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (sha256, security.secure_version, " ".join(security.signers)),
    )


def check_trusted(db: Database, product: str, security: BuildSecurity) -> None:
    """UntrustedBuild unless ``product`` trusts no key or one of the build's signers."""
    keys = {k.digest for k in trusted_keys(db, product)}
    if not keys or keys & set(security.signers):
        return
    found = f"valid signatures by {', '.join(security.signers)}" if security.signers else "no valid signature"
    raise UntrustedBuild(
        f"product {product} only accepts images signed by {', '.join(sorted(keys))}; this image has {found}"
    )

"""API tokens: random secrets shown once, stored as their SHA-256."""

from __future__ import annotations

import hashlib
import os
import time

from ovota.server.store.database import Database


def create_token(db: Database, name: str) -> str:
    """A new API token named ``name``; only its digest is stored, so the caller shows it once."""
    token = "ovota_" + os.urandom(24).hex()
    with db.transaction():
        db.execute("INSERT INTO tokens (name, digest, created) VALUES (?, ?, ?)", (name, _digest(token), time.time()))
    return token


def token_name(db: Database, token: str) -> str | None:
    """The name of the token, None if no such token exists."""
    row = db.execute("SELECT name FROM tokens WHERE digest = ?", (_digest(token),)).fetchone()
    return None if row is None else str(row[0])


def _digest(token: str) -> str:
    # Tokens are 192-bit random values, so a plain SHA-256 (no salt, no slow KDF) is enough at rest.
    return hashlib.sha256(token.encode()).hexdigest()

"""API tokens: random secrets shown once, stored as their SHA-256; listed and revoked by name."""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass

from ovota.server.store.database import Database
from ovota.server.store.errors import NotFound, RepositoryError

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_TOKEN = re.compile(r"ovota_[0-9a-f]{48}")
TOUCH_SECONDS = 600.0  # ``last used`` is written at most this often per token


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    created: float
    last_used: float  # 0: never


def create_token(db: Database, name: str) -> str:
    """A new API token named ``name`` (a name no other token has); only its digest is stored, so the caller
    shows it once."""
    if not TOKEN_NAME.fullmatch(name):
        raise RepositoryError(f"invalid token name {name!r}: use letters, digits, '.', '_', '@', '+' and '-'")
    token = "ovota_" + os.urandom(24).hex()
    with db.transaction():
        if db.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
            raise RepositoryError(f"a token named {name!r} exists: revoke it first, or choose another name")
        db.execute("INSERT INTO tokens (name, digest, created) VALUES (?, ?, ?)", (name, _digest(token), time.time()))
    return token


def authenticate(db: Database, token: str) -> TokenRecord | None:
    """The token's record, None for anything that is not a live token (malformed ones are not looked up)."""
    if not _TOKEN.fullmatch(token):
        return None
    row = db.execute("SELECT id, name, created, last_used FROM tokens WHERE digest = ?", (_digest(token),)).fetchone()
    return None if row is None else TokenRecord(int(row[0]), str(row[1]), float(row[2]), float(row[3]))


def touch(db: Database, record: TokenRecord, now: float) -> None:
    """Note that the token was used (at most every TOUCH_SECONDS, so reads rarely write)."""
    if now - record.last_used >= TOUCH_SECONDS:
        with db.transaction():
            db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, record.id))


def list_tokens(db: Database) -> list[TokenRecord]:
    rows = db.execute("SELECT id, name, created, last_used FROM tokens ORDER BY name, id").fetchall()
    return [TokenRecord(int(r[0]), str(r[1]), float(r[2]), float(r[3])) for r in rows]


def revoke_token(db: Database, name: str) -> int:
    """Delete the token(s) called ``name`` and end their console sessions; NotFound if there is none."""
    with db.transaction():
        ids = [int(r[0]) for r in db.execute("SELECT id FROM tokens WHERE name = ?", (name,)).fetchall()]
        for token_id in ids:
            db.execute("DELETE FROM sessions WHERE token = ?", (token_id,))
            db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
    if not ids:
        raise NotFound(f"no token named {name!r}")
    return len(ids)


def _digest(token: str) -> str:
    # Tokens are 192-bit random values, so a plain SHA-256 (no salt, no slow KDF) is enough at rest.
    return hashlib.sha256(token.encode()).hexdigest()

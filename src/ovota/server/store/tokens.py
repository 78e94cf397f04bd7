"""API tokens: random secrets shown once, stored as their SHA-256; listed and revoked by name.

Each has a role: ``read`` (GET APIs and console pages), ``release`` (also publish, promote, rollback and
rollouts) or ``admin`` (also tokens and trusted keys: everything). Tokens made before roles existed are admins.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass

from ovota.server.store.audit import audited, record
from ovota.server.store.database import Database
from ovota.server.store.errors import NotFound, RepositoryError

TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_TOKEN = re.compile(r"ovota_[0-9a-f]{48}")
TOUCH_SECONDS = 600.0  # ``last used`` is written at most this often per token
ROLES = ("read", "release", "admin")  # each allows what the ones before it allow


def allows(role: str, needed: str) -> bool:
    """Whether a token of ``role`` may do what needs ``needed``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    created: float
    last_used: float  # 0: never
    role: str


def create_token(db: Database, name: str, role: str = "admin", actor: str = "") -> str:
    """A new API token named ``name`` (a name no other token has) with ``role``; only its digest is stored, so
    the caller shows it once."""
    with audited(db, actor, "token create", name):
        if not TOKEN_NAME.fullmatch(name):
            raise RepositoryError(f"invalid token name {name!r}: use letters, digits, '.', '_', '@', '+' and '-'")
        if role not in ROLES:
            raise RepositoryError(f"invalid role {role!r}: use {', '.join(ROLES)}")
        token = "ovota_" + os.urandom(24).hex()
        with db.transaction():
            if db.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
                raise RepositoryError(f"a token named {name!r} exists: revoke it first, or choose another name")
            db.execute(
                "INSERT INTO tokens (name, digest, created, role) VALUES (?, ?, ?, ?)",
                (name, _digest(token), time.time(), role),
            )
            record(db, actor, "token create", name, f"role {role}")
    return token


def authenticate(db: Database, token: str) -> TokenRecord | None:
    """The token's record, None for anything that is not a live token (malformed ones are not looked up)."""
    if not _TOKEN.fullmatch(token):
        return None
    row = db.execute(f"SELECT {_COLUMNS} FROM tokens WHERE digest = ?", (_digest(token),)).fetchone()
    return None if row is None else _record(row)


def touch(db: Database, token: TokenRecord, now: float) -> None:
    """Note that the token was used (at most every TOUCH_SECONDS, so reads rarely write)."""
    if now - token.last_used >= TOUCH_SECONDS:
        with db.transaction():
            db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, token.id))


def list_tokens(db: Database) -> list[TokenRecord]:
    return [_record(r) for r in db.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY name, id").fetchall()]


def revoke_token(db: Database, name: str, actor: str = "") -> int:
    """Delete the token(s) called ``name`` and end their console sessions; NotFound if there is none."""
    with audited(db, actor, "token revoke", name), db.transaction():
        ids = [int(r[0]) for r in db.execute("SELECT id FROM tokens WHERE name = ?", (name,)).fetchall()]
        if not ids:
            raise NotFound(f"no token named {name!r}")
        for token_id in ids:
            db.execute("DELETE FROM sessions WHERE token = ?", (token_id,))
            db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
        record(db, actor, "token revoke", name)
    return len(ids)


_COLUMNS = "id, name, created, last_used, role"


def _record(row: tuple[object, ...]) -> TokenRecord:
    token_id, name, created, last_used, role = row
    return TokenRecord(int(str(token_id)), str(name), float(str(created)), float(str(last_used)), str(role))


def _digest(token: str) -> str:
    # Tokens are 192-bit random values, so a plain SHA-256 (no salt, no slow KDF) is enough at rest.
    return hashlib.sha256(token.encode()).hexdigest()

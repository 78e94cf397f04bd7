"""Console sessions, in the database so that every server process of a cluster knows them. A session is a
random secret in a cookie, stored as its SHA-256; it lasts SESSION_SECONDS and ends with its token."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from ovota.server.store.database import Database

SESSION_SECONDS = 12 * 3600
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


def start_session(db: Database, token_id: int) -> str:
    """A new session for the token; the secret to put in the cookie. Expired sessions are removed."""
    secret = secrets.token_urlsafe(32)
    now = time.time()
    with db.transaction():
        db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (_digest(secret), token_id, now, now + SESSION_SECONDS))
    return secret


def session_user(db: Database, secret: str) -> tuple[str, str] | None:
    """(name, role) of the token the live session belongs to; None if there is no such session, it expired,
    or its token was revoked."""
    if not _SECRET.fullmatch(secret):
        return None
    row = db.execute(
        "SELECT t.name, t.role FROM sessions s JOIN tokens t ON t.id = s.token WHERE s.digest = ? AND s.expires > ?",
        (_digest(secret), time.time()),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def end_session(db: Database, secret: str) -> None:
    if _SECRET.fullmatch(secret):
        with db.transaction():
            db.execute("DELETE FROM sessions WHERE digest = ?", (_digest(secret),))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

"""The audit log: every state change, who made it, when, to what, and how it ended.

Actors are a token's name (API and console), ``cli:<OS user>`` for the command line, or ``server`` for the
server's own rollout decisions. A change that happens is recorded in the transaction that makes it, so the log
and the repository never disagree; a refused one is recorded on its own afterwards (``refused: <reason>``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from ovota.server.store.clock import stored_clock
from ovota.server.store.database import Database, DatabaseUnavailable
from ovota.server.store.errors import RepositoryError

SERVER = "server"
log = logging.getLogger("ovota.server")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    outcome: str  # "ok", or "refused: <reason>"
    detail: str


def printable(text: str) -> str:
    """``text`` with every character that is not printable (newlines, ESC sequences, other controls) written as
    its Python escape (``\\n``, ``\\x1b``): an entry is one line, and nothing in it can drive a terminal or pose
    as another line. Idempotent: a backslash stays a backslash."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def record(db: Database, actor: str, action: str, target: str, detail: str = "", outcome: str = "ok") -> None:
    """Add an entry, inside the caller's transaction, at the server's clock's time (a simulation's audit lines
    and its rollout log agree). Names and reasons may come from a request: they are
    written with their control characters escaped (``printable``)."""
    db.execute(
        "INSERT INTO audit (at, actor, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (stored_clock(db).now(), printable(actor or "unknown"), printable(action), printable(target),
         printable(outcome), printable(detail)),
    )  # fmt: skip


@contextlib.contextmanager
def audited(db: Database, actor: str, action: str, target: str) -> Iterator[None]:
    """Record a refusal of the change made inside (a RepositoryError), then let it go on; the change itself
    records its success in its own transaction."""
    try:
        yield
    except RepositoryError as err:
        try:
            with db.transaction():
                record(db, actor, action, target, outcome=f"refused: {err}")
        except DatabaseUnavailable as away:  # a full disk may refuse the record too: say so where it can be read
            log.warning("audit: could not record %s of %s refused (%s): %s", action, target, err, away)
        raise


def entries(db: Database, since: float | None = None, actor: str | None = None, limit: int = 1000) -> list[AuditEntry]:
    """The newest ``limit`` entries (since a time, by an actor), oldest first."""
    rows = db.execute(
        "SELECT id, at, actor, action, target, outcome, detail FROM audit "
        "WHERE at >= ? AND (CAST(? AS TEXT) IS NULL OR actor = ?) ORDER BY id DESC LIMIT ?",
        (since or 0.0, actor, actor, limit),
    ).fetchall()
    return [AuditEntry(int(r[0]), float(r[1]), *(str(v) for v in r[2:])) for r in reversed(rows)]

"""Moving a channel: the one place a channel's build changes, with its history row, an aborted rollout's log
line and the audit entry, all in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from ovota.server.store.audit import record
from ovota.server.store.clock import stored_clock
from ovota.server.store.database import Database
from ovota.server.store.errors import RolloutInTheWay
from ovota.server.store.schema import ACTIVE_ROLLOUT_STATES

CHANNEL_ORDER = ("edge", "eap", "main")  # least to most tested: how every page and listing orders channels


def channel_order(product: str, tag: str) -> tuple[str, int, str]:
    """A sort key: by product, then edge, eap, main, then other tags by name."""
    return product, CHANNEL_ORDER.index(tag) if tag in CHANNEL_ORDER else len(CHANNEL_ORDER), tag


@dataclass(frozen=True)
class HistoryEntry:
    sha256: str
    version: str
    action: str
    at: float
    actor: str


def point(db: Database, actor: str, product: str, tag: str, sha256: str, version: str, action: str,
          force: bool = False) -> float:  # fmt: skip
    """Point ``product``/``tag`` at a build (checked by the caller) in one transaction; the time it moved (or,
    if it already served that build, when it last moved: nothing is written). A channel with an active rollout
    is refused unless ``force``, which aborts the rollout. Times are the server's clock's."""
    now = stored_clock(db).now()
    with db.transaction():
        current = db.execute("SELECT sha256, updated FROM channels WHERE product = ? AND tag = ?",
                             (product, tag)).fetchone()  # fmt: skip
        if current is not None and current[0] == sha256:
            return float(current[1])
        active = db.execute(
            "SELECT id, state FROM rollouts WHERE product = ? AND tag = ? AND state IN (?, ?, ?)",
            (product, tag, *ACTIVE_ROLLOUT_STATES),
        ).fetchone()
        if active is not None and not force:
            raise RolloutInTheWay(f"{product}/{tag}", int(active[0]), str(active[1]))
        if active is not None:
            db.execute("UPDATE rollouts SET state = 'aborted', updated = ? WHERE id = ?", (now, active[0]))
            db.execute("INSERT INTO rollout_events (rollout, at, message, actor) VALUES (?, ?, ?, ?)",
                       (active[0], now, f"aborted by {action}", actor))  # fmt: skip
            record(db, actor, "rollout abort", f"{product}/{tag}", f"rollout {active[0]}, by {action}")
        point_in(db, actor, product, tag, sha256, action, now)
        record(db, actor, action.split()[0], f"{product}/{tag}", f"{version} ({sha256[:12]}) {action}".strip())
    return now


def point_in(db: Database, actor: str, product: str, tag: str, sha256: str, action: str, now: float) -> None:
    """Move the channel inside the caller's transaction, with its history row."""
    db.execute(
        "INSERT INTO channels VALUES (?, ?, ?, ?) "
        "ON CONFLICT (product, tag) DO UPDATE SET sha256 = excluded.sha256, updated = excluded.updated",
        (product, tag, sha256, now),
    )
    db.execute("INSERT INTO history (product, tag, sha256, action, at, actor) VALUES (?, ?, ?, ?, ?, ?)",
               (product, tag, sha256, action, now, actor))  # fmt: skip


def history(db: Database, product: str, tag: str) -> list[HistoryEntry]:
    """The channel's moves, newest first."""
    rows = db.execute(
        "SELECT h.sha256, b.version, h.action, h.at, h.actor FROM history h JOIN builds b ON b.sha256 = h.sha256 "
        "WHERE h.product = ? AND h.tag = ? ORDER BY h.id DESC",
        (product, tag),
    ).fetchall()
    return [HistoryEntry(str(r[0]), str(r[1]), str(r[2]), float(r[3]), str(r[4])) for r in rows]

"""The server's clock: wall time, time that runs faster (``--time-scale``), or time a simulator drives.

Rollout steps, grace periods and watch windows are measured on this clock. Both special clocks exist
for fleet simulations only. A scaled clock is anchored at a point (simulated time, real time) kept in
the repository, so every worker process and a restarted server continue the same simulated time. A
driven clock (``--driven-clock``) stands still until ``POST /clock`` moves it forward: the simulator
moves it tick by tick, after the tick's requests are answered, so a simulation is repeatable.

One clock per server: a server that starts with a clock behind the newest time its repository recorded (a
simulation ran ahead, then the real clock took over) says so once, in its log.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ovota.server.store.database import Database

# A clock this far behind the newest recorded time is worth a warning; less is a wall clock NTP stepped back.
BEHIND_TOLERANCE = 60.0

log = logging.getLogger("ovota.server")


@dataclass
class ServerClock:
    scale: float = 1.0
    origin: float = 0.0  # simulated time at real time ``anchor`` (scaled), or the current time (driven)
    anchor: float = 0.0
    driven: bool = False

    def now(self) -> float:
        """Seconds since the epoch on this clock."""
        if self.driven:
            return self.origin
        if self.scale == 1.0:
            return time.time()
        return self.origin + (time.time() - self.anchor) * self.scale

    def advance_to(self, when: float) -> None:
        """Move a driven clock forward (never back)."""
        if not self.driven:
            raise ValueError("only a driven clock can be moved")
        self.origin = max(self.origin, when)


def stored_clock(db: Database, scale: float | None = None, driven: bool = False) -> ServerClock:
    """The server clock kept in the repository's database. With ``scale`` (a server starting): anchor a scaled
    or driven clock here, continuing the stored one if it is of the same kind; scale 1 without ``driven``
    returns to wall time; and warn once if that clock is behind the newest time the repository recorded. Without
    (other commands): the clock the server uses."""
    row = db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
    stored = ServerClock(**json.loads(row[0])) if row else ServerClock()
    if scale is None:
        return stored
    clock = _starting(db, stored, scale, driven)
    warn_if_behind(db, clock)
    return clock


def _starting(db: Database, stored: ServerClock, scale: float, driven: bool) -> ServerClock:
    if (scale, driven) == (stored.scale, stored.driven):
        return stored
    if scale == 1.0 and not driven:
        with db.transaction():
            db.execute("DELETE FROM meta WHERE key = 'clock'")
        return ServerClock()
    clock = ServerClock(scale, stored.now(), time.time(), driven)
    save_clock(db, clock)
    return clock


def newest_recorded(db: Database) -> float | None:
    """The newest time the repository recorded on a server's clock: a module's last check-in, a rollout's last
    change; None before any."""
    row = db.execute(
        "SELECT MAX(t) FROM (SELECT MAX(last_seen) AS t FROM modules UNION ALL SELECT MAX(updated) FROM rollouts) n"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def warn_if_behind(db: Database, clock: ServerClock) -> bool:
    """Log one warning if ``clock`` is more than BEHIND_TOLERANCE behind what the repository recorded (a run with
    ``--time-scale`` or a driven clock moved forward, then a server on the real clock); True if it did. The
    registry never moves a module's last seen back, so those times stand still until the clock passes them."""
    newest, now = newest_recorded(db), clock.now()
    if newest is None or newest - now <= BEHIND_TOLERANCE:
        return False
    log.warning(
        "server clock %s is %s behind the newest time this repository recorded, %s (a module's last check-in or a "
        "rollout's change, likely from a run with --time-scale or --driven-clock): until the clock passes it, "
        "last-seen times stand still and rollout steps wait; serve this repository with that clock again, or use a "
        "fresh repository",
        _utc(now), _span(newest - now), _utc(newest),
    )  # fmt: skip
    return True


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _span(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def save_clock(db: Database, clock: ServerClock) -> None:
    """Keep the clock's state, so every worker process and a restarted server continue the same time."""
    with db.transaction():
        db.execute(
            "INSERT INTO meta VALUES ('clock', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps(clock.__dict__),),
        )

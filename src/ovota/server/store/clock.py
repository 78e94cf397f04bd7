"""The server's clock: wall time, time that runs faster (``--time-scale``), or time a simulator drives.

Rollout steps, grace periods and watch windows are measured on this clock. Both special clocks exist
for fleet simulations only. A scaled clock is anchored at a point (simulated time, real time) kept in
the repository, so every worker process and a restarted server continue the same simulated time. A
driven clock (``--driven-clock``) stands still until ``POST /clock`` moves it forward: the simulator
moves it tick by tick, after the tick's requests are answered, so a simulation is repeatable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ovota.server.store.database import Database


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
    returns to wall time. Without (other commands): the clock the server uses."""
    row = db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
    stored = ServerClock(**json.loads(row[0])) if row else ServerClock()
    if scale is None or (scale, driven) == (stored.scale, stored.driven):
        return stored
    if scale == 1.0 and not driven:
        with db.transaction():
            db.execute("DELETE FROM meta WHERE key = 'clock'")
        return ServerClock()
    clock = ServerClock(scale, stored.now(), time.time(), driven)
    save_clock(db, clock)
    return clock


def save_clock(db: Database, clock: ServerClock) -> None:
    """Keep the clock's state, so every worker process and a restarted server continue the same time."""
    with db.transaction():
        db.execute(
            "INSERT INTO meta VALUES ('clock', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps(clock.__dict__),),
        )

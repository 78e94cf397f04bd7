"""The server's clock: wall time, time that runs faster (``--time-scale``), or time a simulator drives.

Rollout steps, grace periods and watch windows are measured on this clock. Both special clocks exist
for fleet simulations only. A scaled clock is anchored at a point (simulated time, real time) kept in
the repository, so every worker process and a restarted server continue the same simulated time. A
driven clock (``--driven-clock``) stands still until ``POST /clock`` moves it forward: the simulator
moves it tick by tick, after the tick's requests are answered, so a simulation is repeatable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


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

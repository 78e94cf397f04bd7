"""The server's clock: wall time, or time that runs faster for fleet simulations (``--time-scale``).

Rollout steps, grace periods and watch windows are measured on this clock. With a scale of 1440 a
simulated day passes in a real minute; the simulator reads the same clock at ``GET /clock``. A scaled
clock is anchored at a point (simulated time, real time) kept in the repository, so every worker
process and a restarted server continue the same simulated time instead of starting over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerClock:
    scale: float = 1.0
    origin: float = 0.0  # simulated time at real time ``anchor``
    anchor: float = 0.0

    def now(self) -> float:
        """Seconds since the epoch on this clock."""
        if self.scale == 1.0:
            return time.time()
        return self.origin + (time.time() - self.anchor) * self.scale

    def real_seconds(self, seconds: float) -> float:
        """How long ``seconds`` of this clock take in real time."""
        return seconds / self.scale

"""The emulated module's clock and network links: state of the emulator session, not of the flash."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass
class Clock:
    """The module's UTC wall clock and its uptime. Real time passes; ``advance`` fast-forwards both (the
    emulator's ``time advance``). ``power_on`` starts the uptime again, as a reboot does."""

    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    _started: float = field(default_factory=time.monotonic)
    skipped: timedelta = timedelta(0)
    _booted: float = 0.0

    def _elapsed(self) -> float:
        return time.monotonic() - self._started + self.skipped.total_seconds()

    @property
    def now(self) -> datetime:
        return self.start + timedelta(seconds=self._elapsed())

    @property
    def uptime(self) -> float:
        """Seconds since the last power-on or reboot."""
        return self._elapsed() - self._booted

    def advance(self, delta: timedelta) -> None:
        self.skipped += delta

    def power_on(self) -> None:
        self._booted = self._elapsed()

    def log_stamp(self) -> int:
        """esp_log_timestamp: milliseconds since boot, in FreeRTOS ticks of 10 ms."""
        return int(self.uptime * 100) * 10


@dataclass
class Network:
    wifi: bool = True
    modem: bool = False

    @property
    def any(self) -> bool:
        return self.wifi or self.modem

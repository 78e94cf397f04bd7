"""The emulated module's clock and network links: state of the emulator session, not of the flash."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass
class Clock:
    """Wall-clock time (module TZ is UTC) that the emulator can fast-forward."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Network:
    wifi: bool = True
    modem: bool = False

    @property
    def any(self) -> bool:
        return self.wifi or self.modem

"""OvmsOTA's flash status: what ``ota status`` shows while a flash runs, and its progress log every 10 %."""

from __future__ import annotations

from collections.abc import Callable


class FlashStatus:
    """SetFlashStatus / SetFlashPerc / ClearFlashStatus. ``log`` writes an INFO line with the ``ota`` tag."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self.text: str | None = None
        self.perc = 0

    def set(self, text: str, perc: int = 0, log: bool = False) -> None:
        self.text = text
        self.perc = perc
        if log:
            self._log(text)

    def progress(self, perc: int) -> None:
        """A new percentage; the first of each ten is logged, as ``<status> <perc>%``."""
        if self.perc // 10 != perc // 10:
            self._log(f"{self.text} {perc}%")
        self.perc = perc

    def clear(self) -> None:
        self.text = None
        self.perc = 0

    def line(self) -> str | None:
        """The ``Status:`` line of ``ota status``, None while no flash runs."""
        if self.text is None:
            return None
        return f"Status:            {self.text}" + (f" ({self.perc}%)" if self.perc else "")

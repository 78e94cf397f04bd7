"""What a console command needs from the console session it runs in.

Command modules (``ota``, ``config``, ``partitions``, ``auto``, ``sd``) depend on this interface only, so
imports point one way: ``shell`` (which implements it and builds the command tree) → commands → here.
"""

from __future__ import annotations

import threading
from typing import Protocol

from ovota.device.console.status import FlashStatus
from ovota.device.console.task import AutoFlashTask
from ovota.device.console.writer import Writer
from ovota.device.module import Module


class Session(Protocol):
    module: Module
    out: Writer
    words: list[str]  # the command being executed, every word spelled out, then its arguments
    notified_version: str | None  # the new firmware last announced by a notification
    flashing: threading.Lock  # OVMS's m_flashing: one flash operation at a time
    status: FlashStatus  # what `ota status` shows while a flash runs
    next_tick: float  # the uptime (s) of the next ticker.600
    task: AutoFlashTask  # the AutoFlash task, running or not

    def log(self, message: str, level: str = "I", tag: str = "ota") -> None:
        """A log line, as ESP-IDF's ESP_LOGx with ``tag`` prints it on the console."""

    def notify(self, kind: str, subtype: str, text: str) -> None:
        """An OVMS notification (e.g. ``info``/``ota.update``)."""

    def ask(self, prompt: str) -> str:
        """A y/n question to the user; the stripped answer, empty without an interactive user."""

    def restart(self, partition_update: bool = False) -> None:
        """Reboot through the bootloader; ``partition_update`` is OVMS's RTC flag for maintenance mode."""

    def launch_auto_flash(self, force: bool) -> None:
        """LaunchAutoFlash: start the AutoFlash task, or log that one already runs."""

    def settle(self) -> None:
        """Wait for a running AutoFlash task and carry out the restart it asked for."""

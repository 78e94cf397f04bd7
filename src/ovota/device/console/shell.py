"""The OVMS# shell: splits command lines, runs them on the command tree, and owns the console's side effects.

It implements the :class:`~ovota.device.console.session.Session` the commands are written against."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ovota.device.console import auto, config, ota, partitions, sd, system, vfs
from ovota.device.console.line import SplitError, split_line
from ovota.device.console.status import FlashStatus
from ovota.device.console.task import AutoFlashTask
from ovota.device.console.tree import Command
from ovota.device.console.writer import Writer
from ovota.device.fat_store import VolumeError
from ovota.device.module import Module
from ovota.device.store import StoreError

PROMPT = "OVMS# "
# ESP-IDF's LOG_COLOR_E/W/I and LOG_RESET_COLOR, shown on a terminal.
_COLOURS = {"E": "\033[0;31m", "W": "\033[0;33m", "I": "\033[0;32m"}


class Shell:
    """One console session on a powered-on module."""

    def __init__(self, module: Module, out: Writer, ask: Callable[[str], str] | None = None) -> None:
        self.module = module
        self.out = out
        self.words: list[str] = []
        self.notified_version: str | None = None
        self.flashing = threading.Lock()
        self.status = FlashStatus(self.log)
        self.task = AutoFlashTask(lambda message, level: self.log(message, level))
        module.flash.guard = self.task.check
        # Commands, the timer thread and the task's restart take turns (OVMS's console and events do too).
        self._turn = threading.RLock()
        self._ask = ask
        self._build_tree()
        self._system_start()

    def _build_tree(self) -> None:
        self.root = Command("", "")
        ota.register(self.root, self.module.layout.factory is not None, self.module.layout.type)
        config.register(self.root)
        system.register(self.root)
        vfs.register(self.root)
        self.next_tick = float(auto.TICK_SECONDS)

    def execute(self, line: str) -> None:
        """Run one command line (the restart an AutoFlash task asked for, and due timers, come first)."""
        with self._turn:
            self.idle()
            try:
                words = split_line(line)
            except SplitError as err:
                self.out.puts(str(err))
                return
            if words:
                self.words = words
                # A /store FAT that cannot be written fails the command, not the shell.
                try:
                    self.root.execute(self, words)
                except (StoreError, VolumeError) as err:
                    self.out.puts(f"Error: {err}")

    def idle(self) -> None:
        """What the module does by itself between commands: the reboot a finished AutoFlash task asked for, and
        the timers that fell due. ``module shell`` and ``module web`` call it every second."""
        with self._turn:
            if self.task.restart_requested and not self.task.running:
                self.settle()
            auto.run_due_ticks(self)

    def log(self, message: str, level: str = "I", tag: str = "ota") -> None:
        # OVMS's log buffers show a line break inside a message as "|".
        text = f"{level} ({self.module.clock.log_stamp()}) {tag}: {message.replace(chr(13), '|').replace(chr(10), '|')}"
        if self.out.colour and level in _COLOURS:
            text = f"{_COLOURS[level]}{text}\033[0m"
        self.out.write(text + "\n", counted=False)

    def notify(self, kind: str, subtype: str, text: str) -> None:
        self.out.write(f"Notification {kind}/{subtype}: {text}\n")

    def ask(self, prompt: str) -> str:
        """A y/n question; without an interactive user (``module run``) the answer is empty."""
        self.out.write(prompt)
        answer = self._ask(prompt) if self._ask else ""
        if not self._ask:
            self.out.write("\n")
        return answer.strip()

    def restart(self, partition_update: bool = False) -> None:
        """A reboot through the bootloader; ``partition_update`` is OVMS's RTC flag for maintenance mode. A running
        AutoFlash task dies with the reboot."""
        self.task.kill()
        self.module.reset()
        self.module.partition_update = partition_update
        self.status.clear()
        self._build_tree()
        self._system_start()

    def launch_auto_flash(self, force: bool) -> None:
        if not self.task.launch(lambda: auto.auto_flash(self, force)):
            self.log("AutoFlash: Task already running (cannot launch new)", "W")

    def settle(self) -> None:
        self.task.wait()
        if self.task.restart_requested:
            self.restart()

    def power_off(self) -> None:
        """Before the flash file closes: a task still writing is stopped (a power cut would stop it too)."""
        self.task.kill()

    def _system_start(self) -> None:
        """The boot-time events: /store's mount, partition update or notification, then the SD card's
        auto-flash."""
        error = self.module.config.volume.error
        if error is not None:  # the module boots without /store, as one whose FatFs fails to read it would
            self.log(f"Cannot mount /store: {error}", "E", "ovms-config")
        if not partitions.system_start(self):
            sd.check_flash_sd(self)

"""The OVMS# shell: parses command lines, runs them against a module, and owns the console's side effects.

It implements the :class:`~ovota.device.console.session.Session` the commands are written against."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from datetime import timedelta

from ovota.device.console import auto, config, ota, partitions, sd
from ovota.device.console.session import Session
from ovota.device.console.tree import Command
from ovota.device.console.writer import Writer
from ovota.device.module import Module

PROMPT = "OVMS# "
_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Shell:
    """One console session on a powered-on module."""

    def __init__(self, module: Module, out: Writer, ask: Callable[[str], str] | None = None) -> None:
        self.module = module
        self.out = out
        self.words: list[str] = []
        self.notified_version: str | None = None
        self._ask = ask
        self._build_tree()
        self._system_start()

    def _build_tree(self) -> None:
        self.root = Command("", "")
        ota.register(self.root, self.module.layout.factory is not None, self.module.layout.type)
        config.register(self.root)
        module = self.root.add(Command("module", "MODULE framework"))
        module.add(Command("reset", "Reset module", _module_reset))
        time = self.root.add(Command("time", "Emulated clock"))
        time.add(Command("status", "Show the emulated time", _time_status))
        time.add(Command("advance", "Fast-forward the clock, running timers", _time_advance, "<N>[s|m|h|d]", 1, 1))
        network = self.root.add(Command("network", "Emulated network links"))
        for link in ("wifi", "modem"):
            network.add(Command(link, f"Switch the emulated {link} link", _network_link, "on|off", 1, 1))

    def execute(self, line: str) -> None:
        try:
            self.words = shlex.split(line)
        except ValueError as err:
            self.out.puts(f"Error: {err}")
            return
        if self.words:
            self.root.execute(self, self.words, "")

    def log(self, message: str, level: str = "I", tag: str = "ota") -> None:
        self.out.write(f"{level} ({tag}) {message}\n")

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
        """A reboot through the bootloader; ``partition_update`` is OVMS's RTC flag for maintenance mode."""
        self.module.reset()
        self.module.partition_update = partition_update
        self._build_tree()
        self._system_start()

    def _system_start(self) -> None:
        """The boot-time events: partition update or notification, then the SD card's auto-flash."""
        if not partitions.system_start(self):
            sd.check_flash_sd(self)


def _module_reset(session: Session, args: list[str]) -> None:
    session.out.puts("Resetting system...")
    session.restart()


def _time_status(session: Session, args: list[str]) -> None:
    session.out.puts(f"Time: {session.module.clock.now:%Y-%m-%d %H:%M:%S} UTC")


def _time_advance(session: Session, args: list[str]) -> None:
    match = _DURATION.fullmatch(args[0])
    if match is None:
        session.out.puts(f"Error: invalid duration {args[0]!r} (use e.g. 90s, 15m, 24h, 2d)")
        return
    auto.advance(session, timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)]))
    _time_status(session, [])


def _network_link(session: Session, args: list[str]) -> None:
    if args[0] not in ("on", "off"):
        session.out.puts("Usage: network <wifi|modem> on|off")
        return
    setattr(session.module.network, session.words[1], args[0] == "on")
    session.out.puts(f"{session.words[1]} {'connected' if args[0] == 'on' else 'disconnected'}")

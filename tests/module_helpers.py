"""Helpers for module tests: images, module flashes, and snapshots of what must not change."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.flash import Flash, PowerCut
from ovota.device.layout import read_layout
from ovota.device.module import Module, create_module
from ovota.formats.image_builder import build_app_image
from tests.loops import in_thread

BUILT = datetime(2026, 5, 13, 20, 13, 48, tzinfo=UTC)


def image(version: str, size: int | None = None) -> bytes:
    return build_app_image(version, size=size, built=BUILT)


def new_module(path: Path, layout: str = "v3-35", version: str = "3.3.005-922-g1a3378f1b", size: int = 4096) -> Path:
    create_module(path, layout, image(version, size))
    return path


@dataclass(frozen=True)
class Snapshot:
    """The flash bytes that define what boots and what is configured."""

    otadata: bytes
    running_image: bytes
    store: bytes
    running: str


def snapshot(path: Path) -> Snapshot:
    module = Module.open(path)
    try:
        layout = read_layout(module.flash)
        otadata = layout.otadata
        store = layout.store
        assert otadata is not None and store is not None
        running = module.running
        return Snapshot(
            module.flash.read(otadata.offset, otadata.size),
            module.flash.read(running.offset, running.size),
            module.flash.read(store.offset, store.size),
            running.name,
        )
    finally:
        module.close()


@dataclass(frozen=True)
class Console:
    output: str
    ops: int  # flash operations done, power-on included


def run_commands(path: Path, *commands: str, sd: Path | None = None, cut: PowerCut | None = None) -> Console:
    """Power on and run console commands in-process (a PowerLoss propagates at the planned cut), in a thread of
    their own: the emulator's HTTP client runs its own event loop (tests/loops.py)."""
    return in_thread(_run_commands, path, commands, sd, cut)


def _run_commands(path: Path, commands: tuple[str, ...], sd: Path | None, cut: PowerCut | None) -> Console:
    stream = io.StringIO()
    flash = Flash(path, cut)
    try:
        shell = Shell(Module(flash, sd), Writer(stream))
        for command in commands:
            shell.execute(command)
        shell.settle()  # as `module run`: the module stays on until its AutoFlash task has ended
    finally:
        flash.close()
    return Console(stream.getvalue(), flash.ops)


def logged(out: str, message: str, level: str = "I", tag: str = "ota") -> bool:
    """Whether the console output has the log line ESP-IDF prints for ``message``: ``I (<ms>) ota: …``."""
    return re.search(rf"^{level} \(\d+\) {re.escape(tag)}: {re.escape(message)}$", out, re.MULTILINE) is not None

"""Helpers for module tests: images, module flashes, and snapshots of what must not change."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ovota.device.clock import Clock
from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.flash import Flash, PowerCut
from ovota.device.layout import read_layout
from ovota.device.module import Module, create_module
from ovota.formats.image_builder import build_app_image
from ovota.formats.partition_table import Partition
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
    trace: list[tuple[int, str, int]]  # (op index, "erase"/"program"/…, address) of each operation


@dataclass(frozen=True)
class SectorWindows:
    """Cut points that leave a sector of a FAT volume half-written. FatFs has no journal and wear levelling
    rewrites a sector as erase + program, so a real module loses what such a sector held (a directory sector:
    the entries in it) when power goes there. ``torn``: a torn erase or program of a sector in a FAT partition;
    ``clean``: a clean cut between a sector's erase and its program."""

    torn: set[int]
    clean: set[int]

    def __contains__(self, cut: object) -> bool:
        """``(at_op, torn) in windows``: whether that cut point is in one."""
        assert isinstance(cut, tuple)
        return cut[0] in (self.torn if cut[1] else self.clean)


def store_of(path: Path) -> Partition:
    """The store partition of a module's flash file."""
    with Flash(path) as flash:
        store = read_layout(flash).store
    assert store is not None
    return store


def fat_windows(trace: list[tuple[int, str, int]], areas: list[Partition], start: int = 0) -> SectorWindows:
    """The :class:`SectorWindows` of a traced run in the FAT partitions ``areas`` (op indices from ``start``)."""

    def inside(address: int) -> bool:
        return any(p.offset <= address < p.offset + p.size for p in areas)

    torn, clean = set(), set()
    for (index, kind, address), following in zip(trace, [*trace[1:], None], strict=True):
        if index >= start and inside(address):
            torn.add(index - start)
            if kind == "erase" and following is not None and following[1:] == ("program", address):
                clean.add(following[0] - start)
    return SectorWindows(torn, clean)


# A power-cut sweep replays a flow many times, and its operations must be the same each time. The FAT stamps
# files with the module's clock (to 2 s): with a real clock, a rewrite of unchanged bytes would change a
# directory sector in one replay and not in the next. Replays run with the module's clock set to this.
REPLAY_CLOCK = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def run_commands(
    path: Path,
    *commands: str,
    sd: Path | None = None,
    cut: PowerCut | None = None,
    clock_at: datetime | None = None,
) -> Console:
    """Power on and run console commands in-process (a PowerLoss propagates at the planned cut), in a thread of
    their own: the emulator's HTTP client runs its own event loop (tests/loops.py). ``clock_at``: the module's
    clock at power-on (default: now)."""
    return in_thread(_run_commands, path, commands, sd, cut, clock_at)


def _run_commands(
    path: Path, commands: tuple[str, ...], sd: Path | None, cut: PowerCut | None, clock_at: datetime | None
) -> Console:
    stream = io.StringIO()
    flash = Flash(path, cut)
    flash.trace = []
    try:
        clock = Clock() if clock_at is None else Clock(start=clock_at)
        shell = Shell(Module(flash, sd, clock=clock), Writer(stream))
        for command in commands:
            shell.execute(command)
        shell.settle()  # as `module run`: the module stays on until its AutoFlash task has ended
    finally:
        flash.close()
    return Console(stream.getvalue(), flash.ops, flash.trace)


def logged(out: str, message: str, level: str = "I", tag: str = "ota") -> bool:
    """Whether the console output has the log line ESP-IDF prints for ``message``: ``I (<ms>) ota: …``."""
    return re.search(rf"^{level} \(\d+\) {re.escape(tag)}: {re.escape(message)}$", out, re.MULTILINE) is not None

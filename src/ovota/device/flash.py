"""NOR flash over an image file: the emulated module's only persistent state.

Semantics of SPI NOR (as on the ESP32's 16 MB flash chip): erasing works on whole 4 KiB sectors and sets
every bit to 1; programming can only clear bits, so writing over unerased data is refused. Every erase
command (a 4 KiB sector or a 64 KiB block) and program call counts as one operation; a :class:`PowerCut`
plan stops the N-th operation, optionally after a torn partial write, leaving the file exactly as the chip
would be.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SECTOR_SIZE = 0x1000
BLOCK_SIZE = 0x10000  # the SPI flash's block erase (command D8h)
DEFAULT_FLASH_SIZE = 16 * 1024 * 1024


def erase_units(addr: int, length: int) -> list[tuple[int, int]]:
    """(start, size) of each erase command for a sector-aligned range: blocks where they fit, else sectors."""
    units, end = [], addr + length
    while addr < end:
        size = BLOCK_SIZE if addr % BLOCK_SIZE == 0 and end - addr >= BLOCK_SIZE else SECTOR_SIZE
        units.append((addr, size))
        addr += size
    return units


class FlashError(Exception):
    """An operation the chip cannot do: out of range, unaligned erase, or programming unerased bits."""


class Interrupted(Exception):
    """A flash operation that did not happen: the power went, or a reboot stopped the task that asked for it.
    Nothing that handles a failed read or write may catch it: the module is gone, not the data wrong."""


class PowerLoss(Interrupted):
    """Raised from inside the operation at which the planned power cut happened."""

    def __init__(self, op_index: int) -> None:
        super().__init__(f"power cut at flash operation {op_index}")
        self.op_index = op_index


@dataclass(frozen=True)
class PowerCut:
    """Cut power at operation ``at_op`` (0-based). ``torn``: the operation half-completes first."""

    at_op: int
    torn: bool = False


class Flash:
    """A flash chip backed by a file of exactly ``size`` bytes, memory-mapped."""

    def __init__(self, path: Path, cut: PowerCut | None = None) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self._fd).st_size
        if self.size == 0 or self.size % SECTOR_SIZE:
            os.close(self._fd)
            raise FlashError(f"{path}: {self.size} bytes is not a whole number of 4 KiB sectors")
        self._map = mmap.mmap(self._fd, self.size)
        self.cut = cut
        self.ops = 0
        self.trace: list[tuple[int, str, int]] | None = None  # (op index, "erase"/"program", address) when set
        # Called before every erase and program: how a reboot stops a task that is writing (it raises).
        self.guard: Callable[[], None] | None = None
        self.dead = False

    @classmethod
    def create(cls, path: Path, size: int = DEFAULT_FLASH_SIZE) -> Flash:
        """A new, fully erased chip."""
        if size <= 0 or size % SECTOR_SIZE:
            raise FlashError(f"flash size {size} is not a whole number of 4 KiB sectors")
        with open(path, "wb") as f:
            block = b"\xff" * (1 << 20)
            for start in range(0, size, len(block)):
                f.write(block[: min(len(block), size - start)])
        return cls(path)

    def close(self) -> None:
        if not self._map.closed:
            self._map.flush()
            self._map.close()
            os.close(self._fd)

    def __enter__(self) -> Flash:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, addr: int, length: int) -> bytes:
        self._check_range(addr, length)
        return self._map[addr : addr + length]

    def erase(self, addr: int, length: int) -> None:
        """Erase whole sectors as ESP-IDF's spi_flash_erase_range does: a 64 KiB block erase wherever a block
        starts and the range covers it, else a 4 KiB sector erase; one operation each, so a cut can stop a long
        erase midway (a torn one leaves the first half of its unit erased)."""
        if addr % SECTOR_SIZE or length % SECTOR_SIZE:
            raise FlashError(f"erase 0x{addr:x}+0x{length:x} is not sector aligned")
        self._alive()
        if self.guard is not None:
            self.guard()
        self._check_range(addr, length)
        units = erase_units(addr, length)
        if self.trace is not None:
            self.trace += [(self.ops + i, "erase", start) for i, (start, _) in enumerate(units)]
        if self.cut is None or not self.ops <= self.cut.at_op < self.ops + len(units):
            # No cut inside this range: one bulk erase, counted per unit.
            self._map[addr : addr + length] = b"\xff" * length
            self.ops += len(units)
            return
        for start, size in units:
            if self._cut_now():
                if self.cut.torn:
                    self._map[start : start + size // 2] = b"\xff" * (size // 2)
                raise PowerLoss(self.ops - 1)
            self._map[start : start + size] = b"\xff" * size

    def program(self, addr: int, data: bytes | memoryview) -> None:
        """Program bytes into erased flash (bits can only go from 1 to 0)."""
        length = len(data)
        self._check_range(addr, length)
        if length == 0:
            return
        self._alive()
        if self.guard is not None:
            self.guard()
        if self.trace is not None:
            self.trace.append((self.ops, "program", addr))
        current = self._map[addr : addr + length]
        if current != b"\xff" * length:
            # Programming may only clear bits: every 0 bit of the old content must stay 0 in the new.
            old = int.from_bytes(current, "little")
            new = int.from_bytes(data, "little")
            if old & new != new:
                raise FlashError(f"program at 0x{addr:x} over unerased data")
        if self._cut_now() and self.cut is not None:
            if self.cut.torn:
                half = length // 2
                self._map[addr : addr + half] = _and(current[:half], data[:half])
            raise PowerLoss(self.ops - 1)
        self._map[addr : addr + length] = bytes(data) if current == b"\xff" * length else _and(current, data)

    def other_operation(self, kind: str, address: int, whole: Callable[[], None], torn: Callable[[], None]) -> None:
        """An operation on another part of the chip package (an eFuse burn), counted and cut like a flash one:
        ``whole`` does it; a torn cut runs ``torn`` (what a half-done operation leaves) and raises PowerLoss."""
        self._alive()
        if self.trace is not None:
            self.trace.append((self.ops, kind, address))
        if self._cut_now() and self.cut is not None:
            if self.cut.torn:
                torn()
            raise PowerLoss(self.ops - 1)
        whole()

    def _cut_now(self) -> bool:
        index = self.ops
        self.ops += 1
        cut = self.cut is not None and index == self.cut.at_op
        self.dead = self.dead or cut
        return cut

    def _alive(self) -> None:
        """After the planned cut the chip has no power: any later operation (a library's cleanup on the way
        out) fails as the cut did, and changes nothing."""
        if self.dead:
            raise PowerLoss(self.ops)

    def _check_range(self, addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise FlashError(f"access 0x{addr:x}+0x{length:x} is outside the {self.size}-byte flash")


def _and(current: bytes, data: bytes | memoryview) -> bytes:
    return (int.from_bytes(current, "little") & int.from_bytes(data, "little")).to_bytes(len(current), "little")

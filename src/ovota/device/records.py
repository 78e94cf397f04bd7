"""A crash-safe record format for small data kept in a flash partition (config, module identity).

Two banks alternate. A write erases the older bank, programs the body, and programs the header last:
the header is the commit. A cut at any point leaves the other bank, and so the previous value, intact.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from ovota.device.flash import SECTOR_SIZE, Flash

# magic, format version, reserved, generation, body length, CRC-32 of the body
HEADER = struct.Struct("<4sHHIII")
HEADER_SPACE = 32  # body starts here, keeping header and body in separate program operations
FORMAT_VERSION = 1


class RecordError(Exception):
    """The record does not fit its bank."""


@dataclass(frozen=True)
class RecordBanks:
    """Two banks of ``bank_size`` bytes at ``offset`` in the flash, for records tagged ``magic``."""

    flash: Flash
    offset: int
    bank_size: int
    magic: bytes

    def _bank(self, index: int) -> int:
        return self.offset + index * self.bank_size

    def _read_bank(self, index: int) -> tuple[int, bytes] | None:
        base = self._bank(index)
        magic, version, _, generation, length, crc = HEADER.unpack(self.flash.read(base, HEADER.size))
        if magic != self.magic or version != FORMAT_VERSION or length > self.bank_size - HEADER_SPACE:
            return None
        body = self.flash.read(base + HEADER_SPACE, length)
        if zlib.crc32(body) != crc:
            return None
        return generation, body

    def load(self) -> tuple[int, bytes] | None:
        """(bank index, body) of the newest intact record, or None if neither bank holds one."""
        found = [(r[0], i, r[1]) for i in (0, 1) if (r := self._read_bank(i)) is not None]
        if not found:
            return None
        _, index, body = max(found)
        return index, body

    def save(self, body: bytes) -> None:
        if len(body) > self.bank_size - HEADER_SPACE:
            raise RecordError(f"record of {len(body)} bytes does not fit a {self.bank_size}-byte bank")
        current = [(r[0], i) for i in (0, 1) if (r := self._read_bank(i)) is not None]
        generation, index = max(current) if current else (0, 1)
        target = index ^ 1
        base = self._bank(target)
        used = HEADER_SPACE + len(body)
        self.flash.erase(base, -(-used // SECTOR_SIZE) * SECTOR_SIZE)
        self.flash.program(base + HEADER_SPACE, body)
        self.flash.program(
            base, HEADER.pack(self.magic, FORMAT_VERSION, 0, generation + 1, len(body), zlib.crc32(body))
        )


def encode_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

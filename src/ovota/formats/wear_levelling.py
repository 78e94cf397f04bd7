"""ESP-IDF's wear-levelling layer (``components/wear_levelling``, ``WL_Flash``) as the byte formats it keeps in a
data partition: where its state and config sectors are, what a state and a position record hold, and how a
logical sector maps to a physical one. Pure code; the flash I/O is in ``ovota.device.wear_levelling``.

Layout of a partition of N 4 KiB sectors (ESP-IDF's WL_Flash::config with OVMS's settings):

- ``state_size`` is one sector, or whole sectors enough for 64 + 16·N bytes (two for both OVMS partitions);
- the config sector is the last one; state 2 lies before it and state 1 before state 2;
- the sectors in front hold ``max_pos`` = FAT sectors + 1 physical sectors: the FAT's, and one *dummy* sector
  that moves through them, one step every ``updaterate`` (16) sector erases.

Invariants (tests/test_wear_levelling.py): the mapping from the FAT's sectors to physical ones is a bijection onto
the physical sectors other than the dummy, for every ``pos`` and ``move_count``; a state packs and parses back;
any change to a state's first 60 bytes fails its CRC.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

SECTOR = 4096
UPDATE_RATE = 16  # WL_DEFAULT_UPDATERATE: a dummy move every 16 erases
WRITE_SIZE = 16  # WL_DEFAULT_WRITE_SIZE: one position record
TEMP_BUFF = 32  # WL_DEFAULT_TEMP_BUFF_SIZE
VERSION = 2  # WL_CURRENT_VERSION
STATE_HEADER = 64  # sizeof(wl_state_t)
_STATE = struct.Struct("<8I28xI")  # pos, max_pos, move_count, access_count, max_count, block_size, version,
#                                    device_id, reserved[7], crc
_CONFIG = struct.Struct("<9I12x")  # start_addr, full_mem_size, page_size, sector_size, updaterate, wr_size,
#                                    version, temp_buff_size, crc, then padding


def crc32(data: bytes) -> int:
    """The ROM's crc32_le(UINT32_MAX, data) that WL_Flash uses for its state, config and records."""
    return binascii.crc32(data, 0xFFFFFFFF)


@dataclass(frozen=True)
class Layout:
    """Where WL_Flash keeps its sectors in a partition of ``size`` bytes (addresses relative to the partition)."""

    size: int
    state_size: int
    state1: int
    state2: int
    config: int
    fat_sectors: int

    @classmethod
    def for_partition(cls, size: int) -> Layout:
        if size % SECTOR or size < 8 * SECTOR:
            raise ValueError(f"a wear-levelled partition of {size} bytes is not whole 4 KiB sectors, at least 8")
        sectors = size // SECTOR
        state_size = SECTOR
        if STATE_HEADER + WRITE_SIZE * sectors > state_size:
            state_size = -(-(STATE_HEADER + WRITE_SIZE * sectors) // SECTOR) * SECTOR
        config = size - SECTOR
        state2 = config - state_size
        state1 = state2 - state_size
        fat_sectors = (size - 2 * state_size - SECTOR) // SECTOR - 1
        return cls(size, state_size, state1, state2, config, fat_sectors)

    @property
    def max_pos(self) -> int:
        """Physical sectors that the FAT and the dummy share."""
        return self.fat_sectors + 1

    def physical(self, logical: int, pos: int, move_count: int) -> int:
        """WL_Flash::calcAddr in sectors: the FAT's sector ``logical`` with the dummy at ``pos``."""
        if not 0 <= logical < self.fat_sectors:
            raise ValueError(f"sector {logical} is outside the FAT's {self.fat_sectors}")
        shifted = (logical - move_count) % self.fat_sectors
        return shifted if shifted < pos else shifted + 1


@dataclass(frozen=True)
class State:
    """wl_state_t. On flash ``pos`` and ``access_count`` stay 0: the position lives in the records after it."""

    max_pos: int
    device_id: int
    move_count: int = 0
    pos: int = 0
    access_count: int = 0
    max_count: int = UPDATE_RATE
    block_size: int = SECTOR
    version: int = VERSION

    def pack(self) -> bytes:
        fields = (self.pos, self.max_pos, self.move_count, self.access_count, self.max_count, self.block_size)
        body = _STATE.pack(*fields, self.version, self.device_id, 0)[:-4]
        return body + struct.pack("<I", crc32(body))

    @classmethod
    def parse(cls, data: bytes) -> State | None:
        """The state in the first 64 bytes of ``data``; None if its CRC does not match (or it is short)."""
        if len(data) < STATE_HEADER:
            return None
        pos, max_pos, move_count, access, max_count, block, version, device_id, crc = _STATE.unpack_from(data)
        if crc32(data[: STATE_HEADER - 4]) != crc:
            return None
        return cls(max_pos, device_id, move_count, pos, access, max_count, block, version)


def record(device_id: int, pos: int) -> bytes:
    """WL_Flash::fillOkBuff: the 16-byte record that says the dummy has left ``pos``."""
    words = ((device_id + pos * 4 + i) & 0xFFFFFFFF for i in range(WRITE_SIZE // 4))
    return b"".join(struct.pack("<I", crc32(struct.pack("<I", word))) for word in words)


def recorded_pos(state_area: bytes, device_id: int, max_pos: int) -> int:
    """How many position records follow a state header, valid and in order: the dummy's position."""
    pos = 0
    while pos < max_pos:
        at = STATE_HEADER + pos * WRITE_SIZE
        if state_area[at : at + WRITE_SIZE] != record(device_id, pos):
            break
        pos += 1
    return pos


def config_sector(size: int) -> bytes:
    """wl_config_t as ESP-IDF's wl_fatfsgen writes it (zero padding), in an otherwise erased sector."""
    fields = (0, size, SECTOR, SECTOR, UPDATE_RATE, WRITE_SIZE, VERSION, TEMP_BUFF)
    body = struct.pack("<8I", *fields)
    packed = _CONFIG.pack(*fields, crc32(body))
    return packed + b"\xff" * (SECTOR - len(packed))

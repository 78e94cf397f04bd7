"""A data partition through ESP-IDF's wear levelling (WL_Flash), on the emulated flash: what FatFs under
``/store`` reads and writes on a real module. The byte formats are in ``ovota.formats.wear_levelling``.

Mounting follows WL_Flash::init: both state copies valid → the first one, the dummy's position from its records
(and the second rewritten if it differs); both invalid → new metadata with a new device id, the data left as it
is; one invalid → rewritten from the other, the position then 0 (state 2 was bad) or ``max_pos - 1`` (state 1).
Every sector erase counts towards a dummy move (WL_Flash::updateWL), which copies the next sector into the dummy,
records the step in both states, and after a full turn rewrites both states with ``move_count`` one higher.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from ovota.device.flash import Flash
from ovota.formats.partition_table import Partition
from ovota.formats.wear_levelling import (
    SECTOR,
    STATE_HEADER,
    VERSION,
    WRITE_SIZE,
    Layout,
    State,
    config_sector,
    record,
    recorded_pos,
)


class WearLevelled:
    """The FAT's ``fat_sectors`` sectors of a wear-levelled partition. Each method's flash operations are
    ESP-IDF's, in its order, so a power cut between any two leaves what a real module would find."""

    def __init__(self, flash: Flash, partition: Partition) -> None:
        self.flash = flash
        self.base = partition.offset
        self.layout = Layout.for_partition(partition.size)
        self.access_count = 0
        self._mount()

    @property
    def sectors(self) -> int:
        return self.layout.fat_sectors

    def read(self, sector: int) -> bytes:
        return self.flash.read(self._address(sector), SECTOR)

    def write(self, sector: int, data: bytes) -> None:
        """One FAT sector, as FatFs's diskio writes it through WL: erase (counting towards a move), program."""
        if len(data) != SECTOR:
            raise ValueError(f"a sector is {SECTOR} bytes, not {len(data)}")
        self._count_erase()
        address = self._address(sector)
        self.flash.erase(address, SECTOR)
        if data != b"\xff" * SECTOR:
            self.flash.program(address, data)

    def flush(self) -> None:
        """wl_unmount's flush: one dummy move now."""
        self.access_count = self.state.max_count - 1
        self._count_erase()

    # -- mount and metadata --------------------------------------------------------------------------------------

    def _mount(self) -> None:
        layout = self.layout
        area1 = self.flash.read(self.base + layout.state1, layout.state_size)
        area2 = self.flash.read(self.base + layout.state2, layout.state_size)
        state1, state2 = self._usable(State.parse(area1)), self._usable(State.parse(area2))
        if state1 is not None and state2 is not None:
            self.state = state1
            if area1[:STATE_HEADER] != area2[:STATE_HEADER]:
                self._copy_state(area1, layout.state2)
            self.pos = min(recorded_pos(area1, state1.device_id, state1.max_pos), state1.max_pos - 1)
        elif state1 is None and state2 is None:
            self._init_sections()
            self.pos = 0
        elif state1 is not None:
            self.state = state1
            self._copy_state(area1, layout.state2)
            self.pos = 0
        else:
            assert state2 is not None
            self.state = state2
            self._copy_state(area2, layout.state1)
            self.pos = state2.max_pos - 1

    def _usable(self, state: State | None) -> State | None:
        """A state whose CRC matches but whose numbers do not fit this partition (or ESP-IDF's version) is
        treated as missing: a crafted one must not move the dummy outside the partition."""
        if state is None:
            return None
        fits = state.max_pos == self.layout.max_pos and state.move_count < state.max_pos - 1
        return (
            state if fits and state.block_size == SECTOR and state.version == VERSION and state.max_count > 0 else None
        )

    def _init_sections(self) -> None:
        """WL_Flash::initSections: new states (a new device id) and config; the data sectors are not touched."""
        self.state = State(self.layout.max_pos, secrets.randbits(32))
        self._write_states()
        self.flash.erase(self.base + self.layout.config, SECTOR)
        self.flash.program(self.base + self.layout.config, config_sector(self.layout.size)[:48])

    def _write_states(self) -> None:
        header = self.state.pack()
        for area in (self.layout.state1, self.layout.state2):
            self.flash.erase(self.base + area, self.layout.state_size)
            self.flash.program(self.base + area, header)

    def _copy_state(self, source: bytes, target: int) -> None:
        """A state copy rewritten from the other: its header, then each of the other's valid records."""
        self.flash.erase(self.base + target, self.layout.state_size)
        self.flash.program(self.base + target, source[:STATE_HEADER])
        state = State.parse(source)
        assert state is not None
        for pos in range(min(recorded_pos(source, state.device_id, state.max_pos), state.max_pos)):
            self.flash.program(self.base + target + STATE_HEADER + pos * WRITE_SIZE, record(state.device_id, pos))

    # -- the moving dummy ----------------------------------------------------------------------------------------

    def _address(self, sector: int) -> int:
        return self.base + self.layout.physical(sector, self.pos, self.state.move_count) * SECTOR

    def _count_erase(self) -> None:
        """WL_Flash::updateWL: every ``max_count``-th erase moves the dummy one sector on."""
        self.access_count += 1
        if self.access_count < self.state.max_count:
            return
        self.access_count = 0
        max_pos = self.state.max_pos
        source = self.base + ((self.pos + 1) % max_pos) * SECTOR
        dummy = self.base + self.pos * SECTOR
        self.flash.erase(dummy, SECTOR)
        data = self.flash.read(source, SECTOR)
        if data != b"\xff" * SECTOR:  # ESP-IDF copies in 32-byte writes; one write of the sector here
            self.flash.program(dummy, data)
        entry = STATE_HEADER + self.pos * WRITE_SIZE
        for area in (self.layout.state1, self.layout.state2):
            self.flash.program(self.base + area + entry, record(self.state.device_id, self.pos))
        self.pos += 1
        if self.pos >= max_pos:
            self.pos = 0
            move_count = self.state.move_count + 1
            self.state = replace(self.state, move_count=0 if move_count >= max_pos - 1 else move_count)
            self._write_states()

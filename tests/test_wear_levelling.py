"""ESP-IDF's wear levelling (WL_Flash) on the emulated flash: the documented layout of both OVMS store partitions,
the sector mapping's invariants, states and records, data surviving remounts across full turns of the dummy, and
power cuts at every flash operation of sector writes and dummy moves."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovota.device.flash import Flash, PowerCut, PowerLoss
from ovota.device.layout import read_layout
from ovota.device.wear_levelling import WearLevelled
from ovota.formats.partition_table import Partition
from ovota.formats.wear_levelling import (
    SECTOR,
    STATE_HEADER,
    Layout,
    State,
    config_sector,
    crc32,
    record,
    recorded_pos,
)
from tests.module_helpers import new_module

V3_35_STORE = 0x1F0000
V3_30_STORE = 0x100000


def test_layouts_of_the_ovms_store_partitions() -> None:
    """ovms-twin §7: v3-35 sectors 0-490 data + dummy, 491-492 state 1, 493-494 state 2, 495 config; v3-30
    states at 251 and 253, config at 255."""
    new = Layout.for_partition(V3_35_STORE)
    assert (new.state_size, new.state1 // SECTOR, new.state2 // SECTOR, new.config // SECTOR) == (8192, 491, 493, 495)
    assert (new.fat_sectors, new.max_pos) == (490, 491)
    old = Layout.for_partition(V3_30_STORE)
    assert (old.state_size, old.state1 // SECTOR, old.state2 // SECTOR, old.config // SECTOR) == (8192, 251, 253, 255)
    assert old.fat_sectors == 250
    small = Layout.for_partition(32 * SECTOR)  # 64 + 16·32 bytes fit one sector
    assert (small.state_size, small.fat_sectors) == (SECTOR, 32 - 3 - 1)


def test_state_config_and_records_bytes() -> None:
    state = State(max_pos=491, device_id=0x12345678)
    packed = state.pack()
    assert len(packed) == STATE_HEADER and State.parse(packed) == state
    assert packed[:8] == bytes.fromhex("00000000eb010000")  # pos 0, max_pos 491, little-endian
    assert int.from_bytes(packed[60:], "little") == crc32(packed[:60])
    config = config_sector(V3_35_STORE)
    assert config[:36] == bytes.fromhex("00000000" "00001f00" "00100000" "00100000" "10000000" "10000000"
                                        "02000000" "20000000") + crc32(config[:32]).to_bytes(4, "little")  # fmt: skip
    assert config[36:48] == bytes(12) and config[48:] == b"\xff" * (SECTOR - 48)
    assert len(record(1, 0)) == 16 and record(1, 0) != record(1, 1) != record(2, 1)


@given(st.binary(min_size=60, max_size=60), st.integers(0, 59), st.integers(1, 255))
def test_any_change_to_a_state_fails_its_crc(body: bytes, at: int, flip: int) -> None:
    packed = body + crc32(body).to_bytes(4, "little")
    assert State.parse(packed) is not None
    changed = bytearray(packed)
    changed[at] ^= flip
    assert State.parse(bytes(changed)) is None


@given(st.integers(8, 600), st.data())
@settings(max_examples=200)
def test_mapping_is_a_bijection_beside_the_dummy(sectors: int, data: st.DataObject) -> None:
    layout = Layout.for_partition(sectors * SECTOR)
    pos = data.draw(st.integers(0, layout.max_pos - 1))
    move_count = data.draw(st.integers(0, layout.max_pos - 2))
    physical = [layout.physical(s, pos, move_count) for s in range(layout.fat_sectors)]
    assert sorted(physical) == [p for p in range(layout.max_pos) if p != pos]


def store(flash: Flash) -> Partition:
    part = read_layout(flash).get("store")
    assert part is not None
    return part


@pytest.fixture
def module_flash(tmp_path: Path) -> Path:
    path = new_module(tmp_path / "m.img")
    with Flash(path) as flash:  # a blank partition, as a never-mounted store
        part = store(flash)
        flash.erase(part.offset, part.size)
    return path


def test_a_blank_partition_gets_metadata_and_keeps_data_across_turns(module_flash: Path) -> None:
    rng = random.Random(7)
    with Flash(module_flash) as flash:
        wl = WearLevelled(flash, store(flash))
        layout = wl.layout
        area = flash.read(store(flash).offset + layout.state1, layout.state_size)
        state = State.parse(area)
        assert state is not None and state.max_pos == 491 and state.move_count == 0
        assert flash.read(store(flash).offset + layout.config, 36) == config_sector(V3_35_STORE)[:36]
        model: dict[int, bytes] = {}
        # More erases than a full turn of the dummy (16 x 491): move_count goes up, positions wrap.
        for _ in range(16 * 491 + 500):
            sector = rng.randrange(40)
            data = rng.randbytes(16) * (SECTOR // 16)
            wl.write(sector, data)
            model[sector] = data
        assert wl.state.move_count == 1
    with Flash(module_flash) as flash:  # a new mount finds the position from the records
        again = WearLevelled(flash, store(flash))
        assert (again.pos, again.state.move_count) == (wl.pos, 1)
        assert all(again.read(sector) == data for sector, data in model.items())


def test_power_cut_at_every_operation_of_writes_and_a_dummy_move(module_flash: Path, tmp_path: Path) -> None:
    """Each cut leaves a partition that mounts, with every sector but the one being written as it was."""
    with Flash(module_flash) as flash:
        wl = WearLevelled(flash, store(flash))
        for sector in range(12):
            wl.write(sector, bytes([sector]) * SECTOR)
        before = {sector: wl.read(sector) for sector in range(12)}
        accesses = wl.access_count
    pristine = tmp_path / "pristine.img"
    shutil.copyfile(module_flash, pristine)
    plan = [(sector % 12, bytes([0xA0 + sector]) * SECTOR) for sector in range(8)]  # crosses a dummy move

    def replay(cut: PowerCut | None) -> int:
        with Flash(module_flash, cut) as flash:
            wl = WearLevelled(flash, store(flash))
            wl.access_count = accesses  # RAM state of the running mount: a move falls inside the plan
            start = flash.ops
            for sector, data in plan:
                wl.write(sector, data)
            return flash.ops - start

    total = replay(None)
    assert total > len(plan) * 2  # the erases and writes, and the dummy move's copy and records
    written = {sector for sector, _ in plan}
    for at in range(total):
        for torn in (False, True):
            shutil.copyfile(pristine, module_flash)
            with pytest.raises(PowerLoss):
                replay(PowerCut(at, torn))  # a healthy mount itself writes nothing: op indexes are the plan's
            with Flash(module_flash) as flash:
                mounted = WearLevelled(flash, store(flash))
                for sector, old in before.items():
                    if sector not in written:
                        assert mounted.read(sector) == old, (at, torn, sector)


def test_a_broken_state_copy_is_rewritten_from_the_other(module_flash: Path) -> None:
    with Flash(module_flash) as flash:
        part = store(flash)
        wl = WearLevelled(flash, part)
        for i in range(40):  # two dummy moves: records 0 and 1
            wl.write(i % 5, bytes([i]) * SECTOR)
        assert wl.pos == 2
        flash.erase(part.offset + wl.layout.state2, SECTOR)  # state 2's header lost
    with Flash(module_flash) as flash:
        again = WearLevelled(flash, part)
        area2 = flash.read(part.offset + again.layout.state2, again.layout.state_size)
        assert State.parse(area2) == wl.state
        assert recorded_pos(area2, wl.state.device_id, wl.state.max_pos) == 2
        assert again.pos == 0  # ESP-IDF's recovery starts the position again (ovms-twin §7)


def test_a_crafted_state_that_does_not_fit_is_treated_as_missing(module_flash: Path) -> None:
    """A state with a valid CRC but a max_pos beyond the partition must not move the dummy outside it."""
    with Flash(module_flash) as flash:
        part = store(flash)
        layout = Layout.for_partition(part.size)
        crafted = State(max_pos=100_000, device_id=5).pack()
        for area in (layout.state1, layout.state2):
            flash.erase(part.offset + area, layout.state_size)
            flash.program(part.offset + area, crafted)
        wl = WearLevelled(flash, part)  # both unusable: new metadata, as for a blank partition
        assert wl.state.max_pos == 491 and wl.pos == 0
        for i in range(40):
            wl.write(i % 3, bytes([i]) * SECTOR)
        assert wl.pos < wl.state.max_pos

"""otadata against the vectors ESP-IDF's otatool wrote, and the bootloader's selection rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovota.formats import FormatError
from ovota.formats.otadata import (
    OtaData,
    OtaState,
    SelectEntry,
    boot_slot_entry,
    choose_boot,
    seq_crc,
    set_boot_slot,
)
from tests.conftest import CliRunner


def test_crc_recipe() -> None:
    assert seq_crc(1) == 0x4743989A
    assert seq_crc(2) == 0x55F63774
    assert [seq_crc(n) for n in (3, 4, 5, 6, 7, 8)] == [
        0xED4A5011, 0x709D68A8, 0xC8210FCD, 0xDA94A023, 0x6228C746, 0x3A4BD710,
    ]  # fmt: skip


def test_switch_sequence_is_byte_identical_to_otatool(vectors: Path) -> None:
    blank = OtaData()
    assert blank.to_bytes() == (vectors / "otadata/otadata_blank.bin").read_bytes()
    first = set_boot_slot(blank, 0, 2)
    assert first.to_bytes() == (vectors / "otadata/otadata_seq1_ota0.bin").read_bytes()
    second = set_boot_slot(first, 1, 2)
    assert second.to_bytes() == (vectors / "otadata/otadata_seq1_seq2_ota1.bin").read_bytes()


def test_cli_writes_and_reads_the_vectors(vectors: Path, tmp_path: Path, ovota: CliRunner) -> None:
    path = tmp_path / "otadata.bin"
    assert ovota("otadata", "init", path).code == 0
    assert path.read_bytes() == (vectors / "otadata/otadata_blank.bin").read_bytes()
    assert ovota("otadata", "switch", path, "ota_0").code == 0
    assert path.read_bytes() == (vectors / "otadata/otadata_seq1_ota0.bin").read_bytes()
    assert ovota("otadata", "switch", path, "ota_1").code == 0
    assert path.read_bytes() == (vectors / "otadata/otadata_seq1_seq2_ota1.bin").read_bytes()
    for name, factory, expected in [
        ("otadata_blank.bin", True, "factory"),
        ("otadata_blank.bin", False, "ota_0"),
        ("otadata_seq1_ota0.bin", True, "ota_0"),
        ("otadata_seq1_seq2_ota1.bin", True, "ota_1"),
        ("otadata_seq1_seq2_ota1.bin", False, "ota_1"),
    ]:
        args = ["otadata", "show", vectors / "otadata" / name] + (["--factory"] if factory else [])
        run = ovota(*args)
        assert run.code == 0, run.err
        assert run.out.splitlines()[-1] == f"Boot slot: {expected}"


def test_cli_show_rejects_short_file(tmp_path: Path, ovota: CliRunner) -> None:
    path = tmp_path / "short.bin"
    path.write_bytes(b"\xff" * 100)
    run = ovota("otadata", "show", path)
    assert run.code == 2
    assert run.err == "Error: otadata must be at least 0x2000 bytes, got 0x64\n"


def test_sequence_alternates_sectors() -> None:
    data = OtaData()
    written = []
    for slot in (0, 1, 0, 1, 1, 0):
        index, entry = boot_slot_entry(data, slot, 2)
        data = data.with_entry(index, entry)
        written.append((index, entry.seq))
        assert choose_boot(data, 2, has_factory=True).slot == slot
    # The v3.3 rule re-writes the same seq into the other sector when the slot is already selected.
    assert written == [(0, 1), (1, 2), (0, 3), (1, 4), (0, 4), (1, 5)]


def test_selection_rules() -> None:
    s1, s2 = SelectEntry.for_seq(1), SelectEntry.for_seq(2)
    bad_crc = SelectEntry(2, b"\xff" * 20, OtaState.UNDEFINED, 0x12345678)
    aborted = SelectEntry.for_seq(2, OtaState.ABORTED)
    assert choose_boot(OtaData((s1, s2)), 2, False).label == "ota_1"
    assert choose_boot(OtaData((s1, bad_crc)), 2, False).label == "ota_0"  # torn write: older entry wins
    assert choose_boot(OtaData((s1, aborted)), 2, True).label == "ota_0"
    assert choose_boot(OtaData((s2, s2)), 2, False).label == "ota_1"
    assert choose_boot(OtaData((SelectEntry.for_seq(3), SelectEntry())), 1, True).label == "ota_0"  # one slot
    assert choose_boot(OtaData((bad_crc, bad_crc)), 2, True).label == "factory"
    blank_choice = choose_boot(OtaData(), 2, False)
    assert blank_choice.label == "ota_0" and blank_choice.initial
    assert choose_boot(OtaData((s1, s2)), 0, True).label == "factory"  # no OTA apps


def test_switch_from_corrupt_otadata_writes_sector_zero() -> None:
    bad = SelectEntry(7, b"\xff" * 20, OtaState.UNDEFINED, 0)
    index, entry = boot_slot_entry(OtaData((bad, bad)), 1, 2)
    assert (index, entry.seq, entry.crc) == (0, 2, seq_crc(2))
    with pytest.raises(FormatError, match="ota_2 is not one of the 2 OTA slots"):
        boot_slot_entry(OtaData(), 2, 2)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.integers(1, 4))
def test_any_switch_sequence_selects_the_last_slot(slots: list[int], count: int) -> None:
    data = OtaData()
    for slot in slots:
        if slot < count:
            data = set_boot_slot(data, slot, count)
            assert choose_boot(data, count, has_factory=True).slot == slot
            assert OtaData.from_bytes(data.to_bytes()) == data


_entry_bytes = st.binary(min_size=32, max_size=32) | st.builds(
    lambda seq, state: SelectEntry.for_seq(seq, state).to_bytes(), st.integers(0, 0xFFFFFFFF), st.integers(0, 5)
)


@given(_entry_bytes, _entry_bytes, st.integers(0, 16), st.booleans())
def test_random_otadata_never_crashes(first: bytes, second: bytes, count: int, factory: bool) -> None:
    pad = b"\xff" * (0x1000 - 32)
    choice = choose_boot(OtaData.from_bytes(first + pad + second + pad), count, factory)
    assert choice.slot is None or 0 <= choice.slot < max(count, 1)

"""Partition tables against gen_esp32part's own output and its validation rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovota.formats import FormatError
from ovota.formats.partition_table import APP, DATA, Partition, PartitionTable
from tests.conftest import CliRunner


def build(csv: str) -> bytes:
    table = PartitionTable.from_csv(csv)
    table.verify()
    return table.to_binary()


@pytest.mark.parametrize(
    ("csv", "binary"),
    [
        ("partition_tables/partitions.csv", "partition_tables/ovms_v3-35_ota_only.bin"),
        ("partition_tables/3.3.005/partitions.csv", "partition_tables/ovms_v3-30_factory_ota.bin"),
        ("partition_tables/support/partitions16M.csv", "partition_tables/support/partition_table_f12.bin"),
        ("partition_tables/support/partition16M_update.csv", "partition_tables/ovms_v3-35_ota_only.bin"),
    ],
)
def test_csv_builds_the_esp_idf_binary(vectors: Path, csv: str, binary: str) -> None:
    assert build((vectors / csv).read_text()) == (vectors / binary).read_bytes()


def test_cli_build_is_byte_identical(vectors: Path, tmp_path: Path, ovota: CliRunner) -> None:
    for csv, expected in [
        ("partitions.csv", "ovms_v3-35_ota_only.bin"),
        ("3.3.005/partitions.csv", "ovms_v3-30_factory_ota.bin"),
    ]:
        out = tmp_path / "table.bin"
        run = ovota("parttable", "build", "--flash-size", "16MB", vectors / "partition_tables" / csv, out)
        assert run.code == 0, run.err
        assert out.read_bytes() == (vectors / "partition_tables" / expected).read_bytes()


def test_f12_binary_parses_back_to_the_v3_30_csv(vectors: Path, ovota: CliRunner) -> None:
    run = ovota("parttable", "show", vectors / "partition_tables/support/partition_table_f12.bin")
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        "# ESP-IDF Partition Table",
        "# Name, Type, SubType, Offset, Size, Flags",
        "nvs,data,nvs,0x9000,16K,",
        "otadata,data,ota,0xd000,8K,",
        "phy_init,data,phy,0xf000,4K,",
        "factory,app,factory,0x10000,4M,",
        "ota_0,app,ota_0,0x410000,4M,",
        "ota_1,app,ota_1,0x810000,4M,",
        "store,data,fat,0xc10000,1M,",
    ]
    shown = PartitionTable.from_csv(run.out)
    original = PartitionTable.from_csv((vectors / "partition_tables/3.3.005/partitions.csv").read_text())
    assert shown == original


def test_decoded_v3_35_records(vectors: Path) -> None:
    table = PartitionTable.from_binary((vectors / "partition_tables/ovms_v3-35_ota_only.bin").read_bytes())
    assert [(p.name, p.type, p.subtype, p.offset, p.size) for p in table] == [
        ("nvs", DATA, 0x02, 0x9000, 0x4000),
        ("otadata", DATA, 0x00, 0xD000, 0x2000),
        ("phy_init", DATA, 0x01, 0xF000, 0x1000),
        ("ota_0", APP, 0x10, 0x10000, 0x700000),
        ("ota_1", APP, 0x11, 0x710000, 0x700000),
        ("store", DATA, 0x81, 0xE10000, 0x1F0000),
    ]
    assert table.to_binary()[0xD0:0xE0].hex() == "520877a00f2b1f7506844246b950ab23"


def test_other_ovms_boards_build(vectors: Path) -> None:
    four = PartitionTable.from_csv((vectors / "partition_tables/support/partitions4M.csv").read_text())
    eight = PartitionTable.from_csv((vectors / "partition_tables/support/partitions8M.csv").read_text())
    four.check_fits(4 * 0x100000)
    eight.check_fits(8 * 0x100000)
    assert [p.name for p in eight.ota_slots] == ["ota_0"]
    assert eight.find("store") == Partition("store", DATA, 0x81, 0x610000, 0x100000)


def test_csv_syntax_features() -> None:
    table = PartitionTable.from_csv(
        "\ufeff# comment\n"
        "  nvs , data , nvs , , 0x10K\n"
        "otadata,data,ota,,8K,,,\n"
        "app0,app,factory,,-0x200000\n"
        "custom,0x40,0x01,,${SIZE},encrypted:readonly\n"
        "blob,data,,,4k\n",
        env={"SIZE": "1M"},
    )
    table.verify()
    assert [(p.name, p.offset, p.size) for p in table] == [
        ("nvs", 0x9000, 0x4000),
        ("otadata", 0xD000, 0x2000),
        ("app0", 0x10000, 0x1F0000),
        ("custom", 0x200000, 0x100000),
        ("blob", 0x300000, 0x1000),
    ]
    custom = table.find("custom")
    assert custom is not None and custom.encrypted and custom.readonly and custom.type == 0x40
    blob = table.find("blob")
    assert blob is not None and blob.subtype == 0x06  # empty data subtype is "undefined" on current IDF
    assert "custom,64,1,0x200000,1M,encrypted:readonly" in table.to_csv()


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("a,app,ota_0,0x18000,1M", "Partition a invalid: Offset 0x18000 is not aligned to 0x10000"),
        ("a,data,nvs,0x9800,0x4000", "Partition a invalid: Offset 0x9800 is not aligned to 0x1000"),
        ("a,app,ota_0,0x10000,0x10800", "Partition a invalid: Size 0x10800 is not aligned to 0x1000"),
        ("a,data,nvs,0x9000,0x2000", "'nvs' partition of size 0x2000 must be flagged as 'readonly'"),
        ("a,data,nvs,0x9000,0x4000\na,data,phy,0xd000,0x1000", "Partition names must be unique"),
        ("a,data,ota,0x9000,0x2000\nb,data,ota,0xb000,0x2000", "Found multiple otadata partitions"),
        ("a,data,ota,0x9000,0x3000", "otadata partition must have size = 0x2000"),
        ("a,data,ota,0x9000,0x2000,readonly", "is always read-write and cannot be read-only"),
        ("a,app,bogus,0x10000,1M", "Error at line 1: Value 'bogus' is not valid. Known keywords: factory"),
        ("a,app,ota_0,0x10000,", "Error at line 1: Size field can't be empty"),
        ("a,app,ota_0,0x10000,1M,secret", "Error at line 1: CSV flag column contains unknown flag 'secret'"),
        ("a,,ota_0,0x10000,1M", "Error at line 1: Field 'type' can't be left empty."),
        ("a,app,,0x10000,1M", "Error at line 1: App partition cannot have an empty subtype"),
        ("a,app,ota_0,010,1M", "Error at line 1: Invalid field value 010"),
        ("a,app,ota_0,0x8000,1M", "Partitions overlap. Partition sets offset 0x8000. But partition table"),
        ("a,app,ota_0,0x10000,1M\nb,app,ota_1,0x80000,1M", "Previous partition ends 0x110000"),
        ("a,app,ota_0,0x10000,$NOPE", "unknown variable 'NOPE'"),
        ("a,0x1ff,0,0x10000,1M", "type 511 is out of range"),
    ],
)
def test_invalid_tables_are_rejected(csv: str, message: str) -> None:
    with pytest.raises(FormatError) as err:
        build(csv)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_overlap_found_in_sorted_order() -> None:
    table = PartitionTable((Partition("a", DATA, 2, 0x20000, 0x4000), Partition("b", DATA, 1, 0x1E000, 0x4000)))
    with pytest.raises(FormatError, match=r"Partition at 0x20000 overlaps 0x1e000-0x21fff"):
        table.verify()
    with pytest.raises(FormatError, match=r"Partition offset 0x8000 is below 0x9000"):
        PartitionTable((Partition("a", DATA, 2, 0x8000, 0x4000),)).verify()


def test_too_many_entries() -> None:
    rows = [f"p{i},data,fat,,4K" for i in range(95)]
    with pytest.raises(FormatError, match=r"Binary partition table length \(3072\) longer than max"):
        build("\n".join(rows))
    build("\n".join(rows[:94]))


def test_flash_size_check(vectors: Path, tmp_path: Path, ovota: CliRunner) -> None:
    run = ovota(
        "parttable", "build", "--flash-size", "8MB", vectors / "partition_tables/partitions.csv", tmp_path / "x"
    )
    assert run.code == 2
    assert "Error: Partitions tables occupies 16.0MB of flash (16777216 bytes) which does not fit" in run.err
    assert not (tmp_path / "x").exists()


def test_cli_bad_csv_is_one_line_exit_2(tmp_path: Path, ovota: CliRunner) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("nvs,data,nvs,0x9000,0x4000\nota_0,app,ota_0,0x18000,1M\n")
    run = ovota("parttable", "build", csv, tmp_path / "out.bin")
    assert run.code == 2
    assert run.err == "Error: Partition ota_0 invalid: Offset 0x18000 is not aligned to 0x10000\n"
    assert not (tmp_path / "out.bin").exists()


def test_binary_errors(vectors: Path) -> None:
    good = (vectors / "partition_tables/ovms_v3-30_factory_ota.bin").read_bytes()
    corrupt = bytearray(good)
    corrupt[0x24] ^= 1  # second record's offset
    with pytest.raises(FormatError, match="MD5 checksums don't match"):
        PartitionTable.from_binary(bytes(corrupt))
    with pytest.raises(FormatError, match="missing an end-of-table marker"):
        PartitionTable.from_binary(good[:0x100])
    with pytest.raises(FormatError, match="multiple of 32 bytes"):
        PartitionTable.from_binary(good[:100])


# -- properties -------------------------------------------------------------------------------------

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=16)


@st.composite
def tables(draw: st.DrawFn) -> PartitionTable:
    """Random valid tables placed back to back from 0x9000, with random gaps."""
    count = draw(st.integers(1, 20))
    names = draw(st.lists(_names, min_size=count, max_size=count, unique=True))
    parts = []
    offset = 0x9000
    for name in names:
        is_app = draw(st.booleans())
        align = 0x10000 if is_app else 0x1000
        offset = -(-offset // align) * align + draw(st.integers(0, 4)) * align
        if is_app:
            ptype, subtype = APP, draw(st.sampled_from([0x00, 0x20, *range(0x10, 0x20)]))
        else:
            ptype = draw(st.sampled_from([DATA, 0x40, 0x99]))
            subtype = draw(st.sampled_from([0x01, 0x04, 0x81, 0x82, 0x83, 0xFE]))
        size = draw(st.integers(1, 64)) * 0x1000
        flags = draw(st.sampled_from([(False, False), (True, False), (False, True), (True, True)]))
        parts.append(Partition(name, ptype, subtype, offset, size, *flags))
        offset += size
    return PartitionTable(tuple(parts))


@given(tables())
def test_csv_binary_csv_round_trip(table: PartitionTable) -> None:
    table.verify()
    binary = table.to_binary()
    assert len(binary) == 0xC00
    from_binary = PartitionTable.from_binary(binary)
    assert from_binary == table
    csv = from_binary.to_csv()
    assert PartitionTable.from_csv(csv) == table
    assert PartitionTable.from_csv(csv).to_binary() == binary


@given(st.binary(max_size=4096))
def test_random_bytes_never_crash_the_binary_parser(data: bytes) -> None:
    try:
        PartitionTable.from_binary(data).verify()
    except FormatError as err:
        assert str(err) and "\n" not in str(err)


@given(st.data())
def test_mutated_tables_never_crash(data: st.DataObject) -> None:
    binary = bytearray(data.draw(tables()).to_binary())
    for _ in range(data.draw(st.integers(1, 8))):
        binary[data.draw(st.integers(0, len(binary) - 1))] = data.draw(st.integers(0, 255))
    try:
        PartitionTable.from_binary(bytes(binary), md5=data.draw(st.booleans())).verify()
    except FormatError as err:
        assert str(err)


@given(st.text(alphabet=st.sampled_from(list("ab,01xkKmM:#$ \n-_appdatanvsotafactory")), max_size=200))
def test_random_csv_never_crashes(text: str) -> None:
    try:
        table = PartitionTable.from_csv(text, env={})
        table.verify()
        table.to_binary()
    except FormatError as err:
        assert str(err)

"""NVS partitions against esp-idf-nvs-partition-gen: its images read back exactly, ours byte-identical to its
own for the same rows, ESP-IDF's rules for erased, torn and duplicated items, and hostile bytes."""

from __future__ import annotations

import base64
import csv
import io
import struct
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovota.formats import FormatError
from ovota.formats.nvs import (
    ENTRY_COUNT,
    ENTRY_SIZE,
    FIRST_ENTRY,
    INT_TYPES,
    PAGE_SIZE,
    Item,
    ItemType,
    NvsValue,
    NvsValues,
    PageHeader,
    PageState,
    Typed,
    build_nvs,
    nvs_crc,
    read_nvs,
)

gen = pytest.importorskip("esp_idf_nvs_partition_gen.nvs_partition_gen")

Values = dict[str, dict[str, NvsValue | Typed]]
# keys the generator's write_entry() answers with extra Wi-Fi items of its own
WIFI_KEYS = {"ap.ssid", "ap.passwd", "ap.authmode", "sta.ssid", "sta.pswd"}


def plain(values: Values) -> NvsValues:
    """What read_nvs gives for ``values``: integers without their type, bytearrays as bytes."""
    return {
        ns: {k: v.value if isinstance(v, Typed) else bytes(v) if isinstance(v, bytearray) else v for k, v in d.items()}
        for ns, d in values.items()
    }


def generate_api(values: Values, size: int) -> bytes:
    """The generator's image for ``values``, through its Python API (rows in dict order)."""
    out = io.BytesIO()
    nvs = gen.nvs_open(out, size - PAGE_SIZE, gen.Page.VERSION2)
    for ns, items in values.items():
        gen.write_entry(nvs, ns, "namespace", "", "")
        for key, value in items.items():
            if isinstance(value, Typed | int):
                typed = value if isinstance(value, Typed) else Typed.of(value)
                gen.write_entry(nvs, key, "data", typed.kind, str(typed.value))
            else:
                gen.write_entry(nvs, key, "data", "string" if isinstance(value, str) else "binary", value)
    gen.nvs_close(nvs)
    return out.getvalue()


def generate_csv(tmp_path: Path, rows: list[list[str]], size: int, version: int = 2) -> bytes:
    """The image ``esp_idf_nvs_partition_gen generate`` writes for the CSV ``rows``."""
    with (tmp_path / "nvs.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["key", "type", "encoding", "value"], *rows])
    args = SimpleNamespace(input=str(tmp_path / "nvs.csv"), output="nvs.bin", size=hex(size), version=version)
    gen.generate(SimpleNamespace(**vars(args), outdir=str(tmp_path)))
    return (tmp_path / "nvs.bin").read_bytes()


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed * 13 + (i >> 8)) & 0xFF for i in range(n))


def csv_case(tmp_path: Path, size: int) -> tuple[list[list[str]], Values]:
    """CSV rows with every type, three namespaces, strings of many entries and a blob over all but one page,
    and the values they stand for (in row order)."""
    pages = size // PAGE_SIZE - 1
    big = pattern(3000 * (pages - 1) + 900, size)
    (tmp_path / "cal.bin").write_bytes(pattern(300, 1))
    (tmp_path / "motd.txt").write_text("Tschüss, " * 20)
    extremes: list[tuple[str, int]] = []
    for kind, item_type in INT_TYPES.items():
        bits = 8 * (item_type & 0x0F)
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if kind[0] == "i" else (0, (1 << bits) - 1)
        extremes += [(kind, low), (kind, high)]
    values: Values = {"phy": {}, "ovms": {}, "net80211": {}}
    rows: list[list[str]] = [["phy", "namespace", "", ""]]
    for n, (kind, v) in enumerate(extremes):
        rows.append([f"{kind}_{n}", "data", kind, str(v)])
        values["phy"][f"{kind}_{n}"] = Typed(v, kind)
    rows += [["cal_data", "file", "binary", str(tmp_path / "cal.bin")], ["ovms", "namespace", "", ""]]
    values["phy"]["cal_data"] = pattern(300, 1)
    strings = {"empty": "", "short": "x", "31": "y" * 31, "32": "z" * 32, "long": "Ünïcødé " * 60}
    for key, text in strings.items():
        rows.append([key, "data", "string", text])
        values["ovms"][key] = text
    rows += [["motd", "file", "string", str(tmp_path / "motd.txt")], ["net80211", "namespace", "", ""]]
    values["ovms"]["motd"] = "Tschüss, " * 20
    rows += [["big", "data", "hex2bin", big.hex()], ["b64", "data", "base64", base64.b64encode(b"\0\1\2").decode()]]
    rows += [["nothing", "data", "hex2bin", ""]]
    values["net80211"].update(big=big, b64=b"\0\1\2", nothing=b"")
    return rows, values


@pytest.mark.parametrize("size", [0x3000, 0x4000, 0x6000])
def test_generator_csv_images_read_back_and_build_byte_identically(tmp_path: Path, size: int) -> None:
    rows, values = csv_case(tmp_path, size)
    image = generate_csv(tmp_path, rows, size)
    assert len(image) == size
    entries = (Item.from_bytes(image[at : at + ENTRY_SIZE]) for at in range(0, size, ENTRY_SIZE))
    chunks = [e.chunk for e in entries if e and e.type == ItemType.BLOB_DATA and e.name == "big"]
    assert len(chunks) >= 2 and chunks == list(range(len(chunks)))  # the big blob spans pages
    assert read_nvs(image) == plain(values)
    assert build_nvs(values, size) == image


def test_a_rewritten_key_on_a_later_page_wins(tmp_path: Path) -> None:
    # (a second row for an existing namespace does not switch back to it: the generator writes the following
    # rows into the namespace created last, so the rewrite stays in one namespace)
    filler = [[f"k{i}", "data", "u16", str(i)] for i in range(130)]  # pushes the rewrite onto page 1
    rows = [["a", "namespace", "", ""], ["dup", "data", "string", "old"], ["b", "namespace", "", ""]]
    rows += [["dup", "data", "u32", "1"], *filler, ["dup", "data", "i8", "-7"]]
    image = generate_csv(tmp_path, rows, 0x4000)
    expected = {"a": {"dup": "old"}, "b": {"dup": -7} | {f"k{i}": i for i in range(130)}}
    assert read_nvs(image) == expected
    swapped = image[PAGE_SIZE : 2 * PAGE_SIZE] + image[:PAGE_SIZE] + image[2 * PAGE_SIZE :]
    assert read_nvs(swapped) == expected  # sequence numbers, not flash order, decide


def test_version_1_images_keep_single_page_blobs(tmp_path: Path) -> None:
    rows = [["ns", "namespace", "", ""], ["blob", "data", "hex2bin", pattern(1500, 3).hex()], ["n", "data", "i8", "-5"]]
    image = generate_csv(tmp_path, rows, 0x3000, version=1)
    assert image[8] == 0xFF and image[FIRST_ENTRY + 32 + 1] == ItemType.BLOB
    assert read_nvs(image) == {"ns": {"blob": pattern(1500, 3), "n": -5}}


@pytest.mark.parametrize("fill", range(118, 128))
@pytest.mark.parametrize("last", [b"", pattern(40, 2), pattern(4500, 3), "", "t" * 100, 300])
def test_page_ends_are_laid_out_as_the_generator_does(fill: int, last: NvsValue) -> None:
    """Blobs, strings and integers written with 0-8 entries left (a blob then writes an empty chunk first)."""
    values: Values = {"ns": {f"f{i}": Typed(i % 256, "u8") for i in range(fill - 1)} | {"last": last}}
    image = build_nvs(values, 0x4000)
    assert image == generate_api(values, 0x4000)
    assert read_nvs(image) == plain(values)


def entry_at(page: int, index: int) -> int:
    return page * PAGE_SIZE + FIRST_ENTRY + ENTRY_SIZE * index


def set_state(image: bytearray, page: int, index: int, state: int) -> None:
    at = page * PAGE_SIZE + 32 + index // 4
    image[at] = (image[at] & ~(3 << (2 * (index % 4)))) | (state << (2 * (index % 4)))


def test_erased_crc_broken_and_torn_items_are_ignored() -> None:
    values: Values = {"ns": {"gone": 1, "crc": 2, "torn": "a" * 40, "data_crc": "b" * 10, "kept": 5}}
    image = bytearray(build_nvs(values, 0x3000))
    set_state(image, 0, 1, 0b00)  # "gone": erased
    image[entry_at(0, 2) + 24] ^= 1  # "crc": item CRC wrong
    set_state(image, 0, 5, 0b11)  # "torn": its second data entry never marked written
    image[entry_at(0, 7)] ^= 1  # "data_crc": payload changed under its CRC
    # the active page ends at its first empty entry (5): "data_crc" and "kept" lie beyond it
    assert read_nvs(bytes(image)) == {"ns": {}}
    set_state(image, 0, 5, 0b10)
    assert read_nvs(bytes(image)) == {"ns": {"torn": "a" * 40, "kept": 5}}
    struct.pack_into("<I", image, 0, PageState.FULL)  # full pages are read to the end, erased entries skipped
    set_state(image, 0, 5, 0b00)
    assert read_nvs(bytes(image)) == {"ns": {"kept": 5}}


def test_a_torn_rewrite_leaves_the_old_value() -> None:
    image = bytearray(build_nvs({"ns": {"s": "old", "t": "new value, torn"}}, 0x3000))
    image[entry_at(0, 3) + 8 : entry_at(0, 3) + 10] = b"s\0"  # "t" becomes a rewrite of "s"
    item = Item.from_bytes(bytes(image[entry_at(0, 3) : entry_at(0, 4)]))
    assert item is None  # key changed under the CRC
    fixed = Item.make(1, ItemType.SZ, 2, 0xFF, "s", bytes(image[entry_at(0, 3) + 24 : entry_at(0, 4)]))
    image[entry_at(0, 3) : entry_at(0, 4)] = fixed.to_bytes()
    assert read_nvs(bytes(image)) == {"ns": {"s": "new value, torn"}}
    image[entry_at(0, 4)] ^= 0xFF  # its data CRC no longer holds: the old value is what ESP-IDF reads
    assert read_nvs(bytes(image)) == {"ns": {"s": "old"}}


def test_blob_with_a_missing_chunk_is_absent_and_corrupt_pages_are_skipped() -> None:
    image = bytearray(build_nvs({"ns": {"blob": pattern(6000, 5), "n": Typed(3, "u64")}}, 0x4000))
    assert read_nvs(bytes(image)) == {"ns": {"blob": pattern(6000, 5), "n": 3}}
    image[PAGE_SIZE + 4] ^= 1  # page 1's header CRC: the page is corrupt, chunk 1 and the index with it
    assert read_nvs(bytes(image)) == {"ns": {}}
    image[PAGE_SIZE + 4] ^= 1
    set_state(image, 1, 0, 0b00)  # chunk 1 erased
    assert read_nvs(bytes(image)) == {"ns": {"n": 3}}


def test_newer_format_and_bad_lengths_raise_format_error() -> None:
    image = bytearray(build_nvs({"ns": {"a": 1}}, 0x3000))
    image[:32] = PageHeader(PageState.ACTIVE, 0, version=0xFD).to_bytes()
    with pytest.raises(FormatError, match="newer"):
        read_nvs(bytes(image))
    for length in (0, 100, PAGE_SIZE + 1):
        with pytest.raises(FormatError):
            read_nvs(b"\xff" * length)
    assert read_nvs(b"\xff" * 0x3000) == {}


def test_build_limits() -> None:
    big_string = "s" * 3999  # the generator stops at 3967 bytes; ESP-IDF and build_nvs take 3999
    assert read_nvs(build_nvs({"ns": {"a": 1, "s": big_string}}, 0x4000)) == {"ns": {"a": 1, "s": big_string}}
    assert build_nvs({"ns": {"u": Typed(1, "u32")}}, 0x3000) != build_nvs({"ns": {"u": 1}}, 0x3000)  # plain: i32
    assert Typed.of(0xFFFFFFFF).kind == "u32" and Typed.of(-(2**40)).kind == "i64" and Typed.of(2**63).kind == "u64"
    bad_calls: list[Callable[[], object]] = [
        lambda: build_nvs({"ns": {"s": "x" * 4000}}, 0x3000),
        lambda: build_nvs({"ns": {"s": "a\0b"}}, 0x3000),
        lambda: build_nvs({"ns": {"sixteen_chars_xx": 1}}, 0x3000),
        lambda: build_nvs({"": {}}, 0x3000),
        lambda: build_nvs({"ns": {"f": 1.5}}, 0x3000),  # type: ignore[dict-item]
        lambda: build_nvs({"ns": {"big": 2**64}}, 0x3000),
        lambda: build_nvs({"ns": {"blob": bytes(9000)}}, 0x3000),
        lambda: build_nvs({}, 0x2000),
        lambda: Typed(256, "u8"),
        lambda: Typed(1, "float"),
    ]
    for bad in bad_calls:
        with pytest.raises(FormatError):
            bad()


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=15).filter(lambda s: s not in WIFI_KEYS)
int_values = st.sampled_from(sorted(INT_TYPES)).flatmap(
    lambda kind: st.integers(
        -(1 << (8 * (INT_TYPES[kind] & 0x0F) - 1)) if kind[0] == "i" else 0,
        (1 << (8 * (INT_TYPES[kind] & 0x0F) - (kind[0] == "i"))) - 1,
    ).map(lambda v: Typed(v, kind))
)
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=300)
blobs = st.binary(max_size=64) | st.integers(0, 9000).map(lambda n: pattern(n, n))  # small and page-spanning
value = st.one_of(int_values, st.integers(-(2**31), 2**32 - 1), text, blobs)
namespace = st.integers(0, 8).flatmap(lambda n: st.dictionaries(names, value, min_size=n, max_size=n + 2))
nvs_values = st.dictionaries(names, namespace, min_size=1, max_size=3)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(values=nvs_values, size=st.sampled_from([0x3000, 0x6000, 0x20000]))
def test_build_round_trips_and_matches_the_generator(values: Values, size: int) -> None:
    try:
        image = build_nvs(values, size)
    except FormatError:
        with pytest.raises(gen.InsufficientSizeError):
            generate_api(values, size)
        return
    assert read_nvs(image) == plain(values)
    assert image == generate_api(values, size)


def reseal(image: bytearray) -> None:
    """Recompute every page header's and every entry's CRC, so mutated fields reach the item parser."""
    for page in range(0, len(image) - PAGE_SIZE + 1, PAGE_SIZE):
        image[page + 28 : page + 32] = struct.pack("<I", nvs_crc(bytes(image[page + 4 : page + 28])))
        for at in range(page + FIRST_ENTRY, page + FIRST_ENTRY + ENTRY_COUNT * ENTRY_SIZE, ENTRY_SIZE):
            image[at + 4 : at + 8] = struct.pack("<I", nvs_crc(bytes(image[at : at + 4] + image[at + 8 : at + 32])))


SAMPLE = build_nvs(
    {"phy": {"cal": pattern(5000, 9), "v": Typed(-2, "i16")}, "ovms": {"s": "string " * 30, "n": 2**40}}, 0x4000
)


def read_or_format_error(data: bytes) -> None:
    try:
        result = read_nvs(data)
    except FormatError:
        return
    assert all(isinstance(v, int | str | bytes) for items in result.values() for v in items.values())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3 * PAGE_SIZE + 10) | st.binary(min_size=PAGE_SIZE, max_size=PAGE_SIZE))
def test_random_bytes(data: bytes) -> None:
    read_or_format_error(data)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=40),
    keep=st.integers(0, len(SAMPLE)) | st.just(len(SAMPLE)),
    sealed=st.booleans(),
)
def test_corrupted_and_truncated_images(edits: list[tuple[int, int]], keep: int, sealed: bool) -> None:
    image = bytearray(SAMPLE)
    for at, byte in edits:
        image[at] = byte
    if sealed:
        reseal(image)
    read_or_format_error(bytes(image[:keep]))


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, ENTRY_COUNT - 1), st.integers(0, 31), st.integers(0, 255)), max_size=20))
def test_resealed_item_fields(edits: list[tuple[int, int, int]]) -> None:
    """Spans, sizes, types, chunk indices and namespace indices of items with valid CRCs, in a full page."""
    image = bytearray(SAMPLE)
    struct.pack_into("<I", image, 0, PageState.FULL)
    for entry, offset, byte in edits:
        image[entry_at(0, entry) + offset] = byte
    reseal(image)
    read_or_format_error(bytes(image))

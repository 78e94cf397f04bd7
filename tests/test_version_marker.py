"""The OVMS version marker, read as OVMS's GetOVMSPartitionVersion reads it.

``c_partition_version`` below is a deliberately literal port of the C function (a 513-byte buffer,
byte-by-byte strncmp and strstr, the same loop counters); the project's implementation must agree with
it on every image, including the shapes real builds have.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovota.formats.app_image import AppImage
from ovota.formats.image_builder import assemble_image, build_app_image
from ovota.formats.version_marker import POSTFIX, PREFIX, image_version
from tests.conftest import CliRunner

BUILT = datetime(2026, 7, 4, 9, 5, 3, tzinfo=UTC)
REAL_VERSION = b"3.3.003-551-g8ef86968-dirty"
DROM = 0x3F400020


# -- the literal port -----------------------------------------------------------------------------------


def _strncmp(buf: bytearray, i: int, s: bytes, n: int) -> int:
    for k in range(n):
        a = buf[i + k]
        b = s[k] if k < len(s) else 0
        if a != b or a == 0:
            return a - b
    return 0


def _strstr(buf: bytearray, i: int, needle: bytes) -> int:
    while buf[i] != 0:
        k = 0
        while k < len(needle) and buf[i + k] == needle[k]:
            k += 1
        if k == len(needle):
            return i
        i += 1
    return -1


def _c_string(buf: bytearray, i: int) -> bytes:
    end = i
    while buf[end] != 0:
        end += 1
    return bytes(buf[i:end])


def c_partition_version(part: bytes) -> bytes | None:
    """GetOVMSPartitionVersion over a partition's bytes; None where the C function returns ""."""

    def esp_partition_read(offset: int, dest: bytearray, at: int, n: int) -> bool:
        if offset + n > len(part):
            return False
        dest[at : at + n] = part[offset : offset + n]
        return True

    buf = bytearray(512 + 1)
    prefix = PREFIX + b"\0"  # const char prefix[] = OVMS_VERSION_PREFIX;
    postfix = POSTFIX + b"\0"
    offset = 0
    if not esp_partition_read(offset, buf, 0, 24):
        return None
    if buf[0] != 0xE9:
        return None
    if buf[1] > 16:
        return None
    offset += 24
    if not esp_partition_read(offset, buf, 0, 8):
        return None
    offset += 8
    length = struct.unpack_from("<i", buf, 4)[0]  # int len = header->data_len
    size = len(buf) - 1
    buf2 = 0
    while length > 0:
        n = size
        if n > length:
            n = length
        if not esp_partition_read(offset, buf, buf2, n):
            return None
        offset += n
        buf[buf2 + n] = 0
        length -= n
        n = len(buf) - (len(prefix) + len(postfix) - 2)
        i = 0
        cp = 0
        while i < n:
            if buf[cp] == prefix[0] and _strncmp(buf, cp, prefix, len(prefix) - 1) == 0:
                cp2 = _strstr(buf, cp, POSTFIX)
                if cp2 >= 0:
                    buf[cp2] = 0
                    cp += len(prefix) - 1
                    return _c_string(buf, cp)
            i += 1
            cp += 1
        n = (len(buf) - 1) // 2
        buf2 = n
        buf[0:n] = buf[buf2 : buf2 + n]
        size = n
    return None


# -- images shaped like real builds ----------------------------------------------------------------------


def image_with_drom(drom: bytes, *more_segments: bytes) -> bytes:
    drom += b"\0" * (-len(drom) % 4)
    segments = [(DROM, drom)] + [(0x3FFB0000, s + b"\0" * (-len(s) % 4)) for s in more_segments]
    return assemble_image(segments)


def both(image: bytes) -> bytes | None:
    ours = image_version(image)
    assert ours == c_partition_version(image)
    return ours


def test_synthetic_builds_have_the_real_shape() -> None:
    data = build_app_image("3.3.006", built=BUILT)
    first = AppImage.parse(data).segments[0]
    drom = data[first.offset : first.offset + first.length]
    lone = drom.find(PREFIX + b"\0")
    assert 0 <= lone < drom.find(PREFIX + b"3.3.006" + POSTFIX)
    assert both(data) == b"3.3.006"


@pytest.mark.parametrize("lone_prefixes", [1, 2, 5])
def test_lone_prefixes_before_the_marker_are_skipped(lone_prefixes: int) -> None:
    drom = b"\x32\x54\xcd\xab" + b"\0" * 60 + (PREFIX + b"\0\0\0\0") * lone_prefixes
    drom += b"some rodata\0" + PREFIX + REAL_VERSION + POSTFIX + b"\0"
    assert both(image_with_drom(drom)) == REAL_VERSION


@pytest.mark.parametrize("start", range(430, 560, 7))
def test_marker_across_a_window_edge(start: int) -> None:
    # Windows hold 512 bytes and move by 256: markers near 488 (the last scanned prefix start + its
    # length) and 512 (the first window's end) are found in the second window.
    drom = bytes((i * 7 + 1) % 251 + 1 for i in range(start)) + PREFIX + REAL_VERSION + POSTFIX + b"\0"
    assert both(image_with_drom(drom)) == REAL_VERSION


def test_lone_prefix_straddling_an_edge_then_marker_later() -> None:
    drom = b"x" * 500 + PREFIX + b"\0" + b"y" * 700 + PREFIX + REAL_VERSION + POSTFIX
    assert both(image_with_drom(drom)) == REAL_VERSION


def test_prefix_without_postfix_is_no_version() -> None:
    assert both(image_with_drom(b"abc" + PREFIX + REAL_VERSION + b"\0" * 40)) is None
    assert both(image_with_drom(PREFIX + REAL_VERSION + b"#######OVMSPOST########")) is None


def test_marker_outside_the_first_segment_is_not_found() -> None:
    first = b"\x32\x54\xcd\xab" + b"\0" * 252
    assert both(image_with_drom(first, PREFIX + REAL_VERSION + POSTFIX)) is None


def test_bytes_after_the_marker_do_not_matter() -> None:
    drom = PREFIX + REAL_VERSION + POSTFIX + b"trailing text" + POSTFIX + b"\xff" * 100
    assert both(image_with_drom(drom)) == REAL_VERSION


def test_version_holds_what_lies_between_even_odd_bytes() -> None:
    odd = b"3.3.003\x01\x7f\xe9"
    assert both(image_with_drom(b"\0" * 8 + PREFIX + odd + POSTFIX)) == odd


def test_postfix_overlapping_the_prefix_follows_c_semantics() -> None:
    # strstr finds the postfix inside the prefix's '#' run; the version is then the C string after it.
    drom = PREFIX + b"OVMSPOST########-rest\0" + b"z" * 20
    assert both(image_with_drom(drom)) == b"OVMSPOST########-rest"


def test_segment_longer_than_the_data_fails_only_when_the_read_does() -> None:
    early = bytearray(image_with_drom(PREFIX + REAL_VERSION + POSTFIX + b"\0" * 3000))
    struct.pack_into("<I", early, 24 + 4, 0x100000)  # first segment now claims 1 MiB
    assert both(bytes(early)) == REAL_VERSION  # found in the first window, before any failing read
    late = bytearray(image_with_drom(b"\0" * 3000 + PREFIX + REAL_VERSION + POSTFIX))
    struct.pack_into("<I", late, 24 + 4, 0x100000)
    assert both(bytes(late)) is None


def test_bad_headers_give_no_version() -> None:
    data = bytearray(build_app_image("3.3.006", built=BUILT))
    assert both(bytes(data[:20])) is None
    bad_magic = bytes([0xE8]) + bytes(data[1:])
    assert both(bad_magic) is None
    data[1] = 17
    assert both(bytes(data)) is None


# -- the property: the implementation is the C function ----------------------------------------------------

_pieces = st.one_of(
    st.sampled_from([PREFIX, POSTFIX, b"\0", b"#", b"########", PREFIX + b"\0", PREFIX[:-1], POSTFIX[1:]]),
    st.sampled_from([REAL_VERSION, b"3.3.006", b"OVMSPOST########", b"\x01\x02"]),
    st.sampled_from([REAL_VERSION, b"", b"3.3.006\xff"]).map(lambda v: PREFIX + v + POSTFIX),
    st.binary(min_size=1, max_size=300),
    st.integers(1, 600).map(lambda n: b"a" * n),
)


@given(st.lists(_pieces, max_size=30), st.integers(0, 3), st.integers(-8, 8))
def test_matches_the_literal_c_port(pieces: list[bytes], pad: int, length_change: int) -> None:
    data = bytearray(image_with_drom(b"".join(pieces) + b"\0" * pad))
    if length_change:  # a first segment that claims more or fewer bytes than it holds
        (claimed,) = struct.unpack_from("<I", data, 28)
        struct.pack_into("<I", data, 28, max(0, claimed + length_change))
    both(bytes(data))


# -- through the CLI ---------------------------------------------------------------------------------------


def test_image_info_shows_the_version_of_a_real_shaped_build(tmp_path: Path, ovota: CliRunner) -> None:
    path = tmp_path / "ovms3.bin"
    path.write_bytes(image_with_drom(b"\0" * 64 + PREFIX + b"\0\0\0\0" + PREFIX + REAL_VERSION + POSTFIX))
    run = ovota("image", "info", path)
    assert run.code == 0, run.err
    assert "OVMS version: 3.3.003-551-g8ef86968-dirty\n" in run.out
    assert "\0" not in run.out


def test_image_info_escapes_odd_version_bytes(tmp_path: Path, ovota: CliRunner) -> None:
    path = tmp_path / "ovms3.bin"
    path.write_bytes(image_with_drom(PREFIX + b"3.3.003\x1b[2J\\" + POSTFIX))
    run = ovota("image", "info", path)
    assert run.code == 0, run.err
    assert "OVMS version: 3.3.003\\x1b[2J\\\n" in run.out

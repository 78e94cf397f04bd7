"""ESP32 app image (the format of ``ovms3.bin``): parse, verify, read its descriptors, build synthetic ones.

Layout: a 24-byte header, ``segment_count`` times (8-byte segment header + data), zero padding and a
checksum byte that make the length a multiple of 16, then (``hash_appended``) the SHA-256 of all of it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from ovota.formats.errors import FormatError

IMAGE_MAGIC = 0xE9
MAX_SEGMENTS = 16
MAX_SEGMENT_LENGTH = 16 * 1024 * 1024
CHECKSUM_SEED = 0xEF
HASH_LENGTH = 32
CHIP_ESP32 = 0x0000

# esp_image_header_t (v5 naming; IDF v3.3 had reserved[8] where the two chip revision words are):
# magic, segment_count, spi_mode, spi_speed|size<<4, entry_addr, wp_pin, spi_pin_drv[3], chip_id,
# min_chip_rev, min_chip_rev_full, max_chip_rev_full, reserved[4], hash_appended
HEADER = struct.Struct("<BBBBIB3sHBHH4sB")
# esp_image_segment_header_t: load_addr, data_len
SEGMENT_HEADER = struct.Struct("<II")
# esp_app_desc_t (v3.3 layout; master splits reserv2 into efuse/mmu/flash-mode fields, all zero here)
APP_DESC = struct.Struct("<II8s32s32s16s16s32s32s80s")
APP_DESC_MAGIC = 0xABCD5432

CHIP_NAMES = {
    0x0000: "ESP32",
    0x0002: "ESP32-S2",
    0x0005: "ESP32-C3",
    0x0009: "ESP32-S3",
    0x000C: "ESP32-C2",
    0x000D: "ESP32-C6",
    0x0010: "ESP32-H2",
    0x0012: "ESP32-P4",
    0x0014: "ESP32-C61",
    0x0017: "ESP32-C5",
}

# ESP32 address ranges whose segments stay in flash and are mapped through the 64 KiB-page MMU.
_MAPPED_RANGES = ((0x3F400000, 0x3F800000), (0x400D0000, 0x40400000))
_MMU_PAGE = 0x10000


def chip_name(chip_id: int) -> str:
    return CHIP_NAMES.get(chip_id, f"unknown chip 0x{chip_id:04x}")


def xor_checksum(*chunks: bytes | memoryview, seed: int = CHECKSUM_SEED) -> int:
    """XOR of every byte of every chunk, starting from ``seed`` (the ESP ROM image checksum)."""
    value = seed
    for chunk in chunks:
        if len(chunk):
            value ^= int(np.bitwise_xor.reduce(np.frombuffer(chunk, dtype=np.uint8)))
    return value


@dataclass(frozen=True)
class ImageHeader:
    segment_count: int
    spi_mode: int = 2  # DIO, as OVMS builds
    spi_speed: int = 0  # 40 MHz
    spi_size: int = 4  # 16 MB
    entry_addr: int = 0x40080000
    wp_pin: int = 0xEE
    spi_pin_drv: bytes = b"\0\0\0"
    chip_id: int = CHIP_ESP32
    min_chip_rev: int = 0
    min_chip_rev_full: int = 0
    max_chip_rev_full: int = 0
    hash_appended: bool = True

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> ImageHeader:
        if len(data) < HEADER.size:
            raise FormatError(f"image is truncated: {len(data)} bytes, the header alone needs {HEADER.size}")
        (magic, count, mode, speed_size, entry, wp, drv, chip, rev, rev_min, rev_max, _, hashed) = HEADER.unpack_from(
            data
        )
        if magic != IMAGE_MAGIC:
            hint = " (it looks like an HTML page)" if bytes(data[:1]) == b"<" else ""
            raise FormatError(f"not an ESP32 image: first byte 0x{magic:02x}, expected 0xe9{hint}")
        if count > MAX_SEGMENTS:
            raise FormatError(f"image header lists {count} segments, at most {MAX_SEGMENTS} are allowed")
        if hashed not in (0, 1):
            raise FormatError(f"image header has an invalid hash_appended byte 0x{hashed:02x}")
        return cls(
            count,
            mode,
            speed_size & 0xF,
            speed_size >> 4,
            entry,
            wp,
            drv,
            chip,
            rev,
            rev_min,
            rev_max,
            bool(hashed),
        )

    def to_bytes(self) -> bytes:
        return HEADER.pack(
            IMAGE_MAGIC,
            self.segment_count,
            self.spi_mode,
            self.spi_speed | self.spi_size << 4,
            self.entry_addr,
            self.wp_pin,
            self.spi_pin_drv,
            self.chip_id,
            self.min_chip_rev,
            self.min_chip_rev_full,
            self.max_chip_rev_full,
            b"\0" * 4,
            int(self.hash_appended),
        )


@dataclass(frozen=True)
class Segment:
    load_addr: int
    offset: int  # file offset of the segment's data
    length: int

    @property
    def is_mapped(self) -> bool:
        return any(lo <= self.load_addr < hi for lo, hi in _MAPPED_RANGES)


@dataclass(frozen=True)
class AppDescriptor:
    """esp_app_desc_t, found at the start of the first (DROM) segment of an IDF app."""

    version: str
    project_name: str
    time: str
    date: str
    idf_ver: str
    app_elf_sha256: bytes = b"\0" * 32
    secure_version: int = 0

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> AppDescriptor | None:
        """The descriptor, or None when the magic word is absent (not an IDF v3.3+ app)."""
        if len(data) < APP_DESC.size:
            return None
        magic, secure, _, version, project, time, date, idf, elf_sha, _ = APP_DESC.unpack_from(data)
        if magic != APP_DESC_MAGIC:
            return None
        return cls(_cstr(version), _cstr(project), _cstr(time), _cstr(date), _cstr(idf), elf_sha, secure)

    def to_bytes(self) -> bytes:
        # Strings are cut to 31 characters so a NUL always ends them, as the IDF build does.
        return APP_DESC.pack(
            APP_DESC_MAGIC,
            self.secure_version,
            b"\0" * 8,
            self.version.encode()[:31],
            self.project_name.encode()[:31],
            self.time.encode()[:15],
            self.date.encode()[:15],
            self.idf_ver.encode()[:31],
            self.app_elf_sha256,
            b"\0" * 80,
        )


@dataclass(frozen=True)
class Verification:
    checksum_stored: int
    checksum_computed: int
    hash_stored: bytes | None
    hash_computed: bytes | None
    problems: tuple[str, ...]  # failures other than checksum and hash: chip, segment rules, size

    @property
    def checksum_ok(self) -> bool:
        return self.checksum_stored == self.checksum_computed

    @property
    def hash_ok(self) -> bool:
        return self.hash_stored == self.hash_computed

    @property
    def ok(self) -> bool:
        return self.checksum_ok and self.hash_ok and not self.problems

    def first_failure(self) -> str | None:
        """A one-line reason the image fails, or None if it is valid."""
        if not self.checksum_ok:
            return (
                f"image checksum mismatch (stored 0x{self.checksum_stored:02x}, "
                f"computed 0x{self.checksum_computed:02x})"
            )
        if not self.hash_ok:
            return "image SHA-256 mismatch: the image is corrupt"
        return self.problems[0] if self.problems else None


@dataclass(frozen=True)
class AppImage:
    """A parsed image over its bytes. ``length`` is the image's own length; trailing bytes are ignored."""

    data: memoryview
    header: ImageHeader
    segments: tuple[Segment, ...]
    checksum_offset: int
    length: int

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> AppImage:
        """Parse the structure; raise FormatError if it is not an image or is truncated."""
        view = memoryview(data).cast("B")
        header = ImageHeader.from_bytes(view)
        pos = HEADER.size
        segments = []
        for index in range(header.segment_count):
            if pos + SEGMENT_HEADER.size > len(view):
                raise FormatError(f"image is truncated: it ends inside the header of segment {index}")
            load_addr, length = SEGMENT_HEADER.unpack_from(view, pos)
            pos += SEGMENT_HEADER.size
            if length >= MAX_SEGMENT_LENGTH:
                raise FormatError(f"segment {index} claims {length} bytes, more than 16 MB")
            if pos + length > len(view):
                raise FormatError(
                    f"image is truncated: segment {index} needs {pos + length} bytes, the file has {len(view)}"
                )
            segments.append(Segment(load_addr, pos, length))
            pos += length
        checksum_offset = pos + 15 - pos % 16
        length = checksum_offset + 1 + (HASH_LENGTH if header.hash_appended else 0)
        if length > len(view):
            raise FormatError(f"image is truncated: it needs {length} bytes, the file has {len(view)}")
        return cls(view, header, tuple(segments), checksum_offset, length)

    @property
    def checksum(self) -> int:
        return self.data[self.checksum_offset]

    @property
    def stored_hash(self) -> bytes | None:
        if not self.header.hash_appended:
            return None
        return bytes(self.data[self.checksum_offset + 1 : self.length])

    def compute_checksum(self) -> int:
        return xor_checksum(*(self.data[s.offset : s.offset + s.length] for s in self.segments))

    def compute_hash(self) -> bytes | None:
        if not self.header.hash_appended:
            return None
        return hashlib.sha256(self.data[: self.checksum_offset + 1]).digest()

    def verify(
        self, chip_id: int = CHIP_ESP32, partition_offset: int | None = None, partition_size: int | None = None
    ) -> Verification:
        """Check what ESP-IDF's esp_image_verify checks; the partition arguments enable its placement rules."""
        problems = []
        if self.header.chip_id != chip_id:
            problems.append(f"image is for {chip_name(self.header.chip_id)}, this device is {chip_name(chip_id)}")
        for index, seg in enumerate(self.segments):
            if seg.length % 4:
                problems.append(f"segment {index} length {seg.length} is not a multiple of 4")
            if (
                partition_offset is not None
                and seg.is_mapped
                and (partition_offset + seg.offset) % _MMU_PAGE != seg.load_addr % _MMU_PAGE
            ):
                problems.append(
                    f"Segment {index} load address 0x{seg.load_addr:08x}, doesn't match data "
                    f"0x{partition_offset + seg.offset:08x}"
                )
        if partition_size is not None and self.length > partition_size:
            problems.append(f"image is {self.length} bytes, larger than the {partition_size}-byte partition")
        return Verification(
            self.checksum, self.compute_checksum(), self.stored_hash, self.compute_hash(), tuple(problems)
        )

    def app_descriptor(self) -> AppDescriptor | None:
        if not self.segments:
            return None
        first = self.segments[0]
        return AppDescriptor.from_bytes(self.data[first.offset : first.offset + first.length])


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

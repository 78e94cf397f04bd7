"""ESP-IDF partition table: CSV <-> records <-> the binary at flash offset 0x8000.

Behaviour follows ESP-IDF's ``gen_esp32part.py`` (current master rules for validation): the same CSV
syntax, offset auto-fill, MD5 record, 0xC00 bytes padded with 0xFF, and the same error texts where the
tool has one. Partition types ``bootloader`` and ``partition_table`` (IDF v5.4+) are not supported.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ovota.formats.csv_fields import expand_variables, parse_int
from ovota.formats.errors import FormatError

APP = 0x00
DATA = 0x01

TYPE_KEYWORDS: dict[str, int] = {"app": APP, "data": DATA}

OTA_SUBTYPE_MIN = 0x10
OTA_SLOT_COUNT = 16

SUBTYPE_KEYWORDS: dict[int, dict[str, int]] = {
    APP: {
        "factory": 0x00,
        **{f"ota_{n}": OTA_SUBTYPE_MIN + n for n in range(OTA_SLOT_COUNT)},
        "test": 0x20,
        "tee_0": 0x30,
        "tee_1": 0x31,
    },
    DATA: {
        "ota": 0x00,
        "phy": 0x01,
        "nvs": 0x02,
        "coredump": 0x03,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": 0x06,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
        "tee_ota": 0x90,
    },
}
DATA_OTA = SUBTYPE_KEYWORDS[DATA]["ota"]
DATA_NVS = SUBTYPE_KEYWORDS[DATA]["nvs"]
DATA_COREDUMP = SUBTYPE_KEYWORDS[DATA]["coredump"]
DATA_TEE_OTA = SUBTYPE_KEYWORDS[DATA]["tee_ota"]

# Bit numbers of the flags word; the CSV names them in this order.
FLAG_BITS: dict[str, int] = {"encrypted": 0, "readonly": 1}

DEFAULT_TABLE_OFFSET = 0x8000
TABLE_SECTOR_SIZE = 0x1000  # the table owns this whole sector; partitions start after it
MAX_TABLE_LENGTH = 0xC00  # gen_esp32part's output length; the last 1 KiB of the sector stays erased
APP_ALIGNMENT = 0x10000  # the MMU maps app code in 64 KiB pages
DATA_ALIGNMENT = 0x1000
APP_SIZE_ALIGNMENT = 0x1000
OTADATA_SIZE = 0x2000
NVS_MIN_RW_SIZE = 0x3000
MAX_OFFSET = 0xFFFFFFFF

# esp_partition_info_t: magic[2], type u8, subtype u8, offset u32, size u32, label[16], flags u32
ENTRY = struct.Struct("<2sBBII16sI")
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
MD5_RECORD_PREFIX = MD5_MAGIC + b"\xff" * 14
END_MARKER = b"\xff" * ENTRY.size


@dataclass(frozen=True)
class Partition:
    """One partition entry."""

    name: str
    type: int
    subtype: int
    offset: int
    size: int
    encrypted: bool = False
    readonly: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def ota_slot(self) -> int | None:
        """The n of an ``ota_n`` app partition, None for any other partition."""
        if self.type == APP and OTA_SUBTYPE_MIN <= self.subtype < OTA_SUBTYPE_MIN + OTA_SLOT_COUNT:
            return self.subtype - OTA_SUBTYPE_MIN
        return None

    @property
    def type_keyword(self) -> str:
        """The CSV keyword of the type (``app``, ``data``), or the number."""
        return _keyword(self.type, TYPE_KEYWORDS)

    @property
    def subtype_keyword(self) -> str:
        return _keyword(self.subtype, SUBTYPE_KEYWORDS.get(self.type, {}))

    @property
    def flags(self) -> int:
        return (self.encrypted << FLAG_BITS["encrypted"]) | (self.readonly << FLAG_BITS["readonly"])

    def to_binary(self) -> bytes:
        """The 32-byte record; names longer than 16 bytes are cut as gen_esp32part does."""
        return ENTRY.pack(ENTRY_MAGIC, self.type, self.subtype, self.offset, self.size, self.name.encode(), self.flags)

    @classmethod
    def from_binary(cls, record: bytes) -> Partition:
        if len(record) != ENTRY.size:
            raise FormatError(f"Partition definition length must be exactly 32 bytes. Got {len(record)} bytes.")
        magic, ptype, subtype, offset, size, raw_name, flags = ENTRY.unpack(record)
        if magic != ENTRY_MAGIC:
            raise FormatError(f"Invalid magic bytes ({magic.hex()}) for partition definition")
        try:
            name = raw_name.split(b"\0", 1)[0].decode()
        except UnicodeDecodeError:
            raise FormatError(f"Partition name {raw_name!r} is not valid UTF-8") from None
        known = sum(1 << bit for bit in FLAG_BITS.values())
        if flags & ~known:
            raise FormatError(f"Partition {name} has unknown flag bits 0x{flags & ~known:08x}")
        return cls(
            name,
            ptype,
            subtype,
            offset,
            size,
            encrypted=bool(flags >> FLAG_BITS["encrypted"] & 1),
            readonly=bool(flags >> FLAG_BITS["readonly"] & 1),
        )

    def to_csv_row(self) -> str:
        def size_text(value: int) -> str:
            for unit, suffix in ((0x100000, "M"), (0x400, "K")):
                if value % unit == 0:
                    return f"{value // unit}{suffix}"
            return f"0x{value:x}"

        flags = ":".join(name for name in FLAG_BITS if getattr(self, name))
        return ",".join(
            [
                self.name,
                self.type_keyword,
                self.subtype_keyword,
                f"0x{self.offset:x}",
                size_text(self.size),
                flags,
            ]
        )


@dataclass(frozen=True)
class PartitionTable:
    """An ordered list of partitions (table order is significant: it is the binary's order)."""

    partitions: tuple[Partition, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[Partition]:
        return iter(self.partitions)

    def __len__(self) -> int:
        return len(self.partitions)

    def find(self, name: str) -> Partition | None:
        return next((p for p in self.partitions if p.name == name), None)

    def find_type(self, ptype: int, subtype: int) -> Partition | None:
        return next((p for p in self.partitions if p.type == ptype and p.subtype == subtype), None)

    @property
    def factory(self) -> Partition | None:
        return self.find_type(APP, SUBTYPE_KEYWORDS[APP]["factory"])

    @property
    def otadata(self) -> Partition | None:
        return self.find_type(DATA, DATA_OTA)

    @property
    def ota_slots(self) -> list[Partition]:
        """OTA app partitions ordered by slot number."""
        return sorted((p for p in self.partitions if p.ota_slot is not None), key=lambda p: p.subtype)

    @property
    def flash_end(self) -> int:
        """The offset where the last partition ends (0 for an empty table)."""
        return max((p.end for p in self.partitions), default=0)

    # -- binary ---------------------------------------------------------------------------------------

    def to_binary(self, md5: bool = True) -> bytes:
        """The 0xC00-byte table image gen_esp32part writes: records, MD5 record, 0xFF padding."""
        body = b"".join(p.to_binary() for p in self.partitions)
        if md5:
            body += MD5_RECORD_PREFIX + hashlib.md5(body).digest()
        if len(body) >= MAX_TABLE_LENGTH:
            raise FormatError(f"Binary partition table length ({len(body)}) longer than max")
        return body + b"\xff" * (MAX_TABLE_LENGTH - len(body))

    @classmethod
    def from_binary(cls, data: bytes, md5: bool = True) -> PartitionTable:
        """Parse a binary table as gen_esp32part does: records until an all-0xFF record, MD5 checked."""
        if len(data) % ENTRY.size:
            raise FormatError("Partition table length must be a multiple of 32 bytes")
        digest = hashlib.md5()
        partitions: list[Partition] = []
        for pos in range(0, len(data), ENTRY.size):
            record = bytes(data[pos : pos + ENTRY.size])
            if record == END_MARKER:
                return cls(tuple(partitions))
            if md5 and record[:2] == MD5_MAGIC:
                # Only the magic is compared, as the bootloader and gen_esp32part do.
                if record[16:] != digest.digest():
                    raise FormatError(
                        f"MD5 checksums don't match! (computed: 0x{digest.hexdigest()}, parsed: 0x{record[16:].hex()})"
                    )
                continue
            digest.update(record)
            partitions.append(Partition.from_binary(record))
        raise FormatError("Partition table is missing an end-of-table marker")

    # -- CSV ------------------------------------------------------------------------------------------

    def to_csv(self) -> str:
        rows = ["# ESP-IDF Partition Table", "# Name, Type, SubType, Offset, Size, Flags"]
        rows += [p.to_csv_row() for p in self.partitions]
        return "\n".join(rows) + "\n"

    @classmethod
    def from_csv(
        cls,
        text: str,
        table_offset: int = DEFAULT_TABLE_OFFSET,
        env: Mapping[str, str] | None = None,
    ) -> PartitionTable:
        """Parse gen_esp32part CSV; fill empty offsets and resolve negative sizes. Does not verify."""
        rows: list[_CsvRow] = []
        for line_no, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
            line = expand_variables(raw, env or {}).strip()
            if not line or line.startswith("#"):
                continue
            try:
                rows.append(_CsvRow.parse(line, line_no))
            except FormatError as err:
                raise FormatError(f"Error at line {line_no}: {err}") from None
        return cls(tuple(_place(rows, table_offset)))

    # -- validation -----------------------------------------------------------------------------------

    def verify(self, table_offset: int = DEFAULT_TABLE_OFFSET) -> None:
        """Raise FormatError on the first rule of current ESP-IDF that the table breaks."""
        for p in self.partitions:
            _verify_partition(p)
        names = [p.name for p in self.partitions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FormatError(f"Partition names must be unique (repeated: {', '.join(duplicates)})")
        first_free = table_offset + TABLE_SECTOR_SIZE
        last: Partition | None = None
        for p in sorted(self.partitions, key=lambda p: p.offset):
            if p.offset < first_free:
                raise FormatError(f"Partition offset 0x{p.offset:x} is below 0x{first_free:x}")
            if last is not None and p.offset < last.end:
                raise FormatError(f"Partition at 0x{p.offset:x} overlaps 0x{last.offset:x}-0x{last.end - 1:x}")
            last = p
        for subtype, label in ((DATA_OTA, "otadata"), (DATA_TEE_OTA, "tee_ota")):
            found = [p for p in self.partitions if p.type == DATA and p.subtype == subtype]
            keyword = next(k for k, v in SUBTYPE_KEYWORDS[DATA].items() if v == subtype)
            if len(found) > 1:
                raise FormatError(
                    f"Found multiple {label} partitions. Only one partition can be defined with "
                    f'type="data"(1) and subtype="{keyword}"(0x{subtype:x}).'
                )
            if found and found[0].size != OTADATA_SIZE:
                raise FormatError(f"{label} partition must have size = 0x{OTADATA_SIZE:x}")
        for p in self.partitions:
            if p.type == DATA and p.subtype == DATA_NVS and p.size < NVS_MIN_RW_SIZE and not p.readonly:
                raise FormatError(
                    f"'nvs' partition of size 0x{p.size:x} must be flagged as 'readonly' "
                    f"(the size of read/write NVS has to be at least 0x{NVS_MIN_RW_SIZE:x})"
                )
        self.to_binary()  # the entry-count limit

    def check_fits(self, flash_size: int) -> None:
        """Raise FormatError if the partitions end beyond ``flash_size`` bytes (gen's --flash-size)."""
        end = self.flash_end
        if end > flash_size:
            raise FormatError(
                f"Partitions tables occupies {end / 1024 / 1024:.1f}MB of flash ({end} bytes) which does not "
                f"fit in configured flash size {flash_size // 0x100000}MB. Change the flash size in menuconfig "
                "under the 'Serial Flasher Config' menu."
            )


@dataclass
class _CsvRow:
    """A parsed CSV line before offsets are placed: offset may be None and size negative."""

    line_no: int
    name: str
    type: int
    subtype: int
    offset: int | None
    size: int
    encrypted: bool
    readonly: bool

    @classmethod
    def parse(cls, line: str, line_no: int) -> _CsvRow:
        fields = [f.strip() for f in (line + ",,,,").split(",")]
        name = fields[0]
        if fields[1] == "":
            raise FormatError("Field 'type' can't be left empty.")
        ptype = parse_int(fields[1], TYPE_KEYWORDS)
        if fields[2] == "":
            if ptype == APP:
                raise FormatError("App partition cannot have an empty subtype")
            subtype = SUBTYPE_KEYWORDS[DATA]["undefined"]
        else:
            subtype = parse_int(fields[2], SUBTYPE_KEYWORDS.get(ptype, {}))
        offset = None if fields[3] == "" else parse_int(fields[3])
        if fields[4] == "":
            raise FormatError("Size field can't be empty")
        size = parse_int(fields[4])
        flags = {f for f in fields[5].split(":") if f}
        for flag in sorted(flags - FLAG_BITS.keys()):
            raise FormatError(f"CSV flag column contains unknown flag '{flag}'")
        for label, value, limit in (("type", ptype, 0xFE), ("subtype", subtype, 0xFF)):
            if not 0 <= value <= limit:
                raise FormatError(f"{label} {value} is out of range (0-{limit})")
        if offset is not None and not 0 <= offset <= MAX_OFFSET:
            raise FormatError(f"Offset {fields[3]} is out of range")
        if not -MAX_OFFSET <= size <= MAX_OFFSET:
            raise FormatError(f"Size {fields[4]} is out of range")
        return cls(line_no, name, ptype, subtype, offset, size, "encrypted" in flags, "readonly" in flags)


def _place(rows: list[_CsvRow], table_offset: int) -> Iterator[Partition]:
    """Fill empty offsets (aligned per type) and turn negative sizes into "ends at" sizes."""
    last_end = table_offset + TABLE_SECTOR_SIZE
    for index, row in enumerate(rows):
        offset = row.offset
        if offset is not None and offset < last_end:
            if index == 0:
                raise FormatError(
                    f"CSV Error at line {row.line_no}: Partitions overlap. Partition sets offset 0x{offset:x}. "
                    f"But partition table occupies the whole sector 0x{table_offset:x}. "
                    f"Use a free offset 0x{last_end:x} or higher."
                )
            raise FormatError(
                f"CSV Error at line {row.line_no}: Partitions overlap. Partition sets offset 0x{offset:x}. "
                f"Previous partition ends 0x{last_end:x}"
            )
        if offset is None:
            align = APP_ALIGNMENT if row.type == APP else DATA_ALIGNMENT
            offset = -(-last_end // align) * align
        size = -row.size - offset if row.size < 0 else row.size
        if size < 0 or offset + size > MAX_OFFSET + 1:
            raise FormatError(f"Error at line {row.line_no}: partition {row.name} has an invalid size")
        last_end = offset + size
        yield Partition(row.name, row.type, row.subtype, offset, size, row.encrypted, row.readonly)


def _keyword(value: int, keywords: Mapping[str, int]) -> str:
    return next((k for k, v in keywords.items() if v == value), str(value))


def _verify_partition(p: Partition) -> None:
    def invalid(message: str) -> FormatError:
        return FormatError(f"Partition {p.name} invalid: {message}")

    align = APP_ALIGNMENT if p.type == APP else DATA_ALIGNMENT
    if p.offset % align:
        raise invalid(f"Offset 0x{p.offset:x} is not aligned to 0x{align:x}")
    if p.type == APP and p.size % APP_SIZE_ALIGNMENT:
        raise invalid(f"Size 0x{p.size:x} is not aligned to 0x{APP_SIZE_ALIGNMENT:x}")
    if p.size == 0:
        raise invalid("Size is zero")
    if p.readonly and p.type == DATA and p.subtype in (DATA_OTA, DATA_COREDUMP):
        keyword = next(k for k, v in SUBTYPE_KEYWORDS[DATA].items() if v == p.subtype)
        raise invalid(f"'{keyword}' partition is always read-write and cannot be read-only")

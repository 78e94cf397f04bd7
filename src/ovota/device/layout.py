"""The partitions of a module's flash: the table at 0x8000 and OVMS's layout detection (v3-30/v3-34/v3-35)."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from ovota.device.flash import SECTOR_SIZE, Flash
from ovota.formats import FormatError
from ovota.formats.partition_table import (
    APP,
    DATA,
    ENTRY,
    ENTRY_MAGIC,
    MAX_TABLE_LENGTH,
    MD5_MAGIC,
    Partition,
    PartitionTable,
)

TABLE_SEARCH = (0x8000, 0x9000)  # ovms_partition_table_find probes these sectors
FAT = 0x81


class LayoutType(enum.Enum):
    UNKNOWN = "unknown"
    V3_30 = "v3-30 (factory, ota1, ota2, 1MB store)"
    V3_34 = "v3-34 (factory, ota1, ota2, dual store)"
    V3_35 = "v3-35 (ota1, ota2, no factory, maximized store)"


@dataclass(frozen=True)
class Layout:
    """A module's partition table as the firmware sees it."""

    table_offset: int
    table: PartitionTable
    stored_md5: bytes | None

    @property
    def md5_ok(self) -> bool:
        return self.stored_md5 == hashlib.md5(b"".join(p.to_binary() for p in self.table)).digest()

    def get(self, label: str) -> Partition | None:
        return self.table.find(label)

    @property
    def ota_slots(self) -> list[Partition]:
        return self.table.ota_slots

    @property
    def factory(self) -> Partition | None:
        return self.table.factory

    @property
    def otadata(self) -> Partition | None:
        return self.table.otadata

    @property
    def store(self) -> Partition | None:
        return self.table.find("store")

    @property
    def type(self) -> LayoutType:
        """ovms_partition_table_get_type."""
        parts = self.table.partitions
        factory = self.factory is not None
        ota0 = any(p.type == APP and p.subtype == 0x10 for p in parts)
        ota1 = any(p.type == APP and p.subtype == 0x11 for p in parts)
        minstore = any(
            p.type == DATA and p.subtype == FAT and (p.offset, p.size) == (0xC10000, 0x100000) for p in parts
        )
        maxstore = any(
            p.type == DATA and p.subtype == FAT and (p.offset, p.size) == (0xE10000, 0x1F0000) for p in parts
        )
        if factory and ota0 and ota1 and not maxstore:
            return LayoutType.V3_30
        if factory and ota0 and ota1 and minstore and maxstore:
            return LayoutType.V3_34
        if ota0 and ota1 and not factory and maxstore:
            return LayoutType.V3_35
        return LayoutType.UNKNOWN


def find_table(flash: Flash) -> int | None:
    """The offset of the partition table sector, as ovms_partition_table_find looks for it."""
    for offset in TABLE_SEARCH:
        if flash.read(offset, 2) == ENTRY_MAGIC:
            return offset
    return None


def read_layout(flash: Flash) -> Layout:
    """Parse the table like the ESP-IDF app does: entries while the magic is AA 50; an MD5 record is required."""
    offset = find_table(flash)
    if offset is None:
        raise FormatError("no partition table found at 0x8000 or 0x9000")
    raw = flash.read(offset, SECTOR_SIZE)[:MAX_TABLE_LENGTH]
    partitions = []
    stored_md5 = None
    for pos in range(0, len(raw), ENTRY.size):
        record = raw[pos : pos + ENTRY.size]
        if record[:2] == ENTRY_MAGIC:
            partitions.append(Partition.from_binary(record))
            continue
        if record[:2] == MD5_MAGIC:
            stored_md5 = record[16:]
        break
    layout = Layout(offset, PartitionTable(tuple(partitions)), stored_md5)
    if stored_md5 is None:
        raise FormatError("No MD5 found in partition table")
    if not layout.md5_ok:
        raise FormatError("Partition table MD5 mismatch")
    for p in partitions:
        if p.end > flash.size:
            raise FormatError(f"partition {p.name} ends at 0x{p.end:x}, beyond the {flash.size}-byte flash")
    return layout

"""ESP-IDF otadata: the two OTA select entries, the bootloader's slot choice, and what "boot slot N" writes.

The partition is two 4 KiB sectors; each holds one 32-byte ``esp_ota_select_entry_t`` at its start and
0xFF after it. Writers erase a sector and program 32 bytes, alternating sectors, so a torn write leaves a
bad CRC in one sector and the other one still decides.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass, replace

from ovota.formats.errors import FormatError

SECTOR_SIZE = 0x1000
OTADATA_SIZE = 2 * SECTOR_SIZE
BLANK_SEQ = 0xFFFFFFFF

# esp_ota_select_entry_t: ota_seq u32, seq_label[20], ota_state u32, crc u32 (crc covers ota_seq only)
ENTRY = struct.Struct("<I20sII")


class OtaState(enum.IntEnum):
    NEW = 0x0
    PENDING_VERIFY = 0x1
    VALID = 0x2
    INVALID = 0x3
    ABORTED = 0x4
    UNDEFINED = 0xFFFFFFFF


def seq_crc(seq: int) -> int:
    """The ROM's crc32_le(UINT32_MAX, &seq, 4), which equals zlib's crc32 started at 0xFFFFFFFF."""
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


@dataclass(frozen=True)
class SelectEntry:
    """One sector's entry. ``state`` stays an int: unknown values occur on real flash."""

    seq: int = BLANK_SEQ
    label: bytes = b"\xff" * 20
    state: int = OtaState.UNDEFINED
    crc: int = 0xFFFFFFFF

    @classmethod
    def for_seq(cls, seq: int, state: int = OtaState.UNDEFINED, label: bytes = b"\xff" * 20) -> SelectEntry:
        return cls(seq, label, state, seq_crc(seq))

    @classmethod
    def from_bytes(cls, data: bytes) -> SelectEntry:
        if len(data) < ENTRY.size:
            raise FormatError(f"otadata entry needs {ENTRY.size} bytes, got {len(data)}")
        seq, label, state, crc = ENTRY.unpack_from(data)
        return cls(seq, label, state, crc)

    def to_bytes(self) -> bytes:
        return ENTRY.pack(self.seq, self.label, self.state, self.crc)

    @property
    def is_blank(self) -> bool:
        return self.seq == BLANK_SEQ

    @property
    def is_invalid(self) -> bool:
        """bootloader_common_ota_select_invalid: no CRC check here, by design of ESP-IDF."""
        return self.seq == BLANK_SEQ or self.state in (OtaState.INVALID, OtaState.ABORTED)

    @property
    def is_valid(self) -> bool:
        return not self.is_invalid and self.crc == seq_crc(self.seq)


@dataclass(frozen=True)
class OtaData:
    """Both sectors' entries."""

    entries: tuple[SelectEntry, SelectEntry] = (SelectEntry(), SelectEntry())

    @classmethod
    def from_bytes(cls, data: bytes) -> OtaData:
        """Parse a whole otadata partition (at least two sectors; only the entries matter)."""
        if len(data) < OTADATA_SIZE:
            raise FormatError(f"otadata must be at least 0x{OTADATA_SIZE:x} bytes, got 0x{len(data):x}")
        return cls((SelectEntry.from_bytes(data[: ENTRY.size]), SelectEntry.from_bytes(data[SECTOR_SIZE:])))

    def to_bytes(self) -> bytes:
        """The 0x2000-byte partition as ESP-IDF leaves it: each entry then 0xFF to the sector end."""
        pad = b"\xff" * (SECTOR_SIZE - ENTRY.size)
        return b"".join(e.to_bytes() + pad for e in self.entries)

    def active_index(self) -> int | None:
        """bootloader_common_get_active_otadata: the valid entry with the higher seq (tie: sector 0)."""
        valid = [e.is_valid for e in self.entries]
        if all(valid):
            return 0 if self.entries[0].seq >= self.entries[1].seq else 1
        if valid[0]:
            return 0
        if valid[1]:
            return 1
        return None

    def with_entry(self, index: int, entry: SelectEntry) -> OtaData:
        entries = list(self.entries)
        entries[index] = entry
        return OtaData((entries[0], entries[1]))


FACTORY = "factory"


@dataclass(frozen=True)
class BootChoice:
    """The bootloader's first choice: ``slot`` is an OTA index, or None for factory."""

    slot: int | None
    initial: bool = False  # both entries blank/corrupt: the bootloader records seq=slot+1 once it boots

    @property
    def label(self) -> str:
        return FACTORY if self.slot is None else f"ota_{self.slot}"


def choose_boot(otadata: OtaData, ota_slots: int, has_factory: bool) -> BootChoice:
    """bootloader_utility_get_selected_boot_partition for a rollback-less bootloader (OVMS's build)."""
    first, second = otadata.entries
    if (first.is_invalid and second.is_invalid) or ota_slots == 0:
        if has_factory:
            return BootChoice(None)
        initial = all(e.is_blank or e.crc != seq_crc(e.seq) for e in otadata.entries)
        return BootChoice(0, initial=initial)
    active = otadata.active_index()
    if active is None:
        # Both CRCs bad: factory if any; the loader then tries every OTA slot from 0 upwards.
        return BootChoice(None) if has_factory else BootChoice(0)
    return BootChoice((otadata.entries[active].seq - 1) % ota_slots)


def boot_slot_entry(
    otadata: OtaData, slot: int, ota_slots: int, state: int = OtaState.UNDEFINED
) -> tuple[int, SelectEntry]:
    """What esp_ota_set_boot_partition(ota_<slot>) writes (IDF v3.3 rules): (sector index, entry).

    From a blank or corrupt otadata it writes sector 0 with seq = slot + 1; otherwise the smallest
    seq >= the active one that selects ``slot``, into the other sector.
    """
    if not 0 <= slot < ota_slots:
        raise FormatError(f"ota_{slot} is not one of the {ota_slots} OTA slots")
    active = otadata.active_index()
    if active is None:
        return 0, replace(otadata.entries[0], seq=slot + 1, state=state, crc=seq_crc(slot + 1))
    active_seq = otadata.entries[active].seq
    base = (slot + 1) % ota_slots
    new_seq = base + max(0, -(-(active_seq - base) // ota_slots)) * ota_slots
    if new_seq > 0xFFFFFFFE:
        raise FormatError("otadata sequence number would overflow")
    target = active ^ 1
    return target, replace(otadata.entries[target], seq=new_seq, state=state, crc=seq_crc(new_seq))


def set_boot_slot(otadata: OtaData, slot: int, ota_slots: int, state: int = OtaState.UNDEFINED) -> OtaData:
    """The otadata after esp_ota_set_boot_partition(ota_<slot>)."""
    index, entry = boot_slot_entry(otadata, slot, ota_slots, state)
    return otadata.with_entry(index, entry)

"""Reading and verifying the app image stored in a partition."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from ovota.device.flash import Flash
from ovota.formats import FormatError
from ovota.formats.app_image import (
    HEADER,
    IMAGE_MAGIC,
    MAX_SEGMENTS,
    SEGMENT_HEADER,
    AppDescriptor,
    AppImage,
    find_ovms_version,
)
from ovota.formats.partition_table import Partition

MAX_APP_PARTITION = 16 * 1024 * 1024


# Partitions verified good, per flash, with the flash's operation count at that time: every change to
# the chip is an operation, so an unchanged count means unchanged bytes (esp_ota_end then
# esp_ota_set_boot_partition verify the same image twice; the second check costs nothing).
_verified: WeakKeyDictionary[Flash, dict[tuple[int, int], int]] = WeakKeyDictionary()


def verify_partition_image(flash: Flash, part: Partition) -> str | None:
    """None if the partition holds a valid app image (esp_image_verify), else the reason it does not."""
    if part.size > MAX_APP_PARTITION:
        return f"partition size 0x{part.size:x} invalid, larger than 16MB"
    known = _verified.setdefault(flash, {})
    if known.get((part.offset, part.size)) == flash.ops:
        return None
    try:
        image = AppImage.parse(flash.read(part.offset, part.size))
    except FormatError as err:
        return str(err)
    problem = image.verify(partition_offset=part.offset, partition_size=part.size).first_failure()
    if problem is None:
        known[(part.offset, part.size)] = flash.ops
    return problem


def first_segment(flash: Flash, part: Partition) -> bytes:
    """The data of the image's first (DROM) segment, without reading the rest; b"" if there is no image."""
    header = flash.read(part.offset, HEADER.size + SEGMENT_HEADER.size)
    if header[0] != IMAGE_MAGIC or not 0 < header[1] <= MAX_SEGMENTS:
        return b""
    _, length = SEGMENT_HEADER.unpack_from(header, HEADER.size)
    return flash.read(part.offset + len(header), min(length, part.size - len(header)))


def partition_version(flash: Flash, part: Partition | None) -> str:
    """GetOVMSPartitionVersion: the OVMS version marker in segment 0, "" if absent. Does not verify."""
    return "" if part is None else find_ovms_version(first_segment(flash, part)) or ""


def partition_descriptor(flash: Flash, part: Partition) -> AppDescriptor | None:
    """The app descriptor at the start of segment 0 (esp_ota_get_partition_description). Does not verify."""
    return AppDescriptor.from_bytes(first_segment(flash, part))

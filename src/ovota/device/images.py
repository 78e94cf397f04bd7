"""Reading and verifying the app image stored in a partition."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from ovota.device.flash import Flash
from ovota.formats import FormatError
from ovota.formats.app_image import HEADER, SEGMENT_HEADER, AppImage, find_ovms_version
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


def partition_version(flash: Flash, part: Partition | None) -> str:
    """GetOVMSPartitionVersion: the OVMS version marker in segment 0, "" if absent. Does not verify."""
    if part is None:
        return ""
    header = flash.read(part.offset, HEADER.size + SEGMENT_HEADER.size)
    if header[0] != 0xE9 or header[1] > 16 or header[1] == 0:
        return ""
    _, length = SEGMENT_HEADER.unpack_from(header, HEADER.size)
    length = min(length, part.size - len(header))
    return find_ovms_version(flash.read(part.offset + len(header), length)) or ""

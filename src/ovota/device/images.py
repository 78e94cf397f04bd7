"""Reading and verifying the app image stored in a partition."""

from __future__ import annotations

import io
from typing import Any
from weakref import WeakKeyDictionary

from ovota.device.flash import Flash
from ovota.device.security import NO_SECURITY, Security
from ovota.formats import FormatError
from ovota.formats.app_image import (
    APP_DESC,
    HEADER,
    IMAGE_MAGIC,
    MAX_SEGMENTS,
    SEGMENT_HEADER,
    AppDescriptor,
    AppImage,
)
from ovota.formats.partition_table import Partition
from ovota.formats.signature import read_signatures
from ovota.formats.version_marker import read_version
from ovota.formats.versions import escape_bytes

MAX_APP_PARTITION = 16 * 1024 * 1024


# Partitions verified good, per flash, with the flash's operation count at that time: every change to
# the chip is an operation, so an unchanged count means unchanged bytes (esp_ota_end then
# esp_ota_set_boot_partition verify the same image twice; the second check costs nothing).
_verified: WeakKeyDictionary[Flash, dict[tuple[int, int, bytes | None], int]] = WeakKeyDictionary()
# Marker versions read, per flash: (offset, size) -> (operation count, version). Real builds hold the marker
# hundreds of KiB into segment 0, and `ota status` reads three partitions.
_versions: WeakKeyDictionary[Flash, dict[tuple[int, int], tuple[int, bytes | None]]] = WeakKeyDictionary()


def verify_partition_image(flash: Flash, part: Partition, security: Security = NO_SECURITY) -> str | None:
    """None if the partition holds a valid app image (esp_image_verify), else the reason it does not.
    With secure boot on, the image must also carry a valid signature by the eFuse key."""
    if part.size > MAX_APP_PARTITION:
        return f"partition size 0x{part.size:x} invalid, larger than 16MB"
    known = _verified.setdefault(flash, {})
    key = (part.offset, part.size, security.key_digest)
    if known.get(key) == flash.ops:
        return None
    data = flash.read(part.offset, part.size)
    try:
        image = AppImage.parse(data)
    except FormatError as err:
        return str(err)
    problem = image.verify(partition_offset=part.offset, partition_size=part.size).first_failure()
    problem = problem or security.signature_problem(data, image.length)
    if problem is None:
        known[key] = flash.ops
    return problem


def rollback_problem(flash: Flash, part: Partition, security: Security) -> str | None:
    """None unless anti-rollback refuses the partition's image for its secure version."""
    if security.counter is None:
        return None
    descriptor = partition_descriptor(flash, part)
    return security.version_problem(descriptor.secure_version if descriptor else 0)


def _first_segment_start(flash: Flash, part: Partition, limit: int) -> bytes:
    """Up to ``limit`` bytes of the image's first (DROM) segment; b"" if there is no image."""
    header = flash.read(part.offset, HEADER.size + SEGMENT_HEADER.size)
    if header[0] != IMAGE_MAGIC or not 0 < header[1] <= MAX_SEGMENTS:
        return b""
    _, length = SEGMENT_HEADER.unpack_from(header, HEADER.size)
    return flash.read(part.offset + len(header), min(length, limit, part.size - len(header)))


def partition_version_bytes(flash: Flash, part: Partition) -> bytes | None:
    """GetOVMSPartitionVersion's raw result for the partition (None for ""). Does not verify the image."""
    known = _versions.setdefault(flash, {})
    cached = known.get((part.offset, part.size))
    if cached is not None and cached[0] == flash.ops:
        return cached[1]

    def read(offset: int, length: int) -> bytes | None:  # esp_partition_read: fails past the partition's end
        return flash.read(part.offset + offset, length) if offset + length <= part.size else None

    version = read_version(read)
    known[(part.offset, part.size)] = (flash.ops, version)
    return version


def partition_version(flash: Flash, part: Partition | None) -> str:
    """GetOVMSPartitionVersion as text, "" if absent; bytes other than printable ASCII are shown escaped."""
    raw = None if part is None else partition_version_bytes(flash, part)
    return "" if raw is None else escape_bytes(raw)


def partition_descriptor(flash: Flash, part: Partition) -> AppDescriptor | None:
    """The app descriptor at the start of segment 0 (esp_ota_get_partition_description). Does not verify."""
    return AppDescriptor.from_bytes(_first_segment_start(flash, part, APP_DESC.size))


def stored_image(flash: Flash, part: Partition) -> bytes | None:
    """The partition's app image, cut to its own length (header, segments, checksum, hash), if it is valid."""
    if verify_partition_image(flash, part) is not None:
        return None
    data = flash.read(part.offset, part.size)
    return data[: AppImage.parse(data).length]


def stored_file(flash: Flash, part: Partition) -> bytes | None:
    """The partition's image as the file it was flashed from: the image and, for a signed one, its signature
    sector (what ``espsecure sign-data`` wrote), if the image is valid."""
    image = stored_image(flash, part)
    if image is None:
        return None
    data = flash.read(part.offset, part.size)
    signatures = read_signatures(data, len(image))
    return image if signatures is None else data[: signatures.end]


class PartitionFile(io.RawIOBase):
    """A partition's bytes as a read-only, seekable file (what detools reads a delta's base from)."""

    def __init__(self, flash: Flash, part: Partition) -> None:
        self._flash = flash
        self._part = part
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._part.size}[whence]
        self._pos = max(0, min(self._part.size, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._part.size - self._pos)
        view[:count] = self._flash.read(self._part.offset + self._pos, count)
        self._pos += count
        return count

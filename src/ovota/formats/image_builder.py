"""Synthetic ESP32 app images: valid for esptool, ESP-IDF's verifier and OVMS, built from segments."""

from __future__ import annotations

import hashlib
from datetime import datetime

from ovota.formats.app_image import (
    CHIP_ESP32,
    HASH_LENGTH,
    HEADER,
    SEGMENT_HEADER,
    AppDescriptor,
    ImageHeader,
    xor_checksum,
)
from ovota.formats.errors import FormatError
from ovota.formats.version_marker import marker
from ovota.formats.versions import check_version


def assemble_image(segments: list[tuple[int, bytes]], chip_id: int = CHIP_ESP32) -> bytes:
    """Header, ``(load address, data)`` segments, padding, checksum and appended SHA-256, as esptool lays
    them out. Segment data lengths should be multiples of 4 for the image to verify."""
    header = ImageHeader(segment_count=len(segments), chip_id=chip_id)
    parts = [header.to_bytes()]
    for load_addr, data in segments:
        parts += [SEGMENT_HEADER.pack(load_addr, len(data)), data]
    image = b"".join(parts)
    image += b"\0" * (15 - len(image) % 16) + bytes([xor_checksum(*(d for _, d in segments))])
    return image + hashlib.sha256(image).digest()


def build_app_image(
    version: str,
    *,
    size: int | None = None,
    project: str = "ovms3",
    idf_ver: str = "v3.3.4-ovota",
    built: datetime,
    chip_id: int = CHIP_ESP32,
    secure_version: int = 0,
) -> bytes:
    """A synthetic but fully valid ESP32 app image that OVMS and esptool read as ``version``.

    Segments: DROM (app descriptor, then the OVMS marker laid out as in a real build: the lone prefix
    literal before the full marker), a small DRAM and IRAM segment, and, when ``size`` asks for more
    bytes, a padding segment of deterministic filler. ``size`` is the total file length including the
    SHA-256 and must be a multiple of 16. ``secure_version`` goes into the app descriptor (anti-rollback).
    """
    check_version(version)
    descriptor = AppDescriptor(
        version=version,
        project_name=project,
        time=built.strftime("%H:%M:%S"),
        date=f"{built:%b} {built.day:2d} {built.year}",
        idf_ver=idf_ver,
        app_elf_sha256=hashlib.sha256(f"{project}/{version}".encode()).digest(),
        secure_version=secure_version,
    )
    drom = descriptor.to_bytes() + marker(version.encode())
    drom += b"\0" * (-len(drom) % 4)
    seed = hashlib.sha256(version.encode()).digest()
    segments = [
        (0x3F400020, drom),  # DROM: data at file offset 0x20 maps to 0x3F400020 (64 KiB congruence)
        (0x3FFB0000, seed[:16]),  # DRAM
        (0x40080000, seed * 2),  # IRAM, holds the entry point
    ]
    body_length = HEADER.size + sum(SEGMENT_HEADER.size + len(d) for _, d in segments)
    natural = _image_length(body_length)
    if size is not None and size != natural:
        if size % 16:
            raise FormatError(f"image size {size} is not a multiple of 16")
        filler = size - HASH_LENGTH - 16 - body_length - SEGMENT_HEADER.size
        if filler < 0:
            smallest_padded = body_length + SEGMENT_HEADER.size + 16 + HASH_LENGTH
            raise FormatError(f"image size {size} cannot be built: use {natural} or at least {smallest_padded}")
        segments.append((0x00000000, hashlib.shake_256(seed).digest(filler)))  # padding: never loaded
    return assemble_image(segments, chip_id)


def _image_length(body_length: int) -> int:
    return body_length + 16 - body_length % 16 + HASH_LENGTH

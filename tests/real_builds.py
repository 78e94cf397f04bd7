"""App images shaped like real OVMS builds, for tests that must not rely on ``ovota image build``'s layout.

A real build (ESP-IDF v3.3, elf2image) has a large DROM segment starting with the app descriptor; its
rodata holds the lone ``OVMS_VERSION_PREFIX`` literal (NUL-terminated, from GetOVMSPartitionVersion)
some way before the full ``PREFIX version POSTFIX`` marker, then more rodata. DRAM and IRAM follow.
"""

from __future__ import annotations

import hashlib

from ovota.formats.app_image import AppDescriptor
from ovota.formats.image_builder import assemble_image
from ovota.formats.version_marker import POSTFIX, PREFIX

IDF = "v3.3.4-854-g9063c8662c"


def _rodata(seed: bytes, length: int) -> bytes:
    """Text-like filler: NUL-separated printable words, as compiled string tables look."""
    raw = hashlib.shake_256(seed).digest(length)
    return bytes(0 if b % 11 == 0 else 0x21 + b % 90 for b in raw)


def real_shaped_build(
    version: bytes, rodata: int = 200_000, descriptor_version: str | None = None, seed: bytes | None = None
) -> bytes:
    """A valid image whose marker sits ``rodata`` bytes into segment 0, after a lone prefix literal.

    ``seed`` fixes the filler: two builds with the same seed and different versions differ only where a
    new release would (descriptor, marker), which is what delta patches live on."""
    text = version.decode("latin-1")
    descriptor = AppDescriptor(
        version=descriptor_version if descriptor_version is not None else text[:31],
        project_name="ovms3",
        time="20:13:48",
        date="May 13 2026",
        idf_ver=IDF,
        app_elf_sha256=hashlib.sha256(version).digest(),
    )
    filler = seed if seed is not None else version
    drom = descriptor.to_bytes() + _rodata(filler, rodata // 2) + b"\0"
    drom += b"\0" * (-len(drom) % 4) + PREFIX + b"\0\0\0\0"
    drom += _rodata(filler + b"/2", rodata // 2) + b"\0" + PREFIX + version + POSTFIX + b"\0"
    drom += _rodata(filler + b"/3", 4096)
    drom += b"\0" * (-len(drom) % 4)
    code = hashlib.sha256(filler).digest()
    return assemble_image([(0x3F400020, drom), (0x3FFB0000, code * 64), (0x40080000, code * 512)])

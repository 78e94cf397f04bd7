"""Delta patches in Espressif's ``esp_delta_ota`` format, so real ESP32 firmware using that component can apply them.

Layout: a 64-byte header, then a detools *sequential* patch with *heatshrink* compression (detools' defaults):

- magic ``0xfccdde10`` as a little-endian u32 (the first bytes of SHA-256("esp_delta_ota"));
- the base image's validation hash: the SHA-256 appended to the image, which ``esptool image-info`` prints
  and ``esp_partition_get_sha256`` returns for the running app;
- 28 zero bytes.

Creating a patch here gives exactly what Espressif's generator writes for the same inputs and detools version.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import detools

from ovota.formats.app_image import AppImage
from ovota.formats.errors import FormatError

MAGIC = 0xFCCDDE10
HEADER = struct.Struct("<I32s28s")  # magic, base image's validation hash, reserved (zero)
HEADER_SIZE = HEADER.size
COMPRESSION = "heatshrink"


class Seekable(Protocol):
    """What detools reads a base and a patch from: a seekable binary file."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


@dataclass(frozen=True)
class PatchHeader:
    base_hash: bytes  # the validation hash the base image must have

    @classmethod
    def from_bytes(cls, data: bytes) -> PatchHeader:
        if len(data) < HEADER_SIZE:
            raise FormatError(f"delta patch is truncated: {len(data)} bytes, the header alone needs {HEADER_SIZE}")
        magic, base_hash, _ = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise FormatError(f"not an esp_delta_ota patch: magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
        return cls(base_hash)

    def to_bytes(self) -> bytes:
        return HEADER.pack(MAGIC, self.base_hash, b"\0" * 28)


def validation_hash(image: bytes | bytearray | memoryview) -> bytes:
    """The SHA-256 appended to an app image (what esptool calls its validation hash); FormatError without one."""
    parsed = AppImage.parse(image)
    stored = parsed.stored_hash
    if stored is None:
        raise FormatError("the image has no appended SHA-256, so a delta patch cannot name it as its base")
    return stored


def create_patch(base: bytes, new: bytes) -> bytes:
    """The esp_delta_ota patch turning the app image ``base`` into ``new``."""
    AppImage.parse(new)  # refuse what is not an image before spending time on a diff
    header = PatchHeader(validation_hash(base)).to_bytes()
    body = io.BytesIO()
    detools.create_patch(io.BytesIO(base), io.BytesIO(new), body, compression=COMPRESSION)
    return header + body.getvalue()


def patch_info(patch: bytes) -> tuple[PatchHeader, dict[str, object]]:
    """The header and detools' description of the patch body (type, compression, sizes)."""
    header = PatchHeader.from_bytes(patch)
    try:
        patch_type, info = detools.patch_info(io.BytesIO(patch[HEADER_SIZE:]))
    except (detools.Error, ValueError, IndexError) as err:
        raise FormatError(f"delta patch body is not a detools patch: {err}") from None
    if patch_type != "sequential":
        return header, {"patch_type": patch_type}
    return header, {"patch_type": patch_type, "compression": info[1], "patch_size": info[0], "to_size": info[6]}


def apply_patch(base: Seekable, patch: Seekable, write: Callable[[bytes], object], base_hash: bytes) -> int:
    """Apply a patch streaming: read the base (seekable), write the result through ``write``.

    ``base_hash`` is the validation hash of the base as the caller knows it; a patch made for another base
    is refused before anything is written. Returns the length written. Raises FormatError for a corrupt patch.
    """
    header = PatchHeader.from_bytes(patch.read(HEADER_SIZE))
    if header.base_hash != base_hash:
        raise FormatError(
            f"delta patch is for base {header.base_hash.hex()[:16]}…, this image is {base_hash.hex()[:16]}…"
        )
    writer = _Writer(write)
    try:
        detools.apply_patch(base, patch, writer)
    except detools.Error as err:
        raise FormatError(f"delta patch cannot be applied: {err}") from None
    return writer.written


def apply_patch_bytes(base: bytes, patch: bytes) -> bytes:
    """The image that applying ``patch`` to ``base`` gives (for the CLI); FormatError for a mismatch."""
    out = io.BytesIO()
    apply_patch(io.BytesIO(base), io.BytesIO(patch), out.write, validation_hash(base))
    return out.getvalue()


class _Writer(io.RawIOBase):
    """A write-only file for detools that hands each chunk on and counts."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self._write(chunk)
        self.written += len(chunk)
        return len(chunk)

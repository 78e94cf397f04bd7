"""The OVMS version marker: how OVMS finds the firmware version inside an app image.

Every OVMS build embeds ``PREFIX + OVMS_VERSION + POSTFIX`` in its first (DROM) segment. OVMS's
``GetOVMSPartitionVersion`` reads it back with a fixed algorithm, ported here step for step, because
real builds only give the right answer under its exact semantics:

- The first segment's data is read through a 513-byte buffer: 512 bytes, then a NUL. After each window
  the second half (256 bytes) moves to the front and the next 256 bytes are read behind it, so a marker
  is never split by a window edge.
- In each window, every position below ``SCAN_POSITIONS`` where the prefix starts is tried with
  ``strstr(position, POSTFIX)``. ``strstr`` stops at the first NUL: real builds also hold the prefix
  literal on its own, NUL-terminated, a little before the full marker, and that lone prefix is skipped.
- The version is the C string that starts right after the prefix, ended by the NUL written over the
  postfix's first byte.
- A failed read (past the end of the partition or file) gives no version, as does a bad image header.
"""

from __future__ import annotations

from collections.abc import Callable

from ovota.formats.app_image import HEADER, IMAGE_MAGIC, MAX_SEGMENTS, SEGMENT_HEADER

PREFIX = b"########OVMS_PRE########"
POSTFIX = b"########OVMSPOST########"

BUFFER_SIZE = 512 + 1  # char buf[512 + 1]
WINDOW = BUFFER_SIZE - 1
HALF = WINDOW // 2
# n = sizeof(buf) - (sizeof(prefix) + sizeof(postfix) - 2): sizeof counts each literal's NUL.
SCAN_POSITIONS = BUFFER_SIZE - ((len(PREFIX) + 1) + (len(POSTFIX) + 1) - 2)

# read(offset, length) within the partition or file: the bytes, or None when the read fails.
Reader = Callable[[int, int], bytes | None]


def bytes_reader(data: bytes | bytearray | memoryview) -> Reader:
    """A Reader over an image held in memory; reads past its end fail, as past a partition's end."""
    view = memoryview(data).cast("B")

    def read(offset: int, length: int) -> bytes | None:
        return bytes(view[offset : offset + length]) if offset + length <= len(view) else None

    return read


def read_version(read: Reader) -> bytes | None:
    """The version bytes GetOVMSPartitionVersion returns for the image behind ``read``; None for "".

    The result holds no NUL but may hold any other byte: callers decide how to show or refuse it
    (see ``ovota.formats.versions``).
    """
    header = read(0, HEADER.size)
    if header is None or header[0] != IMAGE_MAGIC or header[1] > MAX_SEGMENTS:
        return None
    segment = read(HEADER.size, SEGMENT_HEADER.size)
    if segment is None:
        return None
    # Both headers were read into the very buffer the search then uses: bytes a short first window
    # leaves untouched are theirs (the rest of the C stack buffer is modelled as zeros).
    buf = bytearray(BUFFER_SIZE)
    buf[: len(header)] = header
    buf[: len(segment)] = segment
    _, data_len = SEGMENT_HEADER.unpack(segment)
    remaining = data_len - (1 << 32) if data_len >= 1 << 31 else data_len  # int len = header->data_len
    offset = HEADER.size + SEGMENT_HEADER.size
    fill, size = 0, WINDOW
    while remaining > 0:
        n = min(size, remaining)
        chunk = read(offset, n)
        if chunk is None:
            return None
        offset += n
        buf[fill : fill + n] = chunk
        buf[fill + n] = 0
        remaining -= n
        found = _search_window(buf)
        if found is not None:
            return found
        buf[:HALF] = buf[HALF : 2 * HALF]
        fill, size = HALF, HALF
    return None


def _search_window(buf: bytearray) -> bytes | None:
    # Prefix starts at positions 0 .. SCAN_POSITIONS-1; bytes.find needs the whole prefix inside its range.
    scan_end = SCAN_POSITIONS - 1 + len(PREFIX)
    start = buf.find(PREFIX, 0, scan_end)
    while start >= 0:
        string_end = buf.index(0, start)  # buf[512] is always NUL, so the C string ends in the buffer
        post = buf.find(POSTFIX, start, string_end)  # strstr(cp, postfix)
        if post >= 0:
            buf[post] = 0
            version = start + len(PREFIX)
            return bytes(buf[version : buf.index(0, version)])
        start = buf.find(PREFIX, start + 1, scan_end)
    return None


def image_version(data: bytes | bytearray | memoryview) -> bytes | None:
    """The OVMS version in an app image held in memory (see :func:`read_version`)."""
    return read_version(bytes_reader(data))


def marker(version: bytes) -> bytes:
    """What an OVMS build holds in its first segment: the lone prefix literal, then the full marker."""
    return PREFIX + b"\0" + b"\0" * (-(len(PREFIX) + 1) % 4) + PREFIX + version + POSTFIX + b"\0"

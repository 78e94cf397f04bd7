"""File names as ChaN's FatFs (LFN build, as ESP-IDF configures it for OVMS) takes them. Pure code."""

from __future__ import annotations

import string

_SFN_CHARS = set(string.ascii_letters + string.digits + "!#$%&'()-@^_`{}~")


def fatfs_case_bits(name: str) -> int | None:
    """FatFs's create_name for a name that fits 8.3 in one case per part (``ota``, ``server.v2``, ``OTA``): the
    NT case bits it stores instead of a long name (0x08 base, 0x10 extension in lower case); None when FatFs
    writes a long name (``ovms_config``, ``Ota``, ``a.b.c``, too long, other characters)."""
    base, dot, ext = name.partition(".")
    if not 1 <= len(base) <= 8 or len(ext) > 3 or (dot and not ext) or "." in ext or not set(name) - {"."}:
        return None
    if not set(base + ext) <= _SFN_CHARS:
        return None
    bits = 0
    for part, bit in ((base, 0x08), (ext, 0x10)):
        if part != part.upper() and part != part.lower():
            return None  # mixed case
        if part != part.upper():
            bits |= bit
    return bits


# FatFs's create_name refuses these in a name (FR_INVALID_NAME), and any control character.
_REFUSED = set('"*:<>?|\x7f')


MAX_NAME_BYTES = 255  # a long name's UTF-16 bytes, as pyfatfs limits them (FatFs: FF_MAX_LFN characters)


def fatfs_accepts(name: str) -> bool:
    """Whether a file or folder of this name can be created: FatFs's refused characters, and a long name that
    fits."""
    if not name or name.strip(" .") == "" or any(c in _REFUSED or ord(c) < 0x20 for c in name):
        return False
    return len(name.encode("utf-16-le")) <= MAX_NAME_BYTES


def fatfs_trimmed(part: str) -> str:
    """A path segment as FatFs's create_name reads it: trailing dots and spaces are not part of the name."""
    return part if part in (".", "..") else part.rstrip(" .") or part

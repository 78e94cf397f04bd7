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


_REPLACED = set("+,;=[]")  # valid in a long name, not in an 8.3 one: FatFs puts '_' there


def fatfs_short_name(long_name: str, taken: set[bytes]) -> bytes:
    """The 8.3 name (11 bytes, as stored) FatFs's create_name and dir_register give an entry that needs a long
    name: upper case; leading dots and spaces, inner spaces and dots dropped; ``+,;=[]`` and non-ASCII as ``_``;
    base and extension cut to 8 and 3. A lossy result gets a numbered tail not in ``taken``
    (``ovms_config`` → ``OVMS_C~1``, ``partition-update.log`` → ``PARTIT~1.LOG``), as gen_numname makes it."""
    name = long_name.lstrip(" .")
    lossy = name != long_name
    dot = name.rfind(".")
    base_part, ext_part = (name[:dot], name[dot + 1 :]) if dot > 0 else (name, "")

    def convert(part: str, size: int) -> str:
        nonlocal lossy
        out = ""
        for char in part:
            if char in " .":
                lossy = True
                continue
            if ord(char) >= 0x80 or char in _REPLACED:
                char, lossy = "_", True
            if len(out) == size:
                lossy = True
                break
            out += char.upper()
        return out

    base, ext = convert(base_part, 8), convert(ext_part, 3)
    plain = (base.ljust(8) + ext.ljust(3)).encode("ascii")
    if not lossy:
        return plain
    for seq in range(1, 100):
        tail = f"~{_sequence(seq, long_name):X}"
        numbered = (base[: 8 - len(tail)] + tail).ljust(8) + ext.ljust(3)
        if numbered.encode("ascii") not in taken:
            return numbered.encode("ascii")
    return plain  # FatFs gives up (FR_DENIED) after 99; pyfatfs's own name stands


def _sequence(seq: int, long_name: str) -> int:
    """gen_numname's number: the sequence itself up to 5, then a CRC-16 of the long name and the sequence."""
    if seq <= 5:
        return seq
    sreg = seq
    for unit in memoryview(long_name.encode("utf-16-le")).cast("H"):
        wc = unit
        for _ in range(16):
            sreg = (sreg << 1) + (wc & 1)
            wc >>= 1
            if sreg & 0x10000:
                sreg ^= 0x11021
    return sreg

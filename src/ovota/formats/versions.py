"""OVMS version strings: glibc ``strverscmp``, OVMS's ``buildverscmp`` rules, the product directory, and
which bytes a version may carry into headers, ``ovms3.ver``, pages and the database."""

from __future__ import annotations

from ovota.formats.errors import FormatError

# A version travels in the User-Agent ("<vehicle id> <version>/<partition>/<tag>"), in ovms3.ver's first
# line and in URLs of the download area: printable ASCII without space or '/', as git describe makes.
_VERSION_BYTES = frozenset(range(0x21, 0x7F)) - {ord("/")}

# glibc strverscmp state machine. States: S_N normal, S_I comparing integral part, S_F fractional
# (leading zeros), S_Z leading zeros. Character classes: 0 other, 1 digit 1-9, 2 digit '0'.
_S_N, _S_I, _S_F, _S_Z = 0, 3, 6, 9
_CMP, _LEN = 2, 3
_NEXT_STATE = (
    _S_N, _S_I, _S_Z,
    _S_N, _S_I, _S_I,
    _S_N, _S_F, _S_F,
    _S_N, _S_F, _S_Z,
)  # fmt: skip
_RESULT_TYPE = (
    _CMP, _CMP, _CMP, _CMP, _LEN, _CMP, _CMP, _CMP, _CMP,
    _CMP, -1, -1, +1, _LEN, _LEN, +1, _LEN, _LEN,
    _CMP, _CMP, _CMP, _CMP, _CMP, _CMP, _CMP, _CMP, _CMP,
    _CMP, +1, +1, -1, _CMP, _CMP, -1, _CMP, _CMP,
)  # fmt: skip


def _class(c: int) -> int:
    return (c == 0x30) + (0x30 <= c <= 0x39)


def _is_digit(s: bytes, i: int) -> bool:
    return i < len(s) and 0x30 <= s[i] <= 0x39


def strverscmp(s1: str | bytes, s2: str | bytes) -> int:
    """glibc strverscmp, including its return values (a byte difference, or ±1)."""
    p1 = (s1.encode() if isinstance(s1, str) else s1) + b"\0"
    p2 = (s2.encode() if isinstance(s2, str) else s2) + b"\0"
    i = 0
    c1, c2 = p1[0], p2[0]
    state = _S_N + _class(c1)
    while (diff := c1 - c2) == 0:
        if c1 == 0:
            return 0
        state = _NEXT_STATE[state]
        i += 1
        c1, c2 = p1[i], p2[i]
        state += _class(c1)
    result = _RESULT_TYPE[state * 3 + _class(c2)]
    if result == _CMP:
        return diff
    if result == _LEN:
        # Longer digit run wins; equal lengths keep the first differing digit's difference.
        j = i + 1
        while _is_digit(p1, j):
            if not _is_digit(p2, j):
                return 1
            j += 1
        return -1 if _is_digit(p2, j) else diff
    return result


def canonical_build_version(version: str) -> tuple[str, bool]:
    """OVMS's canonical form: cut at "-dirty" (flagging it), else at the first '/'."""
    dirty = version.find("-dirty")
    if dirty >= 0:
        return version[:dirty], True
    slash = version.find("/")
    return (version[:slash] if slash >= 0 else version), False


def buildverscmp(v1: str, v2: str) -> int:
    """OVMS ``buildverscmp``: > 0 when v1 (the server's) is newer than v2 (the running firmware)."""
    c1, dirty1 = canonical_build_version(v1)
    c2, dirty2 = canonical_build_version(v2)
    cmp = strverscmp(c1, c2)
    if cmp == 0 and dirty1 != dirty2:
        return 1
    return cmp


def is_newer(server_version: str, firmware_version: str) -> bool:
    """True when ``ota status`` would print "(is newer)"."""
    return buildverscmp(server_version, firmware_version) > 0


def product_name(chip_revision: int, new_layout: bool, hardware_base: str = "3.1") -> str:
    """GetOVMSProduct: the server directory for this module (v3.0, v3.1, v3.3, with "-5" on the v3-35 layout)."""
    base = "v3.0" if hardware_base == "3.0" else "v3.1" if chip_revision < 3 else "v3.3"
    return base + ("-5" if new_layout else "")


def check_version(version: bytes | str) -> str:
    """The version as text if every byte is printable ASCII other than space and '/'; else FormatError.

    The error is one line that shows the version escaped and names the first bad byte and its offset.
    """
    raw = version.encode() if isinstance(version, str) else version
    if not raw:
        raise FormatError("the version is empty")
    for offset, byte in enumerate(raw):
        if byte not in _VERSION_BYTES:
            what = "a space" if byte == 0x20 else "'/'" if byte == 0x2F else f"byte 0x{byte:02x}"
            raise FormatError(
                f'version "{escape_bytes(raw)}" has {what} at offset {offset}: '
                "only printable ASCII without spaces or '/' is allowed"
            )
    return raw.decode("ascii")


def escape_bytes(raw: bytes) -> str:
    """Printable ASCII as is, every other byte as ``\\xNN``: safe on any terminal and in any header.

    Escaping is idempotent (a backslash stays a backslash), so text escaped once can be escaped again.
    """
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in raw)


def escape_text(text: str) -> str:
    """:func:`escape_bytes` of the text's UTF-8 bytes."""
    return escape_bytes(text.encode("utf-8", "surrogatepass"))

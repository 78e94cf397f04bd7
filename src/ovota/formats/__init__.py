"""Pure byte formats of ESP-IDF and OVMS: bytes in, records out, no I/O.

Every parser raises :class:`FormatError` (a ``ValueError``) with a one-line message on bad input.
"""

from ovota.formats.errors import FormatError

__all__ = ["FormatError"]

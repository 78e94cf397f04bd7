"""How OVMS's console (microrl) splits a command line into words."""

from __future__ import annotations

MAX_LINE = 800
MAX_TOKENS = 128
MAX_QUOTED = 10
SPLIT_ERROR = "ERROR:too many tokens or invalid quoting"


class SplitError(ValueError):
    """The line has too many words, too many quoted ones, or a quote that does not close."""


def split_line(line: str) -> list[str]:
    """Words separated by spaces. A word starting with ``'`` or ``"`` runs to the same quote followed by a
    space or the end of the line, spaces included, quotes dropped; no other escapes exist."""
    if len(line) > MAX_LINE:
        raise SplitError(SPLIT_ERROR)
    words: list[str] = []
    quoted = 0
    i, end = 0, len(line)
    while i < end:
        if line[i] == " ":
            i += 1
            continue
        quote = line[i]
        if quote in "'\"":
            close = line.find(quote, i + 1)
            while close >= 0 and close + 1 < end and line[close + 1] != " ":
                close = line.find(quote, close + 1)
            if close < 0:
                raise SplitError(SPLIT_ERROR)
            words.append(line[i + 1 : close])
            quoted += 1
            i = close + 1
        else:
            space = line.find(" ", i)
            space = end if space < 0 else space
            words.append(line[i:space])
            i = space
        if len(words) > MAX_TOKENS or quoted > MAX_QUOTED:
            raise SplitError(SPLIT_ERROR)
    return words

"""Which bytes of a blob each module has been sent, so that only a whole image counts as a download.

A module that resumes (``Range: bytes=N-``) receives one image in several responses; a client that asks for one
byte (``Range: bytes=-1``) must not count as having received it. Per (module, blob) the ranges sent are merged;
the download counts once they cover the blob. Request data chooses the keys, so the table is bounded: the
oldest entries go first, and an entry with more than MAX_PIECES separate ranges is dropped (no honest resume
makes that many holes).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_ENTRIES = 100_000
MAX_PIECES = 64


class Coverage:
    """Ranges sent per (module, blob), bounded."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._sent: OrderedDict[tuple[str, str], list[tuple[int, int]]] = OrderedDict()

    def sent(self, module: str, blob: str, offset: int, count: int, size: int) -> bool:
        """Record that ``count`` bytes from ``offset`` of a ``size``-byte blob reached the module; True when
        everything it was sent now covers the whole blob (then the entry is forgotten)."""
        if count <= 0:
            return False
        if offset == 0 and count >= size:
            self._sent.pop((module, blob), None)
            return True
        key = (module, blob)
        pieces = _merge([*self._sent.pop(key, []), (offset, offset + count)])
        if pieces == [(0, size)]:
            return True
        if len(pieces) <= MAX_PIECES:
            self._sent[key] = pieces
            while len(self._sent) > self.max_entries:
                self._sent.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._sent)


def _merge(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Half-open ranges merged where they touch or overlap, in order."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(pieces):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged

"""Promises: a module that read ``ovms3.ver`` gets the build it named when it then fetches ``ovms3.bin``,
even if a publish happened in between. Keyed by the module's address and User-Agent, for 15 minutes.

The key is a hash of those strings, not the strings: they come from the request (a User-Agent may be 8 KB), and
the table holds up to MAX_PROMISES entries, so each costs about 150 bytes whatever the client sent."""

from __future__ import annotations

import time
from collections import OrderedDict

from ovota.server.devices.views import Served

PROMISE_SECONDS = 15 * 60
MAX_PROMISES = 100_000


class Promises:
    """What each module was last told, bounded: the oldest promises go first."""

    def __init__(self) -> None:
        self._promises: OrderedDict[int, tuple[float, Served]] = OrderedDict()

    def promise(self, address: str, user_agent: str, product: str, tag: str, answer: Served) -> None:
        key = hash((address, user_agent, product, tag))
        self._promises[key] = (time.monotonic(), answer)
        self._promises.move_to_end(key)
        while len(self._promises) > MAX_PROMISES:
            self._promises.popitem(last=False)

    def promised(self, address: str, user_agent: str, product: str, tag: str) -> Served | None:
        """What the module was told within the last PROMISE_SECONDS, if anything."""
        entry = self._promises.get(hash((address, user_agent, product, tag)))
        if entry is None or time.monotonic() - entry[0] > PROMISE_SECONDS:
            return None
        return entry[1]

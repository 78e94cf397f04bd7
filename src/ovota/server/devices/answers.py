"""What each channel answers a module, prepared once per change and kept in memory.

A channel's answer is a view (``views``): the inputs of the offer decision and, for every build they may offer,
the ``ovms3.ver`` body and headers built once. Answers are reloaded
when the repository changes: this process says so (``invalidate``), or another process committed (the
database's change token, looked at every 50 ms at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict

from ovota.server.devices.views import ChannelView, channel_view
from ovota.server.fleet.offer_inputs import read_inputs
from ovota.server.fleet.rollouts import Rollouts
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.images import NAME
from ovota.server.store.repository import Repository
from ovota.server.store.threads import RepositoryThreads

RECHECK_SECONDS = 0.05
MAX_MISSES = 512


class Missing:
    """No answer in memory: load it (``ChannelAnswers.load``)."""


MISSING = Missing()  # the one instance
Answer = ChannelView | None  # None: no such channel


class ChannelAnswers:
    """Channel answers cached until the repository changes. Only channels that exist are kept, and a few
    hundred names that do not (requests choose the names: an unbounded cache of misses is a memory leak);
    loading runs in ``threads``, never on the event loop."""

    def __init__(self, repo: Repository, threads: RepositoryThreads[Rollouts]) -> None:
        self.repo = repo  # only for the change token, on the event loop
        self.threads = threads
        self._version = -1
        self._next_check = 0.0
        self._generation = 0  # counts invalidations, so a load that raced one stays stale
        self._answers: dict[tuple[str, str], ChannelView] = {}
        self._stale: set[tuple[str, str]] = set()  # answers to reload (kept while the database is away)
        self._misses: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._loading: dict[tuple[str, str], asyncio.Future[Answer]] = {}

    def invalidate(self) -> None:
        """A channel or rollout changed: reload every answer on its next use."""
        self._generation += 1
        self._stale = set(self._answers)
        self._misses.clear()

    def lookup(self, product: str, tag: str) -> Answer | Missing:
        """The answer in memory, or MISSING (then ``await load``): the request path's only call when nothing
        changed."""
        now = time.monotonic()
        if now >= self._next_check:
            # Another process (the CLI, another worker or server) may have published: look at most every 50 ms.
            self._next_check = now + RECHECK_SECONDS
            with contextlib.suppress(DatabaseUnavailable):
                version = self.repo.data_version()
                if version != self._version:
                    self.invalidate()
                    self._version = version
        key = (product, tag)
        found = self._answers.get(key)
        if found is not None and key not in self._stale:
            return found
        if key in self._misses:
            self._misses.move_to_end(key)
            return None
        if not (NAME.fullmatch(product) and NAME.fullmatch(tag)):
            return None  # never a channel: nothing to look up or keep
        return MISSING

    async def load(self, product: str, tag: str) -> Answer:
        """Load the answer in a database thread (one load per channel at a time); while the database is away,
        the last answer this process had (DatabaseUnavailable if it had none)."""
        key = (product, tag)
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._load(key))
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(loading)

    async def _load(self, key: tuple[str, str]) -> Answer:
        generation = self._generation
        try:
            answer = await self.threads.run(lambda rollouts: _read(rollouts, *key))
        except DatabaseUnavailable:
            if key in self._answers:
                return self._answers[key]
            raise
        if answer is None:
            self._answers.pop(key, None)
            self._misses[key] = None
            while len(self._misses) > MAX_MISSES:
                self._misses.popitem(last=False)
        else:
            self._answers[key] = answer
        if generation == self._generation:
            self._stale.discard(key)
        return answer


def _read(rollouts: Rollouts, product: str, tag: str) -> Answer:
    inputs = read_inputs(rollouts, product, tag)
    return None if inputs is None else channel_view(inputs)

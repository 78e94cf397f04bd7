"""What each channel answers a module, prepared once per change and kept in memory.

A channel's answer is its build with the ``ovms3.ver`` body and headers built once; during a rollout it is a
view that gives the new build to the module's cohort and the old one to everyone else. Answers are reloaded
when the repository changes: this process says so (``invalidate``), or another process committed (the
database's change token, looked at every 50 ms at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate

from multidict import CIMultiDict, CIMultiDictProxy

from ovota.server.fleet.agent import Agent
from ovota.server.fleet.policy import RolloutState
from ovota.server.fleet.rollouts import Rollout, Rollouts
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.errors import NotFound
from ovota.server.store.images import NAME
from ovota.server.store.repository import Channel, Repository
from ovota.server.store.threads import RepositoryThreads

RECHECK_SECONDS = 0.05
MAX_COHORT_CACHE = 200_000
MAX_MISSES = 512


@dataclass(frozen=True)
class Served:
    """What the device paths serve for one channel, prepared once per change."""

    channel: Channel
    ver_body: bytes
    ver_etag: str
    ver_headers: CIMultiDictProxy[str]  # built once: header construction is a large part of a .ver request


@dataclass
class RolloutView:
    """What a channel with an active rollout serves: the new build to its cohort, the old one to others."""

    rollout: Rollout
    old: Served
    new: Served
    cohort: dict[str, bool]  # vehicle id -> in the current cohort (the hash is computed once per id)

    def choose(self, agent: Agent | None) -> Served:
        rollout = self.rollout
        if rollout.state is RolloutState.HALTED:
            # Modules already running the new build stay on it; nobody else is offered it.
            return self.new if agent is not None and agent.version == rollout.to_build.version else self.old
        vehicle_id = agent.vehicle_id if agent is not None else ""
        member = self.cohort.get(vehicle_id)
        if member is None:
            if len(self.cohort) > MAX_COHORT_CACHE:
                self.cohort.clear()
            member = self.cohort[vehicle_id] = rollout.in_cohort(vehicle_id)
        return self.new if member else self.old


def served(channel: Channel) -> Served:
    """The answer for a channel's build."""
    etag = f'"{channel.build.sha256[:32]}-ver"'
    headers = CIMultiDict(
        {
            "Content-Type": "text/plain; charset=utf-8",
            "ETag": etag,
            "Last-Modified": formatdate(channel.updated, usegmt=True),
            "Cache-Control": "no-cache",
        }
    )
    return Served(channel, channel.ver_file, etag, CIMultiDictProxy(headers))


class Missing:
    """No answer in memory: load it (``ChannelAnswers.load``)."""


MISSING = Missing()  # the one instance
Answer = Served | RolloutView | None  # None: no such channel


def choose(answer: Served | RolloutView, agent: Agent | None) -> Served:
    """What the answer gives this module."""
    return answer.choose(agent) if isinstance(answer, RolloutView) else answer


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
        self._answers: dict[tuple[str, str], Served | RolloutView] = {}
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
    try:
        channel = rollouts.repo.channel(product, tag)
    except NotFound:
        return None
    answer = served(channel)
    rollout = rollouts.active(product, tag)
    if rollout is None:
        return answer
    new = served(Channel(product, tag, rollout.to_build, rollout.updated))
    return RolloutView(rollout, answer, new, {})

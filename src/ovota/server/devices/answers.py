"""What each channel answers a module, prepared once per change and kept in memory.

A channel's answer is its build with the ``ovms3.ver`` body and headers built once; during a rollout it is a
view that gives the new build to the module's cohort and the old one to everyone else. Answers are reloaded
when the repository changes: this process says so (``invalidate``), or another process committed (the
database's change token, looked at every 50 ms at most).
"""

from __future__ import annotations

import contextlib
import time
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

RECHECK_SECONDS = 0.05
MAX_COHORT_CACHE = 200_000


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


class ChannelAnswers:
    """Channel answers cached until the repository changes."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.rollouts = Rollouts(repo)
        self._version = -1
        self._next_check = 0.0
        self._answers: dict[tuple[str, str], Served | RolloutView | None] = {}
        self._stale: set[tuple[str, str]] = set()  # answers to reload (kept while the database is away)

    def invalidate(self) -> None:
        """A channel or rollout changed: reload every answer on its next use."""
        self._stale = set(self._answers)

    def served(self, product: str, tag: str, agent: Agent | None = None) -> Served | None:
        """What the channel serves to this module: its build, or, during a rollout, the one for the module."""
        found = self._lookup(product, tag)
        return found.choose(agent) if isinstance(found, RolloutView) else found

    def _lookup(self, product: str, tag: str) -> Served | RolloutView | None:
        now = time.monotonic()
        if now >= self._next_check:
            # Another process (the CLI, another worker or server) may have published: look at most every 50 ms.
            self._next_check = now + RECHECK_SECONDS
            with contextlib.suppress(DatabaseUnavailable):
                version = self.repo.data_version()
                if version != self._version:
                    self._stale = set(self._answers)
                    self._version = version
        key = (product, tag)
        if key in self._answers and key not in self._stale:
            return self._answers[key]
        try:
            self._answers[key] = self._load(product, tag)
        except DatabaseUnavailable:
            # The database is restarting: modules keep getting what this process last knew (503 if nothing).
            if key not in self._answers:
                raise
            return self._answers[key]
        self._stale.discard(key)
        return self._answers[key]

    def _load(self, product: str, tag: str) -> Served | RolloutView | None:
        if not (NAME.match(product) and NAME.match(tag)):
            return None
        try:
            channel = self.repo.channel(product, tag)
        except NotFound:
            return None
        answer = served(channel)
        rollout = self.rollouts.active(product, tag)
        if rollout is None:
            return answer
        new = served(Channel(product, tag, rollout.to_build, rollout.updated))
        return RolloutView(rollout, answer, new, {})

"""What a channel answers each module: its build, prepared once per change, and when a rollout, pins,
waypoints or assignments apply to the channel, a view that chooses per module by their precedence
(``fleet.precedence``: pin > waypoint > assignment > rollout cohort > channel).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from email.utils import formatdate

from multidict import CIMultiDict, CIMultiDictProxy

from ovota.server.fleet.agent import Agent
from ovota.server.fleet.precedence import Offer, precedence, rollout_or_channel
from ovota.server.fleet.rollouts import Rollout
from ovota.server.store.repository import Build, Channel

MAX_COHORT_CACHE = 200_000


@dataclass(frozen=True)
class Served:
    """What the device paths serve for one build of a channel, prepared once per change."""

    channel: Channel
    ver_body: bytes
    ver_etag: str
    ver_headers: CIMultiDictProxy[str]  # built once: header construction is a large part of a .ver request


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


@dataclass
class RolloutPart:
    """A channel's active rollout as the device path needs it: its answers, the ids of its groups, the
    modules its rate admitted, and each vehicle's cohort hash (computed once per id, bounded)."""

    rollout: Rollout
    new: Served
    members: frozenset[str] = frozenset()
    admitted: frozenset[str] = frozenset()
    places: dict[str, int] = field(default_factory=dict)

    def place(self, vehicle_id: str) -> int:
        found = self.places.get(vehicle_id)
        if found is None:
            if len(self.places) > MAX_COHORT_CACHE:
                self.places.clear()
            found = self.places[vehicle_id] = self.rollout.place(vehicle_id)
        return found


@dataclass
class ChannelView:
    """A channel whose answer depends on the module."""

    channel: Served
    rollout: RolloutPart | None
    pins: dict[str, Offer[Served]]
    waypoints: tuple[Offer[Served], ...]
    assignments: dict[str, Offer[Served]]

    def offer(self, agent: Agent | None, now: float) -> Offer[Served]:
        vehicle_id, version = (agent.vehicle_id, agent.version) if agent is not None else ("", "")
        below = Offer(self.channel, self.channel.channel.build.version, "channel")
        part = self.rollout
        if part is not None:
            below = rollout_or_channel(below, (part.rollout, part.new), vehicle_id, version, part.members,
                                       part.admitted, now, part.place)  # fmt: skip
        if agent is None:
            return below
        return precedence(version, self.pins.get(vehicle_id), self.waypoints, self.assignments.get(vehicle_id), below)


def channel_view(channel: Channel, rollout: RolloutPart | None, pins: dict[str, Build],
                 waypoints: Collection[Build], assignments: dict[str, Build]) -> Served | ChannelView:  # fmt: skip
    """The channel's answer: its build for everyone when nothing else applies, else a view."""
    answer = served(channel)
    if rollout is None and not pins and not waypoints and not assignments:
        return answer
    prepared: dict[str, Served] = {channel.build.sha256: answer}

    def offer(build: Build, why: str) -> Offer[Served]:
        if build.sha256 not in prepared:
            prepared[build.sha256] = served(Channel(channel.product, channel.tag, build, channel.updated))
        return Offer(prepared[build.sha256], build.version, why)

    return ChannelView(
        answer,
        rollout,
        {v: offer(b, "pinned") for v, b in pins.items()},
        tuple(offer(b, f"waypoint {b.version}") for b in waypoints),
        {v: offer(b, "assigned") for v, b in assignments.items()},
    )


def choose(answer: Served | ChannelView, agent: Agent | None, now: float) -> Served:
    """What the answer gives this module at ``now``."""
    return answer.offer(agent, now).item if isinstance(answer, ChannelView) else answer

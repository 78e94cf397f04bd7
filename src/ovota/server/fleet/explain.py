"""Why a module gets what it gets: the device path's precedence (``precedence``) over the database, for the
fleet list, rollout status and the console."""

from __future__ import annotations

from dataclasses import dataclass

from ovota.server.fleet.admission import admissions
from ovota.server.fleet.groups import members
from ovota.server.fleet.overrides import ChannelOverrides, Overrides
from ovota.server.fleet.precedence import Offer, precedence, rollout_or_channel
from ovota.server.fleet.rollouts import Rollout, Rollouts
from ovota.server.store.errors import NotFound
from ovota.server.store.repository import Build


@dataclass(frozen=True)
class _Channel:
    build: Build
    overrides: ChannelOverrides
    rollout: Rollout | None
    members: frozenset[str]
    admitted: frozenset[str]


def offer_json(offer: Offer[Build] | None) -> dict[str, str]:
    """An offer's fields in the fleet's JSON: ``offered`` (its version) and ``why`` (a 1,000-module API page stays
    small; the version names the build)."""
    if offer is None:
        return {"offered": "", "why": "no build on this channel"}
    return {"offered": offer.version, "why": offer.why}


class Explainer:
    """Explains offers over the connection of ``rollouts``; reads each channel once."""

    def __init__(self, rollouts: Rollouts, now: float) -> None:
        self.rollouts = rollouts
        self.now = now
        self._channels: dict[tuple[str, str], _Channel | None] = {}

    def offer(self, product: str, tag: str, vehicle_id: str, version: str) -> Offer[Build] | None:
        """What a module of ``product``/``tag`` running ``version`` is offered now, and why; None when the
        channel serves nothing."""
        channel = self._channel(product, tag)
        if channel is None:
            return None
        rollout = None if channel.rollout is None else (channel.rollout, channel.rollout.to_build)
        below = rollout_or_channel(Offer(channel.build, channel.build.version, "channel"), rollout, vehicle_id, version,
                                   channel.members, channel.admitted, self.now)  # fmt: skip
        overrides = channel.overrides
        pin = overrides.pins.get(vehicle_id)
        assigned = overrides.assignments.get(vehicle_id)
        return precedence(
            version,
            None if pin is None else Offer(pin, pin.version, "pinned"),
            tuple(Offer(w, w.version, f"waypoint {w.version}") for w in overrides.waypoints),
            None if assigned is None else Offer(assigned, assigned.version, "assigned by a targeted rollout"),
            below,
        )

    def _channel(self, product: str, tag: str) -> _Channel | None:
        key = (product, tag)
        if key not in self._channels:
            self._channels[key] = self._read(product, tag)
        return self._channels[key]

    def _read(self, product: str, tag: str) -> _Channel | None:
        repo = self.rollouts.repo
        try:
            build = repo.channel(product, tag).build
        except NotFound:
            return None
        rollout = self.rollouts.active(product, tag)
        group = frozenset() if rollout is None else members(repo.db, rollout.settings.target.groups)
        admitted = frozenset(admissions(repo.db, rollout.id)) if rollout and rollout.settings.rate else frozenset()
        return _Channel(build, Overrides(repo).load(product, tag), rollout, group, admitted)

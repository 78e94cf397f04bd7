"""Which build a module is offered, and why: pin > waypoint > targeted assignment > rollout cohort > channel.

The same rules answer modules (over what the device path keeps in memory) and explain to operators why a
module gets what it gets (over the database), so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ovota.formats.versions import buildverscmp
from ovota.server.fleet.policy import HASH_SPACE, RolloutState
from ovota.server.fleet.rollouts import Rollout

T = TypeVar("T")


@dataclass(frozen=True)
class Offer(Generic[T]):
    """What a module is offered (``item``: a build, or the device path's prepared answer for it), its
    version, and why."""

    item: T
    version: str
    why: str


def rollout_offers(rollout: Rollout, vehicle_id: str, version: str, members: Collection[str],
                   admitted: Collection[str], now: float, place: Callable[[str], int]) -> tuple[bool, str]:  # fmt: skip
    """Whether the rollout offers its build to this module now, and why (or why not). ``members``: the ids
    of the rollout's groups; ``admitted``: the modules its rate let in; ``place``: the module's cohort hash."""
    name = f"rollout {rollout.id}"
    settings = rollout.settings
    if version == rollout.to_build.version:
        return True, f"{name}: runs its build"
    if rollout.state is RolloutState.HALTED:
        return False, f"{name} halted"
    if not settings.target.takes(vehicle_id, version, members, rollout.to_build.version):
        return False, f"not in rollout {rollout.id}'s target"
    if rollout.threshold < HASH_SPACE and not (vehicle_id and place(vehicle_id) < rollout.threshold):
        return False, f"{name}: not in step {rollout.step + 1} ({rollout.percent}%)"
    if not settings.schedule.is_open(now):
        return False, f"{name}: outside its windows"
    if settings.rate is not None and vehicle_id not in admitted:
        return False, f"{name}: waiting for its rate"
    return True, f"{name}, step {rollout.step + 1} ({rollout.percent}%)"


def rollout_or_channel(channel: Offer[T], rollout: tuple[Rollout, T] | None, vehicle_id: str, version: str,
                       members: Collection[str], admitted: Collection[str], now: float,
                       place: Callable[[str], int] | None = None) -> Offer[T]:  # fmt: skip
    """What the module is offered below pins, waypoints and assignments: the rollout's build (``rollout``: the
    rollout and its build's item) when the rollout offers it to this module, else the channel's, with the
    rollout's reason. ``place``: the module's cohort hash (default: computed)."""
    if rollout is None:
        return channel
    active, new = rollout
    offered, why = rollout_offers(active, vehicle_id, version, members, admitted, now, place or active.place)
    if offered:
        return Offer(new, active.to_build.version, why)
    return Offer(channel.item, channel.version, f"channel ({why})")


def precedence(version: str, pin: Offer[T] | None, waypoints: Sequence[Offer[T]], assignment: Offer[T] | None,
               below: Offer[T]) -> Offer[T]:  # fmt: skip
    """The offer for a module running ``version``: its pin; else the oldest waypoint between its version and
    what it would be offered otherwise (its assignment, else ``below``: the rollout's or the channel's answer),
    so it passes through every waypoint in order; else that."""
    if pin is not None:
        return pin
    lower = assignment if assignment is not None else below
    for waypoint in waypoints:  # oldest first
        if buildverscmp(version, waypoint.version) < 0 < buildverscmp(lower.version, waypoint.version):
            return waypoint
    return lower

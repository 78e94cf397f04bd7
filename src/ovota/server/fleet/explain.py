"""Why a module gets what it gets, for operators: the device path's decision (``offer.decide``) over the same
inputs (``offer_inputs``), read from the database, for the fleet list, rollout status, the API and the console."""

from __future__ import annotations

from ovota.server.fleet.modules import Module
from ovota.server.fleet.offer import Offer
from ovota.server.fleet.offer_inputs import ChannelInputs, read_inputs
from ovota.server.fleet.rollouts import Rollouts


def offer_json(offer: Offer | None) -> dict[str, str]:
    """An offer's fields in the fleet's JSON: ``offered`` (its version, "" for nothing) and ``why`` (a
    1,000-module API page stays small; the version names the build)."""
    if offer is None:
        return {"offered": "", "why": "no build on this channel"}
    return {"offered": offer.version, "why": offer.why}


class Explainer:
    """Explains offers over the connection of ``rollouts``; reads each channel once."""

    def __init__(self, rollouts: Rollouts, now: float) -> None:
        self.rollouts = rollouts
        self.now = now
        self._channels: dict[tuple[str, str], ChannelInputs | None] = {}

    def offer(self, product: str, tag: str, module: str, vehicle_id: str, version: str) -> Offer | None:
        """What a module (``module``: its registry key) of ``product``/``tag`` running ``version`` is offered now,
        and why; None when the channel serves nothing."""
        key = (product, tag)
        if key not in self._channels:
            self._channels[key] = read_inputs(self.rollouts, product, tag)
        inputs = self._channels[key]
        if inputs is None:
            return None
        return inputs.offer(inputs.module(module, vehicle_id, product, version), self.now)

    def of(self, module: Module) -> Offer | None:
        """The offer of a registry row."""
        return self.offer(module.product, module.tag, module.module, module.vehicle_id, module.version)

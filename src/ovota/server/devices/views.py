"""What a channel answers each module: the offer decision (``fleet.offer``) over the channel's inputs, and the
answer for every build it may offer, prepared once per change."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import formatdate

from multidict import CIMultiDict, CIMultiDictProxy

from ovota.server.fleet.attempts import Attempt
from ovota.server.fleet.offer import NO_RULES, BuildFacts, ModuleFacts, Offer, problem
from ovota.server.fleet.offer_inputs import ChannelInputs
from ovota.server.store.repository import Channel

MAX_COHORT_CACHE = 200_000


@dataclass(frozen=True)
class Served:
    """What the device paths serve for one build of a channel, prepared once per change."""

    channel: Channel
    facts: BuildFacts  # what the offer decision knows of the build (to check a promise made earlier)
    ver_body: bytes
    ver_etag: str
    ver_headers: CIMultiDictProxy[str]  # built once: header construction is a large part of a .ver request


def served(channel: Channel, facts: BuildFacts) -> Served:
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
    return Served(channel, facts, channel.ver_file, etag, CIMultiDictProxy(headers))


@dataclass
class ChannelView:
    """A channel's inputs and the answer for each build they may offer; cohort hashes computed once per
    vehicle id (bounded)."""

    inputs: ChannelInputs
    answers: dict[str, Served]
    places: dict[str, int] = field(default_factory=dict)

    def place(self, vehicle_id: str) -> int:
        found = self.places.get(vehicle_id)
        if found is None:
            rollout = self.inputs.rollout
            if rollout is None:
                raise ValueError("no rollout")
            if len(self.places) > MAX_COHORT_CACHE:
                self.places.clear()
            found = self.places[vehicle_id] = rollout.place(vehicle_id)
        return found

    def offer(self, module: ModuleFacts | None, now: float) -> Offer:
        """The decision for this module now."""
        return self.inputs.offer(module, now, self.place)

    def answer(self, offer: Offer) -> Served | None:
        """The prepared answer for an offer (None: nothing is offered)."""
        return None if offer.build is None else self.answers[offer.build.sha256]

    def still_keeps(self, answer: Served, module: ModuleFacts | None) -> bool:
        """Whether a build promised earlier (perhaps before a publish) may still be served to this module: it
        keeps every invariant of the offer decision under the rules now."""
        facts = answer.facts
        if module is None:
            module = ModuleFacts("", self.inputs.channel.product, "")
        return problem(facts, module, self.inputs.rules.get(module.product, NO_RULES)) is None

    def module(self, key: str, vehicle_id: str, product: str, version: str, attempt: Attempt | None) -> ModuleFacts:
        return self.inputs.module(key, vehicle_id, product, version, attempt)


def channel_view(inputs: ChannelInputs) -> ChannelView:
    """The channel's view: an answer prepared for each build its inputs name."""
    channel, rollout = inputs.channel, inputs.rollout
    answers = {channel.build.sha256: served(channel, inputs.facts[channel.build.sha256])}
    for sha256, build in inputs.builds.items():
        if sha256 not in answers:
            updated = rollout.updated if rollout is not None and rollout.to_build.sha256 == sha256 else channel.updated
            answers[sha256] = served(Channel(channel.product, channel.tag, build, updated), inputs.facts[sha256])
    return ChannelView(inputs, answers)

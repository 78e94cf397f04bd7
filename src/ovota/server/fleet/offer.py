"""The one decision of what a module is offered now, and why. Pure: no I/O, no clock of its own.

Every answer to a module (``ovms3.ver`` and ``ovms3.bin``) and every "offered / why" an operator reads (``fleet
list``, ``rollout status --modules``, the API, the console) comes from ``decide``, so they cannot disagree.

Precedence: the first layer that applies and whose build keeps every invariant wins.

1. pin: the vehicle's pinned build;
2. waypoint: the oldest waypoint newer than what the module runs and older than what it would otherwise be
   offered (so it passes through every waypoint in version order);
3. assignment: where a targeted rollout left the vehicle;
4. rollout cohort: the rollout's build, when its target, step, windows and rate let the module in;
5. channel: the channel's build;
6. nothing: no layer is left (the module keeps what it runs).

Invariants, of every build ``decide`` offers (a layer whose build breaks one is skipped, and ``why`` says so,
e.g. "channel; pin skipped: build is for v3.3"):

a. the build was published for the module's product;
b. it fits the module's OTA slot (the product's layout, counting the sector ESP-IDF erases beyond the image);
c. where the module's product trusts signing keys, one of them signed it;
d. the module has not failed on it (received it whole, then reported another version after the grace period,
   or went back from it to an older version) since an operator last retried it;
e. its secure version is at least the product's anti-rollback floor and the secure version of the build the
   module runs (a chip with anti-rollback refuses anything older).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from ovota.formats.versions import buildverscmp
from ovota.server.fleet.policy import HASH_SPACE, RolloutState
from ovota.server.fleet.rollouts import Rollout
from ovota.server.store.images import fits, slot_size


@dataclass(frozen=True)
class BuildFacts:
    """What the decision knows of a build."""

    sha256: str
    version: str
    size: int
    products: frozenset[str]  # the products it was published for
    signers: frozenset[str] = frozenset()  # key digests (hex) of its valid signature blocks
    secure_version: int = 0


@dataclass(frozen=True)
class ProductRules:
    """What a product requires of every build it serves."""

    trusted: frozenset[str] = frozenset()  # key digests; empty: signatures are not required
    min_secure_version: int = 0  # the operator's anti-rollback floor
    secure_by_version: Mapping[str, int] = field(default_factory=dict)  # version -> highest secure version (>0)


NO_RULES = ProductRules()


@dataclass(frozen=True)
class ModuleFacts:
    """What is known of the module asking: who it is, what it runs, which builds it failed on."""

    vehicle_id: str
    product: str
    version: str
    failed: frozenset[str] = frozenset()  # SHA-256s of builds it failed on, not retried since


@dataclass(frozen=True)
class RolloutFacts:
    """A channel's active rollout as the decision needs it."""

    rollout: Rollout
    build: BuildFacts
    members: Collection[str] = frozenset()  # the vehicle ids of its groups
    admitted: Collection[str] = frozenset()  # the vehicles its rate let in
    place: Callable[[str], int] | None = None  # the module's cohort hash (default: computed)


@dataclass(frozen=True)
class Layers:
    """Everything that may decide a module's offer, before the invariants are checked."""

    channel: BuildFacts | None
    rollout: RolloutFacts | None = None
    pin: BuildFacts | None = None
    waypoints: tuple[BuildFacts, ...] = ()  # oldest first
    assignment: BuildFacts | None = None


@dataclass(frozen=True)
class Offer:
    """The build offered (None: nothing) and why."""

    build: BuildFacts | None
    why: str

    @property
    def version(self) -> str:
        return "" if self.build is None else self.build.version

    def describe(self) -> str:
        """As operators read it: ``3.3.007 (rollout 4, step 2 (25%))``, or the reason for nothing."""
        return self.why if self.build is None else f"{self.build.version} ({self.why})"


def problem(build: BuildFacts, module: ModuleFacts, rules: ProductRules) -> str | None:
    """The first invariant (a-e) the build breaks for this module, as a short reason; None if it keeps them."""
    product = module.product
    if product not in build.products:
        return f"build is for {', '.join(sorted(build.products)) or 'no product'}"
    if not fits(build.size, product):
        return f"{build.size} bytes do not fit the {slot_size(product) // 0x100000} MB slot of {product}"
    if rules.trusted and not rules.trusted & build.signers:
        return f"not signed by a key {product} trusts"
    if build.sha256 in module.failed:
        return f"this module failed on {build.version} (until retried: fleet retry, or Retry on its page)"
    floor = max(rules.min_secure_version, rules.secure_by_version.get(module.version, 0))
    if build.secure_version < floor:
        return f"secure version {build.secure_version} is below {floor} (anti-rollback)"
    return None


def rollout_offers(rollout: Rollout, vehicle_id: str, version: str, members: Collection[str],
                   admitted: Collection[str], now: float, place: Callable[[str], int]) -> tuple[bool, str]:  # fmt: skip
    """Whether the rollout lets this module in now, and why (or why not). ``members``: the ids of the rollout's
    groups; ``admitted``: the modules its rate let in; ``place``: the module's cohort hash."""
    name = f"rollout {rollout.id}"
    settings = rollout.settings
    if version and version == rollout.to_build.version:
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


def decide(module: ModuleFacts, layers: Layers, rules: Mapping[str, ProductRules], now: float) -> Offer:
    """What the module is offered now and why: the first layer of the precedence whose build keeps every
    invariant (module docstring); nothing when none is left. Whatever the layers hold, an offered build keeps
    invariants a-e for this module."""
    product_rules = rules.get(module.product, NO_RULES)
    skipped: list[str] = []

    def keeps(build: BuildFacts, layer: str) -> bool:
        reason = problem(build, module, product_rules)
        if reason is not None:
            skipped.append(f"{layer} skipped: {reason}")
        return reason is None

    lower: Offer | None = None

    def chosen(offer: Offer) -> Offer:
        skipped.clear()  # what lower layers skipped no longer matters once a higher one decides
        return offer

    channel = layers.channel
    if channel is not None and keeps(channel, "channel"):
        lower = chosen(Offer(channel, "channel"))
    facts = layers.rollout
    if facts is not None:
        rollout = facts.rollout
        offered, why = rollout_offers(rollout, module.vehicle_id, module.version, facts.members, facts.admitted, now,
                                      facts.place or rollout.place)  # fmt: skip
        if offered and keeps(facts.build, f"rollout {rollout.id}"):
            lower = chosen(Offer(facts.build, why))
        elif lower is not None and not offered:
            lower = Offer(lower.build, f"channel ({why})")
    if layers.assignment is not None and keeps(layers.assignment, "assignment"):
        lower = chosen(Offer(layers.assignment, "assigned by a targeted rollout"))
    if lower is not None and lower.build is not None:
        # Oldest first: the first waypoint between what the module runs and what it would get is its next stop.
        runs, comes = module.version, lower.version
        on_the_way = [w for w in layers.waypoints if buildverscmp(runs, w.version) < 0 < buildverscmp(comes, w.version)]
        for waypoint in on_the_way:
            if keeps(waypoint, f"waypoint {waypoint.version}"):
                lower = chosen(Offer(waypoint, f"waypoint {waypoint.version}"))
                break
    if layers.pin is not None and keeps(layers.pin, "pin"):
        lower = chosen(Offer(layers.pin, "pinned"))
    if lower is None:
        lower = Offer(None, "nothing")
    return lower if not skipped else Offer(lower.build, f"{lower.why}; {'; '.join(skipped)}")

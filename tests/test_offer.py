"""The offer decision without I/O (``fleet/offer.py``): its precedence, and its invariants checked by hypothesis over
random mixes of builds, products, trusted keys, anti-rollback floors, failure histories, channels, rollouts, pins,
waypoints and assignments. The invariants are written out again here, independently of ``offer.problem``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovota.formats.versions import buildverscmp
from ovota.server.fleet.offer import BuildFacts, Layers, ModuleFacts, ProductRules, RolloutFacts, decide
from ovota.server.fleet.policy import HASH_SPACE, Counts, RolloutState
from ovota.server.fleet.rollouts import Rollout, RolloutSettings
from ovota.server.store.repository import Build

PRODUCTS = ("v3.3", "v3.3-5")
VERSIONS = ("3.3.004", "3.3.005", "3.3.006", "3.3.007", "3.3.008", "3.3.009")
KEYS = ("k1", "k2")
SECTOR = 4096
# Sizes on both sides of each slot's limit (ESP-IDF erases one sector more than the image needs).
SIZES = (1_000_000, 0x3FF000 - 1, 0x3FF000, 0x400000, 0x6FF000 - 1, 0x6FF000, 0x700000)


def build(version: str, *, products: tuple[str, ...] = ("v3.3-5",), size: int = 2_000_000,
          signers: tuple[str, ...] = (), secure: int = 0, name: str = "") -> BuildFacts:  # fmt: skip
    sha = (name or f"{version}-{'+'.join(products)}-{size}-{'+'.join(signers)}-{secure}").encode().hex()
    return BuildFacts(sha.ljust(64, "0")[:64], version, size, frozenset(products), frozenset(signers), secure)


def rollout_of(to: BuildFacts, *, threshold: int = HASH_SPACE, state: RolloutState = RolloutState.RUNNING,
               rollout_id: int = 1) -> Rollout:  # fmt: skip
    plain = Build("0" * 64, 1, "3.3.001", "ovms3", "", 0.0)
    new = Build(to.sha256, to.size, to.version, "ovms3", "", 0.0)
    return Rollout(rollout_id, "v3.3-5", "main", plain, new, RolloutSettings(steps=(10, 100)), state, 0, 0.0,
                   (threshold,), "", Counts(), 0.0, 0.0)  # fmt: skip


CHANNEL = build("3.3.008", name="channel")
ROLLOUT = build("3.3.009", name="rollout")
ASSIGNED = build("3.3.010", name="assigned")
PIN = build("3.3.001", name="pin")
WAYPOINT = build("3.3.007", name="waypoint")


def offer_of(version: str, pin: BuildFacts | None, waypoint: BuildFacts, assigned: BuildFacts | None,
             in_rollout: bool) -> BuildFacts | None:  # fmt: skip
    rollout = RolloutFacts(rollout_of(ROLLOUT, threshold=HASH_SPACE if in_rollout else 0), ROLLOUT)
    module = ModuleFacts("CAR1", "v3.3-5", version)
    return decide(module, Layers(CHANNEL, rollout, pin, (waypoint,), assigned), {}, 0.0).build


@pytest.mark.parametrize(
    ("version", "pin", "waypoint", "assigned", "in_rollout", "expected"),
    [
        ("3.3.005", PIN, WAYPOINT, ASSIGNED, True, PIN),  # a pin beats everything
        ("3.3.005", None, WAYPOINT, ASSIGNED, True, WAYPOINT),  # older than the waypoint: through it first
        ("3.3.007", None, WAYPOINT, ASSIGNED, True, ASSIGNED),  # at the waypoint: its assignment
        ("3.3.007", None, WAYPOINT, None, True, ROLLOUT),  # no assignment: the rollout's cohort
        ("3.3.007", None, WAYPOINT, None, False, CHANNEL),  # outside the cohort: the channel
        ("3.3.005", None, build("3.3.009", name="w9"), None, False, CHANNEL),  # not on the way
    ],
)
def test_precedence(version: str, pin: BuildFacts | None, waypoint: BuildFacts, assigned: BuildFacts | None,
                    in_rollout: bool, expected: BuildFacts) -> None:  # fmt: skip
    assert offer_of(version, pin, waypoint, assigned, in_rollout) == expected


def test_waypoints_are_passed_in_order() -> None:
    first, second, target = build("3.3.006", name="a"), build("3.3.008", name="b"), build("3.3.010", name="c")
    for version, expected in (("3.3.004", first), ("3.3.006", second), ("3.3.008", target)):
        module = ModuleFacts("CAR1", "v3.3-5", version)
        assert decide(module, Layers(target, waypoints=(first, second)), {}, 0.0).build == expected


def test_a_layer_that_breaks_an_invariant_is_skipped_and_why_says_so() -> None:
    module = ModuleFacts("M0200", "v3.3-5", "3.3.006")
    old_layout = build("3.3.005-2-gccccccc", products=("v3.3",), name="old")
    offer = decide(module, Layers(CHANNEL, pin=old_layout), {}, 0.0)
    assert offer.build == CHANNEL and offer.why == "channel; pin skipped: build is for v3.3"
    small_slot = ModuleFacts("M0201", "v3.3", "3.3.005")
    big = build("3.3.007", products=("v3.3", "v3.3-5"), size=5_000_000, name="big")
    offer = decide(small_slot, Layers(None, pin=big), {}, 0.0)
    assert offer.build is None and offer.why == "nothing; pin skipped: 5000000 bytes do not fit the 4 MB slot of v3.3"
    failed = ModuleFacts("CAR1", "v3.3-5", "3.3.006", frozenset({ROLLOUT.sha256}))
    offer = decide(failed, Layers(CHANNEL, RolloutFacts(rollout_of(ROLLOUT), ROLLOUT)), {}, 0.0)
    assert offer.build == CHANNEL
    assert offer.why == (
        "channel; rollout 1 skipped: this module failed on 3.3.009 (until retried: fleet retry, or Retry on its page)"
    )
    rules = {"v3.3-5": ProductRules(frozenset({"k1"}), 2, {"3.3.006": 3})}
    signed_low = build("3.3.007", signers=("k1",), secure=2, name="low")
    assert decide(ModuleFacts("CAR1", "v3.3-5", "3.3.006"), Layers(signed_low), rules, 0.0).why == (
        "nothing; channel skipped: secure version 2 is below 3 (anti-rollback)"
    )
    assert decide(ModuleFacts("CAR1", "v3.3-5", "3.3.005"), Layers(signed_low), rules, 0.0).build == signed_low
    assert "not signed by a key v3.3-5 trusts" in decide(ModuleFacts("C", "v3.3-5", "3.3.005"), Layers(CHANNEL),
                                                        rules, 0.0).why  # fmt: skip


# -- the invariants, over random mixes -----------------------------------------------------------------------

builds = st.builds(
    BuildFacts,
    sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
    version=st.sampled_from(VERSIONS),
    size=st.sampled_from(SIZES),
    products=st.frozensets(st.sampled_from(PRODUCTS), min_size=1),
    signers=st.frozensets(st.sampled_from(KEYS)),
    secure_version=st.integers(0, 3),
)
one_product_rules = st.builds(
    ProductRules,
    st.frozensets(st.sampled_from(KEYS)),
    st.integers(0, 3),
    st.dictionaries(st.sampled_from(VERSIONS), st.integers(1, 3)),
)
rules_strategy = st.dictionaries(st.sampled_from(PRODUCTS), one_product_rules)
Situation = tuple[ModuleFacts, Layers, dict[str, ProductRules]]


def broken(offered: BuildFacts, module: ModuleFacts, rules: dict[str, ProductRules]) -> list[str]:
    """Which of invariants a-e the offered build breaks for the module (written out independently)."""
    product_rules = rules.get(module.product, ProductRules())
    slot = 0x700000 if module.product.endswith("-5") else 0x400000
    floor = max(product_rules.min_secure_version, product_rules.secure_by_version.get(module.version, 0))
    broken = {
        "a": module.product not in offered.products,
        "b": (offered.size // SECTOR + 1) * SECTOR > slot,
        "c": bool(product_rules.trusted) and not (product_rules.trusted & offered.signers),
        "d": offered.sha256 in module.failed,
        "e": offered.secure_version < floor,
    }
    return [name for name, bad in broken.items() if bad]


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    pool = draw(st.lists(builds, min_size=1, max_size=6, unique_by=lambda b: b.sha256))
    maybe = st.one_of(st.none(), st.sampled_from(pool))
    rollout = None
    to = draw(maybe)
    if to is not None:
        threshold = draw(st.sampled_from((0, HASH_SPACE // 2, HASH_SPACE)))
        state = draw(st.sampled_from((RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED)))
        rollout = RolloutFacts(rollout_of(to, threshold=threshold, state=state), to)
    waypoints = sorted(draw(st.lists(st.sampled_from(pool), max_size=3, unique=True)), key=lambda b: b.version)
    layers = Layers(draw(maybe), rollout, draw(maybe), tuple(waypoints), draw(maybe))
    failed = draw(st.frozensets(st.sampled_from([b.sha256 for b in pool])))
    module = ModuleFacts(draw(st.sampled_from(("", "CAR1", "CAR2", "CAR3"))), draw(st.sampled_from(PRODUCTS)),
                         draw(st.sampled_from(VERSIONS)), failed)  # fmt: skip
    return module, layers, draw(rules_strategy)


@settings(max_examples=600, deadline=None)
@given(situations())
def test_every_offer_keeps_every_invariant(situation: Situation) -> None:
    module, layers, rules = situation
    offer = decide(module, layers, rules, 1_800_000_000.0)
    candidates = [layers.channel, layers.pin, layers.assignment, *layers.waypoints]
    candidates += [layers.rollout.build] if layers.rollout else []
    if offer.build is not None:
        assert broken(offer.build, module, rules) == [], offer
        assert offer.build in candidates  # never a build no layer named
    if layers.pin is not None:
        if broken(layers.pin, module, rules):
            assert "pin skipped: " in offer.why  # a pin that cannot be served is skipped, and why says so
        else:
            assert offer.build == layers.pin and offer.why == "pinned"  # a valid pin always wins
    channel_ok = layers.channel is not None and not broken(layers.channel, module, rules)
    if offer.build is None:
        assert not channel_ok  # nothing only when the channel's own build cannot be offered either
        assert offer.why.startswith("nothing")


@settings(max_examples=300, deadline=None)
@given(situations())
def test_the_decision_is_a_function_of_its_inputs(situation: Situation) -> None:
    module, layers, rules = situation
    assert decide(module, layers, rules, 5.0) == decide(module, layers, rules, 5.0)
    # Failing on a build can only take offers away, never add the failed build.
    worse = ModuleFacts(module.vehicle_id, module.product, module.version,
                        module.failed | {b.sha256 for b in (layers.channel, layers.pin) if b})  # fmt: skip
    offer = decide(worse, layers, rules, 5.0)
    assert offer.build is None or offer.build.sha256 not in worse.failed


def test_waypoints_only_between_what_runs_and_what_comes() -> None:
    assert buildverscmp("3.3.006", "3.3.007") < 0  # the fixture's premise
    module = ModuleFacts("CAR1", "v3.3-5", "3.3.006")
    bad_waypoint = build("3.3.007", products=("v3.3",), name="bad-w")
    offer = decide(module, Layers(CHANNEL, waypoints=(bad_waypoint,)), {}, 0.0)
    assert offer.build == CHANNEL and "waypoint 3.3.007 skipped: build is for v3.3" in offer.why

"""The rollout rules on their own: cohort determinism, thresholds, halt arithmetic, when steps advance."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovota.server.fleet.agent import parse_user_agent
from ovota.server.fleet.policy import (
    ACTIVE_STATES,
    HASH_SPACE,
    Counts,
    Limits,
    PolicyError,
    cohort_hash,
    halt_reason,
    may_advance,
    parse_duration,
    parse_percent,
    parse_steps,
    step_halt_reason,
    step_threshold,
)
from ovota.server.store.schema import ACTIVE_ROLLOUT_STATES


def test_cohort_hash_is_a_function_of_rollout_and_vehicle() -> None:
    assert cohort_hash(1, "DEMO") == cohort_hash(1, "DEMO")
    assert cohort_hash(1, "DEMO") != cohort_hash(2, "DEMO")
    assert cohort_hash(1, "DEMO") != cohort_hash(1, "DEMO2")
    assert 0 <= cohort_hash(7, "") < HASH_SPACE


@given(
    st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=300, unique=True),
    st.lists(st.integers(1, 99), min_size=1, max_size=5, unique=True),
    st.integers(1, 1000),
)
def test_steps_only_add_modules_and_hit_their_share(ids: list[str], percents: list[int], rollout: int) -> None:
    hashes = sorted(cohort_hash(rollout, v) for v in ids)
    threshold = 0
    members: set[str] = set()
    for percent in sorted(percents):
        threshold = step_threshold(percent, threshold, hashes)
        now_in = {v for v in ids if cohort_hash(rollout, v) < threshold}
        assert members <= now_in  # a step only adds modules
        members = now_in
        assert len(members) == -(-len(ids) * percent // 100)  # the share of the known fleet, rounded up
    assert step_threshold(100, threshold, hashes) == HASH_SPACE


def test_exact_share_of_known_modules() -> None:
    ids = [f"SIM{i:05d}" for i in range(1, 1001)]
    hashes = sorted(cohort_hash(3, v) for v in ids)
    threshold = 0
    for percent in (1, 10, 50):
        threshold = step_threshold(percent, threshold, hashes)
        assert sum(h < threshold for h in hashes) == 10 * percent


def test_no_known_modules_uses_the_share_of_the_hash_space() -> None:
    assert step_threshold(10, 0, []) == HASH_SPACE // 10


def test_halt_arithmetic() -> None:
    limits = Limits(halt_failed=0.05, halt_silent=0.20, min_sample=20)
    assert halt_reason(Counts(updated=19, failed=0), limits) is None
    assert halt_reason(Counts(updated=10, failed=9), limits) is None  # 19 attempts: below the sample
    reason = halt_reason(Counts(updated=19, failed=1), limits)  # exactly 5%
    assert reason == "failed 1 of 20 updated or failed (5.0%), limit 5.0%; 20 attempts"
    assert halt_reason(Counts(updated=39, failed=1), limits) is None  # 2.5%
    assert halt_reason(Counts(updating=16, updated=0, silent=4), limits) == (
        "silent 4 of 20 attempts (20.0%), limit 20.0%"
    )
    assert halt_reason(Counts(updating=17, silent=3), limits) is None
    # After a resume only what came later counts.
    assert halt_reason(Counts(updated=40, failed=5).since(Counts(updated=20, failed=5)), limits) is None


def test_steps_advance_on_interval_and_evidence() -> None:
    limits = Limits(min_sample=20)
    assert not may_advance(Counts(updated=30), 30, limits, elapsed=3599, interval=3600)
    assert may_advance(Counts(updated=30), 30, limits, elapsed=3600, interval=3600)
    assert not may_advance(Counts(updating=5, updated=10), 15, limits, elapsed=7200, interval=3600)
    assert may_advance(Counts(updated=10), 10, limits, elapsed=7200, interval=3600)  # every one of the step's
    assert may_advance(Counts(updating=5, updated=15, failed=0, silent=5), 25, limits, elapsed=7200, interval=3600)


def test_a_small_step_halts_once_all_its_modules_reported() -> None:
    limits = Limits(halt_failed=0.05, min_sample=20)
    assert step_halt_reason(Counts(updating=2, updated=7, failed=1), 10, limits) is None  # not all reported
    reason = step_halt_reason(Counts(updated=8, failed=2), 10, limits)
    assert reason == (
        "failed 2 of 10 updated or failed (20.0%), limit 5.0%; every one of the step's 10 modules reported"
    )
    assert step_halt_reason(Counts(updated=10), 10, limits) is None
    assert step_halt_reason(Counts(updated=20, failed=5), 25, limits) is None  # big enough: the usual rule


def test_a_step_widens_only_with_evidence() -> None:
    limits = Limits(halt_failed=0.05, min_sample=20)
    # Nobody offered the build has reported (all offline), or the step has nobody at all: it waits.
    assert not may_advance(Counts(), 10, limits, elapsed=10**6, interval=3600)
    assert not may_advance(Counts(), 0, limits, elapsed=10**6, interval=3600)
    assert not may_advance(Counts(updating=10), 10, limits, elapsed=10**6, interval=3600)
    # 2 of 10 failed is 20% against a 5% limit: too few attempts to halt, but no reason to widen either.
    assert not may_advance(Counts(updated=8, failed=2), 10, limits, elapsed=10**6, interval=3600)
    assert may_advance(Counts(updated=10), 10, limits, elapsed=10**6, interval=3600)
    assert may_advance(Counts(updated=8, failed=2), 10, limits, elapsed=10**6, interval=3600, resumed=True)
    # With more modules offered than min_sample, min_sample outcomes are enough.
    assert may_advance(Counts(updating=80, updated=20), 100, limits, elapsed=10**6, interval=3600)
    assert not may_advance(Counts(updating=81, updated=19), 100, limits, elapsed=10**6, interval=3600)


def test_settings_parsing() -> None:
    assert parse_steps("1,10,50,100") == (1, 10, 50, 100)
    assert parse_steps("100") == (100,)
    assert parse_duration("1d") == 86400 and parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    assert parse_percent("5%") == pytest.approx(0.05) and parse_percent("20") == pytest.approx(0.2)
    for bad in ("10,1,100", "1,10", "0,100", "a,b", "1,1,100"):
        with pytest.raises(PolicyError, match="steps"):
            parse_steps(bad)
    for bad in ("1w", "d", "-1d", ""):
        with pytest.raises(PolicyError, match="duration"):
            parse_duration(bad)
    for bad in ("0%", "101", "x"):
        with pytest.raises(PolicyError, match="percentage"):
            parse_percent(bad)


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (
            "ovms/v3.3-5 (DEMO 3.3.006/ota_0/main (build idf v3.3.4-854-g9063c8662c May 13 2026 20:13:48, "
            "product v3.3-5))",
            ("v3.3-5", "DEMO", "3.3.006", "ota_0", "main"),
        ),
        (
            "ovms/v3.3 ( 3.3.005-925-g3e67d4e6d-dirty/factory/edge (build idf v3.3.4 Apr  7 2018 10:00:00))",
            ("v3.3", "", "3.3.005-925-g3e67d4e6d-dirty", "factory", "edge"),
        ),
        (
            "ovms/v3.1 (My Car 3.2.016/ota_1/eap (build idf v3.3 Jan  1 2021 00:00:00))",
            ("v3.1", "My Car", "3.2.016", "ota_1", "eap"),
        ),
        ("curl/8.5.0", None),
        ("ovms/v3.3-5 (DEMO)", None),
    ],
)
def test_user_agents(agent: str, expected: tuple[str, ...] | None) -> None:
    parsed = parse_user_agent(agent)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert (parsed.product, parsed.vehicle_id, parsed.version, parsed.partition, parsed.tag) == expected


def test_the_store_knows_which_rollout_states_are_active() -> None:
    # The store refuses to move a channel with an active rollout; it names those states itself.
    assert ACTIVE_ROLLOUT_STATES == ACTIVE_STATES

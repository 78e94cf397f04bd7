"""What holds a rollout's next step (``fleet.progress.next_step``): its invariants over random facts, checked
against the decider's own rule (``policy.may_advance``), and a few cases written out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ovota.server.fleet.policy import Counts, Limits, RolloutState, may_advance
from ovota.server.fleet.progress import StepFacts, describe, next_step

NOW = 1_800_000_000.0
counts = st.builds(Counts, *(st.integers(0, 30) for _ in range(4)))
facts = st.builds(
    StepFacts,
    state=st.sampled_from(list(RolloutState)),
    last_step=st.booleans(),
    step_started=st.floats(NOW - 10 * 86400, NOW),
    state_since=st.floats(NOW - 10 * 86400, NOW),
    interval=st.sampled_from([0.0, 600.0, 3600.0, 86400.0]),
    elapsed=st.floats(0, 3 * 86400),
    window_open=st.booleans(),
    waiting=st.integers(0, 3),
    step=counts,
    offered=st.integers(0, 40),
    limits=st.builds(Limits, st.sampled_from([0.05, 0.5]), st.just(0.2), st.integers(1, 30)),
    resumed=st.booleans(),
    now=st.just(NOW),
)


@given(facts)
def test_what_holds_the_next_step_keeps_its_invariants(f: StepFacts) -> None:
    step = next_step(f)
    if not f.state.active:
        assert step is None
        return
    assert step is not None
    if f.state in (RolloutState.PAUSED, RolloutState.HALTED):
        assert (step.holds, step.due, step.since) == (f.state.value, None, f.state_since)
        return
    moves = f.waiting == 0 and may_advance(f.step, f.offered, f.limits, f.elapsed, f.interval, f.resumed)
    assert (step.holds == "") == moves  # empty exactly when the decider would move the rollout now
    if step.due is not None:
        assert step.due >= f.now
        assert step.holds == "" or step.holds.startswith("the step interval")  # time alone holds it
    else:
        assert step.holds and step.since == f.step_started
    assert describe(step, lambda t: f"{t:.0f}").startswith("Next: ")


def test_the_cases_an_operator_meets() -> None:
    base = StepFacts(RolloutState.RUNNING, False, NOW - 3600, NOW - 3600, 86400, 3600, True, 0, Counts(), 10,
                     Limits(0.05, 0.2, 20), False, NOW)  # fmt: skip
    due = next_step(base)
    assert due is not None and due.due == NOW + 82800 and due.holds == "the step interval: the next step is due in 23h"
    closed = next_step(StepFacts(**{**base.__dict__, "window_open": False}))
    assert closed is not None and closed.holds.startswith("window closed: 23h of the step interval left")
    thin = next_step(StepFacts(**{**base.__dict__, "elapsed": 90000, "step": Counts(updated=3)}))
    assert thin is not None and thin.holds == "sample too small: 3 of 10 outcomes from the step's modules"
    rated = next_step(StepFacts(**{**base.__dict__, "elapsed": 90000, "waiting": 2}))
    assert rated is not None and rated.holds == "the rate: 2 of the step's modules not offered the build yet"
    ready = next_step(StepFacts(**{**base.__dict__, "elapsed": 90000, "step": Counts(updated=10), "last_step": True}))
    assert (
        ready is not None
        and ready.holds == ""
        and describe(ready, str) == "Next: due now (at the server's next evaluation)"
    )
    halted = next_step(StepFacts(**{**base.__dict__, "state": RolloutState.HALTED, "state_since": NOW - 60}))
    assert (
        halted is not None
        and describe(halted, lambda t: f"{NOW - t:.0f} s ago")
        == "Next: nothing while halted (since 60 s ago); resume to go on"
    )

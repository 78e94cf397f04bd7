"""What a rollout waits for before its next step (or, at its last, before it completes): the rule the server's
decisions follow (``decisions.RolloutDecider.evaluate``), turned around to say when and why, for ``rollout
status``, the API and the Rollouts page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ovota.server.fleet.policy import Counts, Limits, RolloutState


@dataclass(frozen=True)
class StepFacts:
    """What the next step depends on, read at ``now``."""

    state: RolloutState
    last_step: bool
    step_started: float
    state_since: float  # when it was paused or halted (the halt's time, else the rollout's last change)
    interval: float  # the step interval, in open window time
    elapsed: float  # window-open seconds since the step started
    window_open: bool
    waiting: int  # modules of the step a rate has not admitted yet
    step: Counts  # outcomes of the step's own modules
    offered: int  # the step's modules
    limits: Limits
    resumed: bool
    now: float


@dataclass(frozen=True)
class NextStep:
    """``holds``: what keeps the next step (or completion) from happening now, "" when it is due at the next
    evaluation; ``due``: when it will be due if nothing else holds it (None when that cannot be said: paused,
    halted, a closed window, too few outcomes); ``since``: since when it has been held."""

    holds: str
    due: float | None
    since: float

    def to_json(self) -> dict[str, object]:
        return {"holds": self.holds, "due": self.due, "since": self.since}


def next_step(facts: StepFacts) -> NextStep | None:
    """What the next step of an active rollout waits for; None for a rollout that has ended.

    Invariants (tests/test_progress.py): a paused or halted rollout is held by that, since it happened, with no
    due time; a due time is given only when time alone holds the step, and is never before ``now``; every other
    hold names its cause (a closed window, a rate, a sample too small, failures at the limit) and dates from the
    step's start; what ``holds`` is empty exactly when the decider would move the rollout at ``now``."""
    f = facts
    if not f.state.active:
        return None
    if f.state is RolloutState.PAUSED:
        return NextStep("paused", None, f.state_since)
    if f.state is RolloutState.HALTED:
        return NextStep("halted", None, f.state_since)
    what = "completion" if f.last_step else "the next step"
    left = f.interval - f.elapsed
    if left > 0:
        if not f.window_open:
            return NextStep(f"window closed: {_span(left)} of the step interval left, counted while open", None,
                            f.step_started)  # fmt: skip
        return NextStep(f"the step interval: {what} is due in {_span(left)}", f.now + left, f.step_started)
    if f.waiting:
        return NextStep(f"the rate: {f.waiting} of the step's modules not offered the build yet", None,
                        f.step_started)  # fmt: skip
    needed = max(1, min(f.limits.min_sample, f.offered))
    if f.step.outcomes < needed:
        return NextStep(f"sample too small: {f.step.outcomes} of {needed} outcomes from the step's modules", None,
                        f.step_started)  # fmt: skip
    decided = f.step.updated + f.step.failed
    if not f.resumed and decided and f.step.failed / decided >= f.limits.halt_failed:
        return NextStep(f"failures: {f.step.failed} of the step's {decided} outcomes failed (resume to overrule)",
                        None, f.step_started)  # fmt: skip
    return NextStep("", f.now, f.step_started)


def _span(seconds: float) -> str:
    minutes = int(seconds // 60) + (1 if seconds % 60 else 0)
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(p for p in parts if p) or "0m"


def describe(step: NextStep | None, when: Callable[[float], str]) -> str:
    """One line for a person, times written by ``when``; empty for a rollout that has ended."""
    if step is None:
        return ""
    if not step.holds:
        return "Next: due now (at the server's next evaluation)"
    if step.holds in ("paused", "halted"):
        return f"Next: nothing while {step.holds} (since {when(step.since)}); resume to go on"
    if step.due is not None:
        return f"Next: {step.holds} (at {when(step.due)})"
    return f"Next: held by {step.holds} (since {when(step.since)})"

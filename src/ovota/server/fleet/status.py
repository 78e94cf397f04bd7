"""What a rollout's status shows: per step, the known modules that joined at it and their states; the JSON
that ``rollout status``, the API and the notify URL report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ovota.server.fleet.cohorts import Cohorts
from ovota.server.fleet.policy import Counts, ModuleState
from ovota.server.fleet.rollouts import COUNTED, Rollout, Rollouts


@dataclass(frozen=True)
class StepStatus:
    percent: int
    cohort: int  # known modules that joined at this step
    pending: int
    counts: Counts


class RolloutStatus:
    """Reads what the status of a rollout shows, over the connection of ``rollouts``."""

    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts = rollouts
        self.cohorts = Cohorts(rollouts.db)

    def steps(self, rollout: Rollout) -> list[StepStatus]:
        """Per step reached: the known modules that joined at it, and their states."""
        known = self.cohorts.known(rollout)
        states = dict(
            self.rollouts.db.execute(
                "SELECT module, state FROM rollout_modules WHERE rollout = ?", (rollout.id,)
            ).fetchall()
        )
        result = []
        lower = 0
        for index, upper in enumerate(rollout.thresholds):
            members = [m for m, h in known if lower <= h < upper]
            per_state = {s: 0 for s in ModuleState}
            for module in members:
                per_state[ModuleState(states.get(module, ModuleState.PENDING.value))] += 1
            counts = Counts(*(per_state[s] for s in COUNTED))
            result.append(
                StepStatus(rollout.settings.steps[index], len(members), per_state[ModuleState.PENDING], counts)
            )
            lower = upper
        return result

    def summary(self, rollout: Rollout) -> dict[str, Any]:
        """The rollout as JSON: what ``rollout status``, the API and the notify URL report."""
        counts = self.rollouts.counts(rollout.id)
        settings = rollout.settings
        return {
            "id": rollout.id,
            "product": rollout.product,
            "tag": rollout.tag,
            "state": rollout.state.value,
            "reason": rollout.reason,
            "from": {"version": rollout.from_build.version, "sha256": rollout.from_build.sha256},
            "to": {"version": rollout.to_build.version, "sha256": rollout.to_build.sha256},
            "step": rollout.step + 1,
            "percent": rollout.percent,
            "steps": [
                {"percent": s.percent, "cohort": s.cohort, "pending": s.pending, **s.counts.__dict__}
                for s in self.steps(rollout)
            ],
            "counts": {**counts.__dict__, "attempted": counts.attempted},
            "settings": {
                "steps": list(settings.steps),
                "step_interval": settings.step_interval,
                "halt_failed": settings.limits.halt_failed,
                "halt_silent": settings.limits.halt_silent,
                "min_sample": settings.limits.min_sample,
                "watch": settings.watch,
                "grace": settings.grace,
                "notify_url": settings.notify_url,
                "voters_known_for": settings.voters_known_for,
            },
            "created": rollout.created,
            "updated": rollout.updated,
        }

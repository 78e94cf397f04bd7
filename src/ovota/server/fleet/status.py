"""What a rollout's status shows: per step, the known modules that joined at it and their states; the JSON
that ``rollout status``, the API and the notify URL report."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from ovota.server.fleet.admission import admissions
from ovota.server.fleet.cohorts import Cohorts
from ovota.server.fleet.explain import Explainer
from ovota.server.fleet.policy import HASH_SPACE, Counts, ModuleState, RolloutState
from ovota.server.fleet.progress import NextStep, StepFacts, next_step
from ovota.server.fleet.rollouts import COUNTED, Rollout, Rollouts


@dataclass(frozen=True)
class RolloutModule:
    """A module's part in a rollout: who it is, its state, what it ran before, when it received the new build
    (None while pending) and when it was last seen."""

    module: str
    vehicle_id: str
    state: str
    from_version: str
    received: float | None
    last_seen: float
    address: str
    step: int  # the step at which it joined the cohort (1-based)
    why: str = ""  # what it is offered now, and why (``offer.decide``)
    version: str = ""  # what it runs now


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
        """Per step reached: the known modules that joined at it, and their states (the same modules, in the same
        states, that ``modules`` lists)."""
        per_step = [{s: 0 for s in ModuleState} for _ in rollout.thresholds]
        for entry in self._entries(rollout):
            per_step[entry.step - 1][ModuleState(entry.state)] += 1
        return [
            StepStatus(
                rollout.settings.steps[index],
                sum(states.values()),
                states[ModuleState.PENDING],
                Counts(*(states[s] for s in COUNTED)),
            )
            for index, states in enumerate(per_step)
        ]

    def modules(self, rollout: Rollout, state: str | None = None, now: float | None = None) -> list[RolloutModule]:
        """The rollout's modules, by vehicle id: every voter of its target in the cohort so far (pending until it
        receives the new build), optionally only those in ``state``; with ``now``, why each gets what it gets."""
        found = [e for e in self._entries(rollout) if state in (None, e.state)]
        if now is not None:
            explainer = Explainer(self.rollouts, now)
            for index, entry in enumerate(found):
                offer = explainer.offer(rollout.product, rollout.tag, entry.module, entry.vehicle_id, entry.version)
                found[index] = replace(entry, why=f"{offer.version or 'nothing'}: {offer.why}" if offer else "")
        return sorted(found, key=lambda m: (m.vehicle_id, m.module))

    def _entries(self, rollout: Rollout) -> list[RolloutModule]:
        """Every voter of the rollout's target in its cohort so far, with its state and the step it joined at."""
        rows = self.rollouts.db.execute(
            "SELECT m.module, m.vehicle_id, m.version, m.last_seen, m.address, rm.state, rm.from_version, "
            "rm.received, rm.last_seen FROM modules m LEFT JOIN rollout_modules rm "
            "ON rm.module = m.module AND rm.rollout = ? WHERE m.product = ? AND m.tag = ? AND m.first_seen < ?",
            (rollout.id, rollout.product, rollout.tag, rollout.voters_seen_by),
        ).fetchall()
        targeted = None if rollout.settings.target.whole_channel else {m for m, _ in self.cohorts.known(rollout)}
        found = []
        for module, vehicle_id, version, seen, address, in_state, from_version, received, last_seen in rows:
            if targeted is not None and module not in targeted:
                continue
            place = self.cohorts.place(rollout.id, str(vehicle_id))
            step = next((i for i, t in enumerate(rollout.thresholds, 1) if place < t or t >= HASH_SPACE), None)
            if step is None:
                continue  # not (yet) in the cohort
            found.append(RolloutModule(
                str(module), str(vehicle_id), str(in_state or ModuleState.PENDING.value),
                str(from_version if in_state else version), float(received) if received else None,
                float(last_seen if in_state else seen), str(address), step, version=str(version),
            ))  # fmt: skip
        return found

    def next_step(self, rollout: Rollout, now: float) -> NextStep | None:
        """What the rollout's next step (or completion) waits for at ``now``; None once it has ended."""
        if not rollout.state.active:
            return None
        settings = rollout.settings
        return next_step(StepFacts(
            rollout.state, rollout.step == len(settings.steps) - 1, rollout.step_started,
            rollout.reason_at if rollout.state is RolloutState.HALTED and rollout.reason_at else rollout.updated,
            settings.step_interval, settings.schedule.open_seconds(rollout.step_started, now),
            settings.schedule.is_open(now), self.cohorts.step_waiting(rollout),
            self.cohorts.current_step_counts(rollout), self.cohorts.step_offered(rollout), settings.limits,
            rollout.baseline != Counts(), now,
        ))  # fmt: skip

    def summary(self, rollout: Rollout, now: float | None = None) -> dict[str, Any]:
        """The rollout as JSON: what ``rollout status``, the API and the notify URL report; with ``now``, what
        its next step waits for (``next``)."""
        counts = self.rollouts.counts(rollout.id)
        settings = rollout.settings
        following = self.next_step(rollout, now) if now is not None else None
        return {
            "id": rollout.id,
            "product": rollout.product,
            "tag": rollout.tag,
            "state": rollout.state.value,
            "reason": rollout.reason,
            "reason_at": rollout.reason_at or None,
            "from": {"version": rollout.from_build.version, "sha256": rollout.from_build.sha256},
            "to": {"version": rollout.to_build.version, "sha256": rollout.to_build.sha256},
            "step": rollout.step + 1,
            "percent": rollout.percent,
            "target": settings.target.describe(),
            "pacing": settings.schedule.describe() + (f"; {settings.rate.describe()}" if settings.rate else ""),
            "admitted": len(admissions(self.rollouts.db, rollout.id)) if settings.rate else None,
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
                **settings.target.to_json(),
                **json.loads(settings.pacing_json()),
            },
            "created": rollout.created,
            "updated": rollout.updated,
            **({"next": following.to_json()} if following is not None else {}),
        }

"""The server's own rollout decisions: mark silent modules, then halt, advance or complete each rollout as
its health says (rules in ``policy``).

Every decision is a conditional UPDATE on the rollout's row, so when several server processes evaluate the
same rollout, exactly one of them makes (and announces) each decision.
"""

from __future__ import annotations

import json

from ovota.server.fleet.admission import admit
from ovota.server.fleet.cohorts import Cohorts
from ovota.server.fleet.control import complete
from ovota.server.fleet.policy import Counts, RolloutState, halt_reason, may_advance, step_halt_reason
from ovota.server.fleet.rollouts import Decision, Rollout, Rollouts, log_event
from ovota.server.store.audit import SERVER


class RolloutDecider:
    """Evaluates rollouts over the connection of ``rollouts`` (the server's background connection)."""

    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts = rollouts
        self.repo = rollouts.repo
        self.cohorts = Cohorts(rollouts.db)
        self.admitted = 0  # modules the last evaluation admitted (rate-limited rollouts): answers to reload

    def evaluate(self, now: float) -> list[Decision]:
        """Mark silent modules, admit what rates allow, then halt, advance or complete each running rollout as
        its health says."""
        decisions = []
        self.admitted = 0
        for rollout in self.rollouts.tracked(now):
            self._mark_silent(rollout, now)
            counts = self.rollouts.counts(rollout.id)
            self._sample(rollout, counts, now)
            if rollout.state is not RolloutState.RUNNING:
                continue
            limits = rollout.settings.limits
            step = self.cohorts.current_step_counts(rollout)
            offered = self.cohorts.step_offered(rollout)
            resumed = rollout.baseline != Counts()  # resumed after a halt: health is judged afresh from then
            reason = halt_reason(counts.since(rollout.baseline), limits)
            if reason is None and not resumed:
                reason = step_halt_reason(step, offered, limits)
            if reason is not None:
                if self._transition(rollout, RolloutState.HALTED, now, reason):
                    decisions.append(Decision(self.rollouts.get(rollout.id), "halted", reason))
                continue
            self._admit(rollout, now)
            # Steps count window time only: a rollout never widens faster for its windows.
            elapsed = rollout.settings.schedule.open_seconds(rollout.step_started, now)
            if self.cohorts.step_waiting(rollout):
                continue
            if not may_advance(step, offered, limits, elapsed, rollout.settings.step_interval, resumed):
                continue
            decision = self._advance(rollout, now)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _mark_silent(self, rollout: Rollout, now: float) -> None:
        """Modules offered the build or updating with no check-in within ``watch`` become silent (a module that
        never comes back is never pending for ever)."""
        silent = (rollout.id, now, rollout.settings.watch)
        due = (
            "WHERE rollout = ? AND state IN ('updating', 'pending') "
            "AND ? - CASE WHEN received > last_seen THEN received ELSE last_seen END > ?"
        )
        if self.rollouts.db.execute(f"SELECT 1 FROM rollout_modules {due} LIMIT 1", silent).fetchone():
            with self.repo.transaction() as db:
                db.execute(f"UPDATE rollout_modules SET state = 'silent' {due}", silent)

    def _admit(self, rollout: Rollout, now: float) -> None:
        """Let in what a rate-limited rollout's current period allows."""
        if rollout.settings.rate is None or not rollout.settings.schedule.is_open(now):
            return
        candidates = [(m, h) for m, h in self.cohorts.known(rollout, voters=False) if h < rollout.threshold]
        if candidates:
            with self.repo.transaction() as db:
                admitted = admit(db, rollout, candidates, now)
                self.admitted += admitted
                if admitted:
                    log_event(db, rollout, now, SERVER, "admit", f"offered to {admitted} more modules (rate)")

    def _transition(self, rollout: Rollout, state: RolloutState, now: float, reason: str) -> bool:
        with self.repo.transaction() as db:
            changed = db.execute(
                "UPDATE rollouts SET state = ?, reason = ?, reason_at = ?, updated = ? "
                "WHERE id = ? AND state = ? AND step = ?",
                (state.value, reason, now, now, rollout.id, rollout.state.value, rollout.step),
            ).rowcount
            if changed:
                where = f"step {rollout.step + 1} ({rollout.percent}%)"
                log_event(db, rollout, now, SERVER, "halt", f"{state.value} at {where}: {reason}")
        return bool(changed)

    def _advance(self, rollout: Rollout, now: float) -> Decision | None:
        last = len(rollout.settings.steps) - 1
        step = min(rollout.step + 1, last)
        percent = rollout.settings.steps[step]
        # A paced rollout runs its 100% step too, at its rate and in its windows, and completes after it.
        if rollout.step == last or (percent >= 100 and not rollout.settings.paced):
            if complete(self.repo, rollout, now):
                return Decision(self.rollouts.get(rollout.id), "completed", f"{rollout.to_build.version} reached 100%")
            return None
        with self.repo.transaction() as db:
            threshold = self.cohorts.next_threshold(db, rollout, step)
            changed = db.execute(
                "UPDATE rollouts SET step = ?, step_started = ?, thresholds = ?, updated = ? "
                "WHERE id = ? AND state = ? AND step = ?",
                (step, now, json.dumps([*rollout.thresholds, threshold]), now, rollout.id, rollout.state.value,
                 rollout.step),
            ).rowcount  # fmt: skip
            if changed:
                log_event(db, rollout, now, SERVER, "advance", f"step {step + 1} ({percent}%)")
        if not changed:
            return None
        return Decision(self.rollouts.get(rollout.id), "advanced", f"step {step + 1} ({percent}%)")

    def _sample(self, rollout: Rollout, counts: Counts, now: float) -> None:
        """Keep the counts for the chart when they change."""
        last = self.rollouts.db.execute(
            "SELECT updating, updated, failed, silent FROM rollout_samples WHERE rollout = ? ORDER BY at DESC LIMIT 1",
            (rollout.id,),
        ).fetchone()
        if last is not None and tuple(last) == (counts.updating, counts.updated, counts.failed, counts.silent):
            return
        pending = max(0, self.cohorts.size(rollout) - counts.attempted)
        with self.repo.transaction() as db:
            db.execute(
                "INSERT INTO rollout_samples VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rollout.id, now, pending, counts.updating, counts.updated, counts.failed, counts.silent),
            )

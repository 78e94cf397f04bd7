"""Who is in a rollout's steps: cohort hashes of its target's known modules, and each step's threshold.

The rules (``policy.cohort_hash``, ``policy.step_threshold``) are pure; this module applies them to the
registry's modules. Hashes are computed once per (rollout, vehicle id) and kept in a bounded memo.
"""

from __future__ import annotations

from ovota.server.fleet.admission import admissions
from ovota.server.fleet.groups import InGroups
from ovota.server.fleet.policy import HASH_SPACE, Counts, cohort_hash, step_threshold
from ovota.server.fleet.rollouts import COUNTED, Rollout
from ovota.server.store.database import Database

MAX_MEMO = 1_000_000


class Cohorts:
    """Cohort membership over one database connection."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._hashes: dict[tuple[int, str], int] = {}  # (rollout, vehicle id) -> cohort hash
        self._size: tuple[tuple[int, int, int, int] | None, tuple[int, int, int]] = (None, (0, 0, 0))

    def place(self, rollout_id: int, vehicle_id: str) -> int:
        """The module's place in the rollout's hash space (HASH_SPACE for a module without a vehicle id)."""
        if not vehicle_id:
            return HASH_SPACE
        key = (rollout_id, vehicle_id)
        found = self._hashes.get(key)
        if found is None:
            if len(self._hashes) > MAX_MEMO:
                self._hashes.clear()
            found = self._hashes[key] = cohort_hash(rollout_id, vehicle_id)
        return found

    def known(self, rollout: Rollout, db: Database | None = None, voters: bool = True) -> list[tuple[str, int]]:
        """(module, hash) for every module of the rollout's target that votes in it (known before it started;
        with ``voters`` False, every one known), as ``db`` (default: this connection) sees the registry."""
        rows = (
            (db or self.db)
            .execute(
                "SELECT module, vehicle_id, version FROM modules WHERE product = ? AND tag = ? AND first_seen < ?",
                (rollout.product, rollout.tag, rollout.voters_seen_by if voters else float("inf")),
            )
            .fetchall()
        )
        target = rollout.settings.target
        if target.whole_channel:
            return [(str(m), self.place(rollout.id, str(v))) for m, v, _ in rows]
        group = InGroups(db or self.db, target.groups)
        new_version = rollout.to_build.version
        return [(str(m), self.place(rollout.id, str(v))) for m, v, version in rows
                if target.takes(str(v), str(version), group, new_version)]  # fmt: skip

    def next_threshold(self, db: Database, rollout: Rollout, step: int) -> int:
        """The threshold for ``step``: that share of the target's known modules (with a vehicle id), as ``db``
        (the caller's transaction) sees them."""
        known = sorted(h for _, h in self.known(rollout, db) if h < HASH_SPACE)
        previous = rollout.thresholds[-1] if rollout.thresholds else 0
        return step_threshold(rollout.settings.steps[step], previous, known)

    def size(self, rollout: Rollout) -> int:
        """Known modules in the cohort so far; recounted only when the fleet or the step changes."""
        return self._sizes(rollout)[0]

    def step_offered(self, rollout: Rollout) -> int:
        """Known modules that joined at the current step: those it offers the new build to."""
        return self._sizes(rollout)[1]

    def step_waiting(self, rollout: Rollout) -> int:
        """Known modules of the current step that a rate has not admitted yet (0 without a rate): a step widens
        only once all of its modules were offered the build, so a rate never makes a rollout widen faster."""
        return self._sizes(rollout)[2]

    def _sizes(self, rollout: Rollout) -> tuple[int, int, int]:
        (known,) = self.db.execute(
            "SELECT count(*) FROM modules WHERE product = ? AND tag = ? AND first_seen < ?",
            (rollout.product, rollout.tag, rollout.voters_seen_by),
        ).fetchone()
        (admitted,) = self.db.execute("SELECT count(*) FROM rollout_admissions WHERE rollout = ?",
                                      (rollout.id,)).fetchone()  # fmt: skip
        key = (rollout.id, rollout.threshold, int(known), int(admitted))
        if self._size[0] != key:
            lower = rollout.thresholds[-2] if len(rollout.thresholds) > 1 else 0
            known = self.known(rollout)
            cohort = sum(1 for _, h in known if h < rollout.threshold)
            step = sum(1 for _, h in known if lower <= h < rollout.threshold)
            waiting = 0
            if rollout.settings.rate is not None:  # only admitted modules are offered the build
                admitted = set(admissions(self.db, rollout.id))
                placed = [self.place(rollout.id, v) for v in admitted]
                cohort = min(cohort, len(placed))
                waiting = sum(1 for m, h in known if lower <= h < rollout.threshold and m not in admitted)
                step = sum(1 for h in placed if lower <= h < rollout.threshold)
            self._size = (key, (cohort, step, waiting))
        return self._size[1]

    def current_step_counts(self, rollout: Rollout) -> Counts:
        """States of the modules that joined at the current step (from the attempts only: cheap)."""
        lower = rollout.thresholds[-2] if len(rollout.thresholds) > 1 else 0
        rows = self.db.execute(
            "SELECT rm.state, m.vehicle_id FROM rollout_modules rm LEFT JOIN modules m ON m.module = rm.module "
            "WHERE rm.rollout = ?",
            (rollout.id,),
        ).fetchall()
        found: dict[str, int] = {}
        for state, vehicle_id in rows:
            position = self.place(rollout.id, str(vehicle_id or ""))
            if lower <= position < rollout.threshold or (position >= HASH_SPACE and rollout.threshold >= HASH_SPACE):
                found[str(state)] = found.get(str(state), 0) + 1
        return Counts(*(found.get(s.value, 0) for s in COUNTED))

"""Staged rollouts in the repository: start, pause, resume, abort, evaluate, and their status.

The rules live in ``rollout_policy``; this module keeps rollouts and each module's part in them in the
repository's database. Every decision (a step advance, a halt, completion) is a conditional UPDATE on
the rollout's row, so when several server processes evaluate the same rollout, exactly one of them
makes (and announces) each decision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ovota.server.database import Database
from ovota.server.repository import Build, NotFound, Repository, RepositoryError
from ovota.server.rollout_policy import (
    ACTIVE_STATES,
    HASH_SPACE,
    Counts,
    Limits,
    ModuleState,
    PolicyError,
    RolloutState,
    cohort_hash,
    halt_reason,
    may_advance,
    parse_duration,
    parse_percent,
    parse_steps,
    step_threshold,
)


@dataclass(frozen=True)
class RolloutSettings:
    steps: tuple[int, ...] = (1, 10, 50, 100)
    step_interval: float = 86400.0
    limits: Limits = field(default_factory=Limits)
    watch: float = 2 * 86400.0
    grace: float = 600.0
    notify_url: str = ""


@dataclass(frozen=True)
class Rollout:
    id: int
    product: str
    tag: str
    from_build: Build
    to_build: Build
    settings: RolloutSettings
    state: RolloutState
    step: int  # index into settings.steps
    step_started: float
    thresholds: tuple[int, ...]  # one per step reached so far
    reason: str
    baseline: Counts
    created: float
    updated: float

    @property
    def percent(self) -> int:
        return self.settings.steps[self.step]

    @property
    def threshold(self) -> int:
        return self.thresholds[-1]

    def in_cohort(self, vehicle_id: str) -> bool:
        """Whether a module is offered the new build at the current step (no id: only at 100%)."""
        if self.threshold >= HASH_SPACE:
            return True
        return bool(vehicle_id) and cohort_hash(self.id, vehicle_id) < self.threshold


@dataclass(frozen=True)
class StepStatus:
    percent: int
    cohort: int  # known modules that joined at this step
    pending: int
    counts: Counts


@dataclass(frozen=True)
class Decision:
    """A change one evaluation made, to announce (notify URL, logs)."""

    rollout: Rollout
    event: str  # "advanced", "halted", "completed"
    message: str


class RolloutError(RepositoryError):
    pass


_COLUMNS = (
    "id, product, tag, from_sha256, to_sha256, steps, step_interval, halt_failed, halt_silent, min_sample, watch, "
    "grace, notify_url, state, step, step_started, thresholds, reason, baseline, created, updated"
)


class Rollouts:
    """Rollouts over a repository's database; times are on the server's clock, passed in as ``now``."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.db = repo.db
        self._hashes: dict[tuple[int, str], int] = {}  # (rollout, vehicle id) -> cohort hash: computed once
        self._cohort_cache: tuple[tuple[int, int, int] | None, int] = (None, 0)

    def _hash(self, rollout_id: int, vehicle_id: str) -> int:
        key = (rollout_id, vehicle_id)
        found = self._hashes.get(key)
        if found is None:
            if len(self._hashes) > 1_000_000:
                self._hashes.clear()
            found = self._hashes[key] = cohort_hash(rollout_id, vehicle_id)
        return found

    # -- reading ------------------------------------------------------------------------------------

    def _row(self, row: tuple[Any, ...]) -> Rollout:
        (rid, product, tag, from_sha, to_sha, steps, interval, halt_failed, halt_silent, min_sample, watch, grace,
         notify_url, state, step, started, thresholds, reason, baseline, created, updated) = row  # fmt: skip
        limits = Limits(halt_failed, halt_silent, min_sample)
        settings = RolloutSettings(tuple(json.loads(steps)), interval, limits, watch, grace, notify_url)
        return Rollout(
            rid, product, tag, self.repo.build(from_sha), self.repo.build(to_sha), settings, RolloutState(state),
            step, started, tuple(json.loads(thresholds)), reason, Counts(**json.loads(baseline)), created, updated,
        )  # fmt: skip

    def get(self, rollout_id: int) -> Rollout:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        if row is None:
            raise NotFound(f"no rollout {rollout_id}")
        return self._row(row)

    def active(self, product: str, tag: str) -> Rollout | None:
        """The channel's running, paused or halted rollout, if any."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM rollouts WHERE product = ? AND tag = ? AND state IN (?, ?, ?) "
            "ORDER BY id DESC LIMIT 1",
            (product, tag, *ACTIVE_STATES),
        ).fetchone()
        return None if row is None else self._row(row)

    def current(self, product: str, tag: str) -> Rollout:
        """The channel's active rollout, else its latest one."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM rollouts WHERE product = ? AND tag = ? "
            "ORDER BY state IN (?, ?, ?) DESC, id DESC LIMIT 1",
            (product, tag, *ACTIVE_STATES),
        ).fetchone()
        if row is None:
            raise NotFound(f"no rollout for {product}/{tag}")
        return self._row(row)

    def all_active(self) -> list[Rollout]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE state IN (?, ?, ?) ORDER BY id", ACTIVE_STATES)
        return [self._row(r) for r in rows.fetchall()]

    def tracked(self, now: float) -> list[Rollout]:
        """Rollouts whose modules' reports still count: active ones, and completed ones for ``watch`` after
        completion (so the last step's outcomes are still known)."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM rollouts WHERE state IN (?, ?, ?) OR (state = ? AND ? - updated <= watch) "
            "ORDER BY id",
            (*ACTIVE_STATES, RolloutState.COMPLETED.value, now),
        )
        return [self._row(r) for r in rows.fetchall()]

    def every(self) -> list[Rollout]:
        return [self._row(r) for r in self.db.execute(f"SELECT {_COLUMNS} FROM rollouts ORDER BY id").fetchall()]

    def counts(self, rollout_id: int) -> Counts:
        rows = self.db.execute(
            "SELECT state, count(*) FROM rollout_modules WHERE rollout = ? GROUP BY state", (rollout_id,)
        ).fetchall()
        found = {str(state): int(n) for state, n in rows}
        return Counts(*(found.get(s.value, 0) for s in _COUNTED))

    def events(self, rollout_id: int) -> list[tuple[float, str]]:
        rows = self.db.execute(
            "SELECT at, message FROM rollout_events WHERE rollout = ? ORDER BY at, rowid", (rollout_id,)
        )
        return [(float(at), str(message)) for at, message in rows.fetchall()]

    def samples(self, rollout_id: int) -> list[tuple[float, int, int, int, int, int]]:
        rows = self.db.execute(
            "SELECT at, pending, updating, updated, failed, silent FROM rollout_samples WHERE rollout = ? ORDER BY at",
            (rollout_id,),
        )
        return [(float(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows.fetchall()]

    def steps(self, rollout: Rollout) -> list[StepStatus]:
        """Per step reached: the known modules that joined at it, and their states."""
        known = self._known_hashes(rollout)
        states = dict(
            self.db.execute("SELECT module, state FROM rollout_modules WHERE rollout = ?", (rollout.id,)).fetchall()
        )
        result = []
        lower = 0
        for index, upper in enumerate(rollout.thresholds):
            members = [m for m, h in known if lower <= h < upper]
            per_state = {s: 0 for s in ModuleState}
            for module in members:
                per_state[ModuleState(states.get(module, ModuleState.PENDING.value))] += 1
            counts = Counts(*(per_state[s] for s in _COUNTED))
            result.append(
                StepStatus(rollout.settings.steps[index], len(members), per_state[ModuleState.PENDING], counts)
            )
            lower = upper
        return result

    def _step_counts(self, rollout: Rollout) -> Counts:
        """States of the modules that joined at the current step (from the attempts only: cheap)."""
        lower = rollout.thresholds[-2] if len(rollout.thresholds) > 1 else 0
        rows = self.db.execute(
            "SELECT rm.state, m.vehicle_id FROM rollout_modules rm LEFT JOIN modules m ON m.module = rm.module "
            "WHERE rm.rollout = ?",
            (rollout.id,),
        ).fetchall()
        found: dict[str, int] = {}
        for state, vehicle_id in rows:
            position = self._hash(rollout.id, str(vehicle_id)) if vehicle_id else HASH_SPACE
            if lower <= position < rollout.threshold or (position >= HASH_SPACE and rollout.threshold >= HASH_SPACE):
                found[str(state)] = found.get(str(state), 0) + 1
        return Counts(*(found.get(s.value, 0) for s in _COUNTED))

    def _cohort_size(self, rollout: Rollout) -> int:
        """Known modules in the cohort so far; recounted only when the fleet or the step changes."""
        (known,) = self.db.execute(
            "SELECT count(*) FROM modules WHERE product = ? AND tag = ?", (rollout.product, rollout.tag)
        ).fetchone()
        key = (rollout.id, rollout.threshold, int(known))
        if self._cohort_cache[0] != key:
            size = sum(1 for _, h in self._known_hashes(rollout) if h < rollout.threshold)
            self._cohort_cache = (key, size)
        return self._cohort_cache[1]

    def _known_hashes(self, rollout: Rollout) -> list[tuple[str, int]]:
        rows = self.db.execute(
            "SELECT module, vehicle_id FROM modules WHERE product = ? AND tag = ?", (rollout.product, rollout.tag)
        ).fetchall()
        return [(str(m), self._hash(rollout.id, str(v)) if v else HASH_SPACE) for m, v in rows]

    # -- changing ------------------------------------------------------------------------------------

    def start(self, product: str, tag: str, build: Build, settings: RolloutSettings, now: float) -> Rollout:
        """Start rolling ``build`` out to the channel's modules, from the build the channel has now."""
        channel = self.repo.channel(product, tag)
        if channel.build.sha256 == build.sha256:
            raise RolloutError(f"{product}/{tag} already serves {build.version}")
        existing = self.active(product, tag)
        if existing is not None:
            raise RolloutError(
                f"{product}/{tag} already has a {existing.state} rollout ({existing.to_build.version}): abort it first"
            )
        self.repo.check_servable(build, product)
        with self.repo.transaction() as db:
            cursor = db.execute(
                f"INSERT INTO rollouts ({_COLUMNS.removeprefix('id, ')}) "
                f"VALUES ({', '.join('?' * 13)}, 0, ?, '[]', '', ?, ?, ?) RETURNING id",
                (product, tag, channel.build.sha256, build.sha256, json.dumps(list(settings.steps)),
                 settings.step_interval, settings.limits.halt_failed, settings.limits.halt_silent,
                 settings.limits.min_sample, settings.watch, settings.grace, settings.notify_url,
                 RolloutState.RUNNING.value, now, json.dumps(Counts().__dict__), now, now),
            )  # fmt: skip
            rollout_id = int(cursor.fetchone()[0])
            rollout = self._row(db.execute(f"SELECT {_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone())
            threshold = self._threshold(db, rollout, 0)
            db.execute("UPDATE rollouts SET thresholds = ? WHERE id = ?", (json.dumps([threshold]), rollout_id))
            first = f"step 1 ({settings.steps[0]}%)"
            _event(db, rollout_id, now, f"started: {channel.build.version} -> {build.version}, {first}")
        started = self.get(rollout_id)
        if started.threshold >= HASH_SPACE:  # a single 100% step: nothing to stage
            self._complete(started, now)
            return self.get(rollout_id)
        return started

    def _threshold(self, db: Database, rollout: Rollout, step: int) -> int:
        rows = db.execute(
            "SELECT vehicle_id FROM modules WHERE product = ? AND tag = ? AND vehicle_id != ''",
            (rollout.product, rollout.tag),
        ).fetchall()
        known = sorted(self._hash(rollout.id, str(v)) for (v,) in rows)
        previous = rollout.thresholds[-1] if rollout.thresholds else 0
        return step_threshold(rollout.settings.steps[step], previous, known)

    def _set_state(self, product: str, tag: str, allowed: Iterable[RolloutState], state: RolloutState, now: float,
                   message: str) -> Rollout:  # fmt: skip
        rollout = self.active(product, tag)
        if rollout is None:
            raise NotFound(f"no active rollout for {product}/{tag}")
        if rollout.state not in allowed:
            raise RolloutError(f"the rollout of {product}/{tag} is {rollout.state}: cannot {message}")
        with self.repo.transaction() as db:
            baseline = self.counts(rollout.id) if rollout.state is RolloutState.HALTED else rollout.baseline
            db.execute(
                "UPDATE rollouts SET state = ?, updated = ?, baseline = ?, "
                "reason = CASE WHEN ? THEN '' ELSE reason END WHERE id = ?",
                (state.value, now, json.dumps(baseline.__dict__), state is RolloutState.RUNNING, rollout.id),
            )
            _event(db, rollout.id, now, message)
        return self.get(rollout.id)

    def pause(self, product: str, tag: str, now: float) -> Rollout:
        return self._set_state(product, tag, [RolloutState.RUNNING], RolloutState.PAUSED, now, "pause")

    def resume(self, product: str, tag: str, now: float) -> Rollout:
        """Continue a paused or halted rollout; after a halt, health is judged afresh from here."""
        allowed = [RolloutState.PAUSED, RolloutState.HALTED]
        return self._set_state(product, tag, allowed, RolloutState.RUNNING, now, "resume")

    def abort(self, product: str, tag: str, now: float) -> Rollout:
        """End the rollout; the channel keeps (returns to) its previous build for every module not on the new one."""
        allowed = [RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED]
        return self._set_state(product, tag, allowed, RolloutState.ABORTED, now, "abort")

    def _complete(self, rollout: Rollout, now: float) -> bool:
        """Make the new build the channel's build; the rollout ends at its last (100%) step."""
        last = len(rollout.settings.steps) - 1
        thresholds = list(rollout.thresholds)
        if rollout.step < last:
            thresholds.append(HASH_SPACE)
        with self.repo.transaction() as db:
            changed = db.execute(
                "UPDATE rollouts SET state = ?, updated = ?, step = ?, thresholds = ?, step_started = ? "
                "WHERE id = ? AND state = ? AND step = ?",
                (RolloutState.COMPLETED.value, now, last, json.dumps(thresholds), now, rollout.id,
                 rollout.state.value, rollout.step),
            ).rowcount  # fmt: skip
            if changed:
                self.repo.point_in(db, rollout.product, rollout.tag, rollout.to_build, f"rollout {rollout.id}", now)
                _event(db, rollout.id, now, f"completed: {rollout.to_build.version} is the channel's build")
        return bool(changed)

    # -- what modules report --------------------------------------------------------------------------

    @staticmethod
    def record_download(db: Database, rollout: Rollout, module: str, from_version: str, now: float) -> None:
        """The module has received all of the new build's bytes: it is updating. A module that already
        failed or updated keeps that outcome (a failed one retries daily while it is offered the build);
        a silent one that shows up again is updating again."""
        db.execute(
            "INSERT INTO rollout_modules VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rollout, module) DO UPDATE SET "
            "received = CASE WHEN rollout_modules.state = 'silent' THEN excluded.received "
            "ELSE rollout_modules.received END, "
            "last_seen = excluded.last_seen, "
            "state = CASE WHEN rollout_modules.state = 'silent' THEN 'updating' ELSE rollout_modules.state END",
            (rollout.id, module, ModuleState.UPDATING.value, from_version, now, now),
        )

    @staticmethod
    def record_checkin(db: Database, rollout: Rollout, module: str, version: str, now: float) -> None:
        """A check-in of a module that received the build: running it means updated; running another
        version once the grace period has passed means failed (fell back, or never rebooted)."""
        if version == rollout.to_build.version:
            db.execute(
                "UPDATE rollout_modules SET state = 'updated', last_seen = ? WHERE rollout = ? AND module = ?",
                (now, rollout.id, module),
            )
        else:
            db.execute(
                "UPDATE rollout_modules SET last_seen = ?, state = CASE WHEN ? - received >= ? THEN 'failed' "
                "ELSE state END WHERE rollout = ? AND module = ?",
                (now, now, rollout.settings.grace, rollout.id, module),
            )

    # -- decisions -------------------------------------------------------------------------------------

    def evaluate(self, now: float) -> list[Decision]:
        """Mark silent modules, then halt, advance or complete each running rollout as its health says."""
        decisions = []
        for rollout in self.tracked(now):
            silent = (rollout.id, now, rollout.settings.watch)
            due = (
                "WHERE rollout = ? AND state = 'updating' "
                "AND ? - CASE WHEN received > last_seen THEN received ELSE last_seen END > ?"
            )
            if self.db.execute(f"SELECT 1 FROM rollout_modules {due} LIMIT 1", silent).fetchone():
                with self.repo.transaction() as db:
                    db.execute(f"UPDATE rollout_modules SET state = 'silent' {due}", silent)
            counts = self.counts(rollout.id)
            self._sample(rollout, counts, now)
            if rollout.state is not RolloutState.RUNNING:
                continue
            reason = halt_reason(counts.since(rollout.baseline), rollout.settings.limits)
            if reason is not None:
                if self._transition(rollout, RolloutState.HALTED, now, reason):
                    decisions.append(Decision(self.get(rollout.id), "halted", reason))
                continue
            elapsed = now - rollout.step_started
            current_step = self._step_counts(rollout)
            if not may_advance(current_step, rollout.settings.limits, elapsed, rollout.settings.step_interval):
                continue
            decision = self._advance(rollout, now)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _transition(self, rollout: Rollout, state: RolloutState, now: float, reason: str) -> bool:
        with self.repo.transaction() as db:
            changed = db.execute(
                "UPDATE rollouts SET state = ?, reason = ?, updated = ? WHERE id = ? AND state = ? AND step = ?",
                (state.value, reason, now, rollout.id, rollout.state.value, rollout.step),
            ).rowcount
            if changed:
                _event(db, rollout.id, now, f"{state.value} at step {rollout.step + 1} ({rollout.percent}%): {reason}")
        return bool(changed)

    def _advance(self, rollout: Rollout, now: float) -> Decision | None:
        step = rollout.step + 1
        percent = rollout.settings.steps[step]
        if percent >= 100:
            if self._complete(rollout, now):
                return Decision(self.get(rollout.id), "completed", f"{rollout.to_build.version} reached 100%")
            return None
        with self.repo.transaction() as db:
            threshold = self._threshold(db, rollout, step)
            changed = db.execute(
                "UPDATE rollouts SET step = ?, step_started = ?, thresholds = ?, updated = ? "
                "WHERE id = ? AND state = ? AND step = ?",
                (step, now, json.dumps([*rollout.thresholds, threshold]), now, rollout.id, rollout.state.value,
                 rollout.step),
            ).rowcount  # fmt: skip
            if changed:
                _event(db, rollout.id, now, f"step {step + 1} ({percent}%)")
        if not changed:
            return None
        return Decision(self.get(rollout.id), "advanced", f"step {step + 1} ({percent}%)")

    def _sample(self, rollout: Rollout, counts: Counts, now: float) -> None:
        """Keep the counts for the chart when they change."""
        last = self.db.execute(
            "SELECT updating, updated, failed, silent FROM rollout_samples WHERE rollout = ? ORDER BY at DESC LIMIT 1",
            (rollout.id,),
        ).fetchone()
        if last is not None and tuple(last) == (counts.updating, counts.updated, counts.failed, counts.silent):
            return
        pending = max(0, self._cohort_size(rollout) - counts.attempted)
        with self.repo.transaction() as db:
            db.execute(
                "INSERT INTO rollout_samples VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rollout.id, now, pending, counts.updating, counts.updated, counts.failed, counts.silent),
            )


_COUNTED = (ModuleState.UPDATING, ModuleState.UPDATED, ModuleState.FAILED, ModuleState.SILENT)


def _event(db: Database, rollout_id: int, now: float, message: str) -> None:
    db.execute("INSERT INTO rollout_events VALUES (?, ?, ?)", (rollout_id, now, message))


def parse_settings(
    steps: str = "1,10,50,100",
    step_interval: str = "1d",
    halt_failed: str = "5%",
    halt_silent: str = "20%",
    min_sample: int = 20,
    watch: str = "2d",
    grace: str = "10m",
    notify_url: str = "",
) -> RolloutSettings:
    """Settings as users write them (CLI options, API fields); PolicyError for anything unusable."""
    if min_sample < 1:
        raise PolicyError(f"invalid minimum sample {min_sample}: must be at least 1")
    if notify_url and not notify_url.startswith(("http://", "https://")):
        raise PolicyError(f"invalid notify URL {notify_url!r}: use http:// or https://")
    return RolloutSettings(
        parse_steps(steps),
        parse_duration(step_interval),
        Limits(parse_percent(halt_failed), parse_percent(halt_silent), min_sample),
        parse_duration(watch),
        parse_duration(grace),
        notify_url,
    )


def status_summary(rollouts: Rollouts, rollout: Rollout) -> dict[str, Any]:
    """The rollout as JSON: what ``rollout status``, the API and the notify URL report."""
    counts = rollouts.counts(rollout.id)
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
            for s in rollouts.steps(rollout)
        ],
        "counts": {**counts.__dict__, "attempted": counts.attempted},
        "settings": {
            "steps": list(rollout.settings.steps),
            "step_interval": rollout.settings.step_interval,
            "halt_failed": rollout.settings.limits.halt_failed,
            "halt_silent": rollout.settings.limits.halt_silent,
            "min_sample": rollout.settings.limits.min_sample,
            "watch": rollout.settings.watch,
            "grace": rollout.settings.grace,
            "notify_url": rollout.settings.notify_url,
        },
        "created": rollout.created,
        "updated": rollout.updated,
    }

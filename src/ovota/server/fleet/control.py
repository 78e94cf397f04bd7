"""The operator's changes to rollouts: start, pause, resume, abort; and completion, which moves the channel."""

from __future__ import annotations

import json
from collections.abc import Iterable

from ovota.server.fleet.cohorts import Cohorts
from ovota.server.fleet.groups import Groups, InGroups, members
from ovota.server.fleet.overrides import assign
from ovota.server.fleet.policy import HASH_SPACE, Counts, RolloutState
from ovota.server.fleet.rollouts import COLUMNS, Rollout, RolloutError, Rollouts, RolloutSettings, log_event
from ovota.server.store.audit import audited
from ovota.server.store.channels import point_in
from ovota.server.store.errors import NotFound
from ovota.server.store.repository import Build, Repository


class RolloutControl:
    """Starts and steers rollouts over the connection of ``rollouts``."""

    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts = rollouts
        self.repo = rollouts.repo
        self.cohorts = Cohorts(rollouts.db)

    def start(self, product: str, tag: str, build: Build, settings: RolloutSettings, now: float,
              allow_empty: bool = False) -> Rollout:  # fmt: skip
        """Start rolling ``build`` out to the channel's modules, from the build the channel has now. A targeted
        rollout whose target matches no known module is refused unless ``allow_empty``."""
        with audited(self.repo.db, self.repo.actor, "rollout start", f"{product}/{tag}"):
            return self._start(product, tag, build, settings, now, allow_empty)

    def matching(self, product: str, tag: str, build: Build, settings: RolloutSettings, now: float) -> int:
        """How many modules of the channel the rollout's target takes among those that vote in a rollout started
        at ``now`` (the registry knew them before it, by ``voters_known_for``): the modules its steps count."""
        rows = self.repo.db.execute(
            "SELECT vehicle_id, version FROM modules WHERE product = ? AND tag = ? AND first_seen < ?",
            (product, tag, now - settings.voters_known_for),
        ).fetchall()
        target = settings.target
        if target.whole_channel:
            return len(rows)
        group = InGroups(self.repo.db, target.groups)
        return sum(1 for v, version in rows if target.takes(str(v), str(version), group, build.version))

    def _start(self, product: str, tag: str, build: Build, settings: RolloutSettings, now: float,
               allow_empty: bool) -> Rollout:  # fmt: skip
        channel = self.repo.channel(product, tag)
        if channel.build.sha256 == build.sha256:
            raise RolloutError(f"{product}/{tag} already serves {build.version}")
        existing = self.rollouts.active(product, tag)
        if existing is not None:
            raise RolloutError(
                f"{product}/{tag} already has a {existing.state} rollout ({existing.to_build.version}): abort it first"
            )
        self.repo.check_servable(build, product)
        Groups(self.repo).require(settings.target.groups)
        matched = self.matching(product, tag, build, settings, now)
        if not matched and not settings.target.whole_channel and not allow_empty:
            raise RolloutError(
                f"the target ({settings.target.describe()}) matches no module of {product}/{tag}: check it, or start "
                "it anyway with --allow-empty (API: allow_empty: true)"
            )
        with self.repo.transaction() as db:
            cursor = db.execute(
                f"INSERT INTO rollouts ({COLUMNS.removeprefix('id, ')}) "
                f"VALUES ({', '.join('?' * 13)}, 0, ?, '[]', '', ?, ?, ?, ?, 0, ?, ?) RETURNING id",
                (product, tag, channel.build.sha256, build.sha256, json.dumps(list(settings.steps)),
                 settings.step_interval, settings.limits.halt_failed, settings.limits.halt_silent,
                 settings.limits.min_sample, settings.watch, settings.grace, settings.notify_url,
                 RolloutState.RUNNING.value, now, json.dumps(Counts().__dict__), now, now, settings.voters_known_for,
                 settings.target_json(), settings.pacing_json()),
            )  # fmt: skip
            rollout_id = int(cursor.fetchone()[0])
            rollout = self.rollouts.row(
                db.execute(f"SELECT {COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
            )
            threshold = self.cohorts.next_threshold(db, rollout, 0)
            db.execute("UPDATE rollouts SET thresholds = ? WHERE id = ?", (json.dumps([threshold]), rollout_id))
            first = f"matches {matched} known module{'s' if matched != 1 else ''}; step 1 ({settings.steps[0]}%)"
            if not settings.target.whole_channel:
                first += f", for {settings.target.describe()}"
            if settings.schedule.windows:
                first += f", {settings.schedule.describe()}"
            if settings.rate:
                first += f", at most {settings.rate.describe()}"
            actor = self.repo.actor
            log_event(db, rollout, now, actor, "start", f"started: {channel.build.version} -> {build.version}, {first}")
        started = self.rollouts.get(rollout_id)
        if started.threshold >= HASH_SPACE and not settings.paced:  # a single 100% step: nothing to stage
            complete(self.repo, started, now)
            return self.rollouts.get(rollout_id)
        return started

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

    def act(self, action: str, product: str, tag: str, now: float) -> Rollout:
        """``pause``, ``resume`` or ``abort`` by name; NotFound for any other action."""
        with audited(self.repo.db, self.repo.actor, f"rollout {action}", f"{product}/{tag}"):
            change = {"pause": self.pause, "resume": self.resume, "abort": self.abort}.get(action)
            if change is None:
                raise NotFound(f"no rollout action {action!r}: use pause, resume or abort")
            return change(product, tag, now)

    def _set_state(self, product: str, tag: str, allowed: Iterable[RolloutState], state: RolloutState, now: float,
                   message: str) -> Rollout:  # fmt: skip
        rollout = self.rollouts.active(product, tag)
        if rollout is None:
            raise NotFound(f"no active rollout for {product}/{tag}")
        if rollout.state not in allowed:
            raise RolloutError(f"the rollout of {product}/{tag} is {rollout.state}: cannot {message}")
        with self.repo.transaction() as db:
            baseline = self.rollouts.counts(rollout.id) if rollout.state is RolloutState.HALTED else rollout.baseline
            # Resuming keeps the step and starts its interval again: the time paused or halted was no evidence.
            resumed = state is RolloutState.RUNNING
            db.execute(
                "UPDATE rollouts SET state = ?, updated = ?, baseline = ?, "
                "reason = CASE WHEN ? THEN '' ELSE reason END, step_started = CASE WHEN ? THEN ? ELSE step_started END "
                "WHERE id = ?",
                (state.value, now, json.dumps(baseline.__dict__), resumed, resumed, now, rollout.id),
            )
            log_event(db, rollout, now, self.repo.actor, message, message)
        return self.rollouts.get(rollout.id)


def complete(repo: Repository, rollout: Rollout, now: float) -> bool:
    """End the rollout at its last (100%) step: the new build becomes the channel's, or for a targeted rollout
    the build of each of its target's modules (assignments; the channel keeps its build). False if another
    process changed the rollout first."""
    last = len(rollout.settings.steps) - 1
    thresholds = list(rollout.thresholds)
    if rollout.step < last:
        thresholds.append(HASH_SPACE)
    with repo.transaction() as db:
        changed = db.execute(
            "UPDATE rollouts SET state = ?, updated = ?, step = ?, thresholds = ?, step_started = ? "
            "WHERE id = ? AND state = ? AND step = ?",
            (RolloutState.COMPLETED.value, now, last, json.dumps(thresholds), now, rollout.id,
             rollout.state.value, rollout.step),
        ).rowcount  # fmt: skip
        if changed and rollout.settings.target.whole_channel:
            point_in(
                db, repo.actor, rollout.product, rollout.tag, rollout.to_build.sha256, f"rollout {rollout.id}", now
            )
            log_event(db, rollout, now, repo.actor, "complete",
                      f"completed: {rollout.to_build.version} is the channel's build")  # fmt: skip
        elif changed:
            targeted = {m for m, h in Cohorts(db).known(rollout, db, voters=False) if h < HASH_SPACE}
            targeted |= members(db, rollout.settings.target.groups)
            count = assign(db, rollout.product, rollout.tag, targeted, rollout.to_build, rollout.id, now)
            log_event(db, rollout, now, repo.actor, "complete",
                      f"completed: {count} targeted modules assigned to {rollout.to_build.version}; "
                      "the channel keeps its build")  # fmt: skip
    return bool(changed)

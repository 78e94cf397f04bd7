"""Staged rollouts as the repository keeps them: their records, settings, and reading them back.

The rules live in ``policy``; who is in a step in ``cohorts``; what modules report in ``reports``; the
operator's changes in ``control``; the server's own decisions in ``decisions``; what status shows in
``status``. Times are on the server's clock, passed in as ``now``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ovota.server.fleet.policy import (
    ACTIVE_STATES,
    HASH_SPACE,
    Counts,
    Limits,
    ModuleState,
    PolicyError,
    RolloutState,
    cohort_hash,
    parse_duration,
    parse_percent,
    parse_steps,
)
from ovota.server.fleet.targeting import (
    Rate,
    Schedule,
    Target,
    parse_rate,
    parse_schedule,
    parse_target,
)
from ovota.server.store.audit import record
from ovota.server.store.database import Database
from ovota.server.store.errors import NotFound, RepositoryError
from ovota.server.store.repository import Build, Repository


@dataclass(frozen=True)
class RolloutSettings:
    steps: tuple[int, ...] = (1, 10, 50, 100)
    step_interval: float = 86400.0
    limits: Limits = field(default_factory=Limits)
    watch: float = 2 * 86400.0
    grace: float = 600.0
    notify_url: str = ""
    voters_known_for: float = 0.0  # modules vote if the registry knew them this long before the start
    target: Target = field(default_factory=Target)
    schedule: Schedule = field(default_factory=Schedule)
    rate: Rate | None = None

    @property
    def paced(self) -> bool:
        """Whether windows or a rate pace the rollout (its last step then runs like the others)."""
        return self.rate is not None or bool(self.schedule.windows)

    def target_json(self) -> str:
        return json.dumps(self.target.to_json())

    def pacing_json(self) -> str:
        rate = self.rate
        return json.dumps({"windows": [w.text for w in self.schedule.windows], "timezone": self.schedule.timezone,
                           "rate": rate.text if rate else "", "rate_growth": rate.growth if rate else 1.0})  # fmt: skip


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
    reason_at: float = 0.0  # when the reason (a halt's) was given

    @property
    def percent(self) -> int:
        return self.settings.steps[self.step]

    @property
    def threshold(self) -> int:
        return self.thresholds[-1]

    @property
    def voters_seen_by(self) -> float:
        """Modules first seen before this time vote (their outcomes count for health and steps)."""
        return self.created - self.settings.voters_known_for

    def place(self, vehicle_id: str) -> int:
        """The module's place in this rollout's hash space (past its end without a vehicle id)."""
        return cohort_hash(self.id, vehicle_id) if vehicle_id else HASH_SPACE


@dataclass(frozen=True)
class Decision:
    """A change one evaluation made, to announce (notify URL, logs)."""

    rollout: Rollout
    event: str  # "advanced", "halted", "completed"
    message: str


class RolloutError(RepositoryError):
    pass


COLUMNS = (
    "id, product, tag, from_sha256, to_sha256, steps, step_interval, halt_failed, halt_silent, min_sample, watch, "
    "grace, notify_url, state, step, step_started, thresholds, reason, baseline, created, updated, voters_known_for, "
    "reason_at, target, pacing"
)
MAX_SAMPLE = 1_000_000
MAX_SETTING = 256  # characters of a setting's text (steps, durations, versions, time zone, rate)
MAX_WINDOW = 64  # characters of one maintenance window ("Mon,Tue,Wed,Thu,Fri 22:00-05:00" is 30)
COUNTED = (ModuleState.UPDATING, ModuleState.UPDATED, ModuleState.FAILED, ModuleState.SILENT)


class Rollouts:
    """Reads rollouts and their modules' counts from a repository's database."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.db = repo.db

    def row(self, row: tuple[Any, ...]) -> Rollout:
        """A ``SELECT {COLUMNS}`` row as a Rollout."""
        (rid, product, tag, from_sha, to_sha, steps, interval, halt_failed, halt_silent, min_sample, watch, grace,
         notify_url, state, step, started, thresholds, reason, baseline, created, updated, known_for,
         reason_at, target, pacing) = row  # fmt: skip
        limits = Limits(halt_failed, halt_silent, min_sample)
        aim, pace = json.loads(target), json.loads(pacing)
        settings = RolloutSettings(
            tuple(json.loads(steps)), interval, limits, watch, grace, notify_url, known_for,
            parse_target(aim.get("groups", ()), aim.get("vehicles", ()), aim.get("versions", "")),
            parse_schedule(pace.get("windows", ()), pace.get("timezone", "UTC")),
            parse_rate(pace.get("rate", ""), float(pace.get("rate_growth", 1.0))),
        )  # fmt: skip
        return Rollout(
            rid, product, tag, self.repo.build(from_sha), self.repo.build(to_sha), settings, RolloutState(state),
            step, started, tuple(json.loads(thresholds)), reason, Counts(**json.loads(baseline)), created, updated,
            reason_at,
        )  # fmt: skip

    def get(self, rollout_id: int) -> Rollout:
        row = self.db.execute(f"SELECT {COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        if row is None:
            raise NotFound(f"no rollout {rollout_id}")
        return self.row(row)

    def active(self, product: str, tag: str) -> Rollout | None:
        """The channel's running, paused or halted rollout, if any."""
        row = self.db.execute(
            f"SELECT {COLUMNS} FROM rollouts WHERE product = ? AND tag = ? AND state IN (?, ?, ?) "
            "ORDER BY id DESC LIMIT 1",
            (product, tag, *ACTIVE_STATES),
        ).fetchone()
        return None if row is None else self.row(row)

    def current(self, product: str, tag: str) -> Rollout:
        """The channel's active rollout, else its latest one."""
        row = self.db.execute(
            f"SELECT {COLUMNS} FROM rollouts WHERE product = ? AND tag = ? "
            "ORDER BY state IN (?, ?, ?) DESC, id DESC LIMIT 1",
            (product, tag, *ACTIVE_STATES),
        ).fetchone()
        if row is None:
            raise NotFound(f"no rollout for {product}/{tag}")
        return self.row(row)

    def all_active(self) -> list[Rollout]:
        rows = self.db.execute(f"SELECT {COLUMNS} FROM rollouts WHERE state IN (?, ?, ?) ORDER BY id", ACTIVE_STATES)
        return [self.row(r) for r in rows.fetchall()]

    def tracked(self, now: float) -> list[Rollout]:
        """Rollouts whose modules' reports still count: active ones, and completed ones for ``watch`` after
        completion (so the last step's outcomes are still known)."""
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM rollouts WHERE state IN (?, ?, ?) OR (state = ? AND ? - updated <= watch) "
            "ORDER BY id",
            (*ACTIVE_STATES, RolloutState.COMPLETED.value, now),
        )
        return [self.row(r) for r in rows.fetchall()]

    def every(self) -> list[Rollout]:
        return [self.row(r) for r in self.db.execute(f"SELECT {COLUMNS} FROM rollouts ORDER BY id").fetchall()]

    def counts(self, rollout_id: int) -> Counts:
        """The rollout's modules per state."""
        rows = self.db.execute(
            "SELECT state, count(*) FROM rollout_modules WHERE rollout = ? GROUP BY state", (rollout_id,)
        ).fetchall()
        found = {str(state): int(n) for state, n in rows}
        return Counts(*(found.get(s.value, 0) for s in COUNTED))

    def events(self, rollout_id: int) -> list[tuple[float, str, str]]:
        """The rollout's log: (time, message, who), oldest first."""
        rows = self.db.execute(
            "SELECT at, message, actor FROM rollout_events WHERE rollout = ? ORDER BY at, rowid", (rollout_id,)
        )
        return [(float(at), str(message), str(actor)) for at, message, actor in rows.fetchall()]

    def samples(self, rollout_id: int) -> list[tuple[float, int, int, int, int, int]]:
        """(time, pending, updating, updated, failed, silent) whenever the counts changed, oldest first."""
        rows = self.db.execute(
            "SELECT at, pending, updating, updated, failed, silent FROM rollout_samples WHERE rollout = ? ORDER BY at",
            (rollout_id,),
        )
        return [(float(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows.fetchall()]


def log_event(db: Database, rollout: Rollout, now: float, actor: str, action: str, message: str) -> None:
    """Add a line to the rollout's log, and ``rollout <action>`` to the audit log (in the caller's transaction)."""
    db.execute("INSERT INTO rollout_events (rollout, at, message, actor) VALUES (?, ?, ?, ?)",
               (rollout.id, now, message, actor))  # fmt: skip
    record(db, actor, f"rollout {action}", f"{rollout.product}/{rollout.tag}", f"rollout {rollout.id}: {message}")


def parse_settings(
    steps: str = "1,10,50,100",
    step_interval: str = "1d",
    halt_failed: str = "5%",
    halt_silent: str = "20%",
    min_sample: int = 20,
    watch: str = "2d",
    grace: str = "10m",
    notify_url: str = "",
    voters_known_for: str = "0s",
    groups: Sequence[str] = (),
    vehicles: Sequence[str] = (),
    versions: str = "",
    windows: Sequence[str] = (),
    timezone: str = "UTC",
    rate: str = "",
    rate_growth: float = 1.0,
) -> RolloutSettings:
    """Settings as users write them (CLI options, API fields); PolicyError for anything unusable. Every text is
    checked for its length before it is parsed (MAX_SETTING characters, MAX_WINDOW a window): a megabyte of
    window text must cost nothing, on whatever thread parses it."""
    texts = {"steps": steps, "step_interval": step_interval, "halt_failed": halt_failed, "halt_silent": halt_silent,
             "watch": watch, "grace": grace, "voters_known_for": voters_known_for, "versions": versions,
             "timezone": timezone, "rate": rate}  # fmt: skip
    for name, text in [*texts.items(), *(("windows", w) for w in windows)]:
        limit = MAX_WINDOW if name == "windows" else MAX_SETTING
        if len(text) > limit:
            raise PolicyError(f"{name} is {len(text)} characters long: at most {limit}")
    if not 1 <= min_sample <= MAX_SAMPLE:
        raise PolicyError(f"invalid minimum sample {min_sample}: must be from 1 to {MAX_SAMPLE}")
    if len(notify_url) > 2048 or not notify_url.isprintable() or " " in notify_url:
        raise PolicyError("invalid notify URL: at most 2048 printable characters, no spaces")
    if notify_url and not notify_url.startswith(("http://", "https://")):
        raise PolicyError(f"invalid notify URL {notify_url!r}: use http:// or https://")
    return RolloutSettings(
        parse_steps(steps),
        parse_duration(step_interval),
        Limits(parse_percent(halt_failed), parse_percent(halt_silent), min_sample),
        parse_duration(watch),
        parse_duration(grace),
        notify_url,
        parse_duration(voters_known_for),
        parse_target(groups, vehicles, versions),
        parse_schedule(windows, timezone),
        parse_rate(rate, rate_growth),
    )

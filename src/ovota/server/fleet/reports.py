"""What modules report, applied to the rollouts they are in. Runs inside the registry's batch transaction, event
by event in the order the requests arrived.

- A module first *offered* the new build (an answer named it) gets its row, *pending*, with the version it ran
  then: recorded once, never overwritten.
- A module that has received all of the new build's bytes is *updating*.
- A check-in running the new build makes it *updated*, whether or not its download was recorded (a crash may
  have lost that), provided it is in the cohort and ran another version before.
- A check-in running another version once the grace period has passed since it received the build makes it
  *failed* (it fell back, or never rebooted); so does going back to an older version after running it.
- No check-in within ``watch`` after being offered or receiving it makes it *silent* (``decisions``).

Only modules the registry knew before the rollout started vote (``Rollout.voters_seen_by``): anyone can make up
vehicle ids, and ids first seen during a rollout would otherwise halt it (reporting the old version) or dilute
real failures (reporting the new one). They are served like any module; they just do not count."""

from __future__ import annotations

from collections.abc import Iterable

from ovota.formats.versions import buildverscmp
from ovota.server.fleet.events import CheckIn, Download
from ovota.server.fleet.groups import InGroups
from ovota.server.fleet.policy import ModuleState
from ovota.server.fleet.rollouts import Rollout
from ovota.server.store.database import Database

_VOTER = "EXISTS (SELECT 1 FROM modules WHERE module = ? AND first_seen < ?)"


def record_offer(db: Database, rollout: Rollout, module: str, from_version: str, now: float) -> None:
    """The module was offered the new build while running ``from_version``: pending, if it votes (the row is
    made once; what it came from is never overwritten)."""
    db.execute(
        f"INSERT INTO rollout_modules SELECT ?, ?, ?, ?, 0, ? WHERE {_VOTER} ON CONFLICT (rollout, module) DO NOTHING",
        (rollout.id, module, ModuleState.PENDING.value, from_version, now, module, rollout.voters_seen_by),
    )


def record_download(db: Database, rollout: Rollout, module: str, from_version: str, now: float) -> None:
    """The module has received all of the new build's bytes: it is updating, if it votes. A module that
    already failed or updated keeps that outcome; a pending or silent one is updating (again)."""
    db.execute(
        f"INSERT INTO rollout_modules SELECT ?, ?, ?, ?, ?, ? WHERE {_VOTER} "
        "ON CONFLICT (rollout, module) DO UPDATE SET "
        "received = CASE WHEN rollout_modules.state IN ('silent', 'pending') THEN excluded.received "
        "ELSE rollout_modules.received END, "
        "last_seen = CASE WHEN excluded.last_seen > rollout_modules.last_seen THEN excluded.last_seen "
        "ELSE rollout_modules.last_seen END, "  # never back, like the registry's (a clock behind its records)
        "state = CASE WHEN rollout_modules.state IN ('silent', 'pending') THEN 'updating' "
        "ELSE rollout_modules.state END",
        (rollout.id, module, ModuleState.UPDATING.value, from_version, now, now, module, rollout.voters_seen_by),
    )


def record_checkin(db: Database, rollout: Rollout, event: CheckIn, previous: str | None, in_cohort: bool) -> None:
    """A check-in of a module (``previous``: the version the registry had for it before this batch)."""
    version, now, new = event.agent.version, event.at, rollout.to_build.version
    row = db.execute("SELECT state, received FROM rollout_modules WHERE rollout = ? AND module = ?",
                     (rollout.id, event.module)).fetchone()  # fmt: skip
    if row is None:
        if version == new and in_cohort and previous not in (None, new):
            db.execute(
                f"INSERT INTO rollout_modules SELECT ?, ?, ?, ?, ?, ? WHERE {_VOTER} ON CONFLICT DO NOTHING",
                (rollout.id, event.module, ModuleState.UPDATED.value, previous, now, now, event.module,
                 rollout.voters_seen_by),
            )  # fmt: skip
        return
    state, received = ModuleState(str(row[0])), float(row[1])
    if version == new:
        state = ModuleState.UPDATED
    elif state in (ModuleState.UPDATING, ModuleState.SILENT) and received and now - received >= rollout.settings.grace:
        state = ModuleState.FAILED
    elif state is ModuleState.UPDATED and buildverscmp(version, new) < 0:
        state = ModuleState.FAILED  # went back after running it
    db.execute("UPDATE rollout_modules SET state = ?, last_seen = CASE WHEN ? > last_seen THEN ? ELSE last_seen END "
               "WHERE rollout = ? AND module = ?", (state.value, now, now, rollout.id, event.module))  # fmt: skip


def apply_reports(db: Database, tracked: Iterable[Rollout], events: Iterable[CheckIn | Download]) -> None:
    """Apply a batch's check-ins and downloads, in arrival order, to the ``tracked`` rollouts of their channels
    (call it before the batch's check-ins are written to the registry: it reads the versions modules ran)."""
    active = {(r.product, r.tag): r for r in tracked}
    if not active:
        return
    groups: dict[int, InGroups] = {}
    for event in events:
        rollout = active.get((event.product, event.tag))
        if rollout is None:
            continue
        if isinstance(event, Download):
            if event.completed and event.sha256 == rollout.to_build.sha256:
                record_download(db, rollout, event.module, event.agent.version, event.at)
            continue
        row = db.execute("SELECT version FROM modules WHERE module = ?", (event.module,)).fetchone()
        previous = None if row is None else str(row[0])
        in_cohort = False
        if event.agent.version == rollout.to_build.version and previous is not None:
            if rollout.id not in groups:
                groups[rollout.id] = InGroups(db, rollout.settings.target.groups)
            in_cohort = _in_cohort(rollout, event.agent.vehicle_id, previous, groups[rollout.id])
        record_checkin(db, rollout, event, previous, in_cohort)
        if event.offered == rollout.to_build.sha256 and event.agent.version != rollout.to_build.version:
            record_offer(db, rollout, event.module, event.agent.version, event.at)


def _in_cohort(rollout: Rollout, vehicle_id: str, version: str, group: InGroups) -> bool:
    """Whether a module running ``version`` is in the rollout's target and current cohort."""
    if not rollout.settings.target.takes(vehicle_id, version, group, rollout.to_build.version):
        return False
    return rollout.place(vehicle_id) < rollout.threshold

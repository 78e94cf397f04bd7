"""What modules report, applied to the rollouts they are in: a whole download of the new build makes a module
*updating*; its next check-in makes it *updated* (running the new build) or, after the grace period, *failed*.
Runs inside the registry's batch transaction, event by event in the order the requests arrived.

Only modules the registry knew before the rollout started vote (``Rollout.voters_seen_by``): anyone can make up
vehicle ids, and ids first seen during a rollout would otherwise halt it (reporting the old version) or dilute
real failures (reporting the new one). They are served like any module; they just do not count."""

from __future__ import annotations

from collections.abc import Iterable

from ovota.server.fleet.events import CheckIn, Download
from ovota.server.fleet.policy import ModuleState
from ovota.server.fleet.rollouts import Rollout
from ovota.server.store.database import Database


def record_download(db: Database, rollout: Rollout, module: str, from_version: str, now: float) -> None:
    """The module has received all of the new build's bytes: it is updating, if it votes. A module that
    already failed or updated keeps that outcome (a failed one retries daily while it is offered the build);
    a silent one that shows up again is updating again."""
    db.execute(
        "INSERT INTO rollout_modules SELECT ?, ?, ?, ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM modules WHERE module = ? AND first_seen < ?) "
        "ON CONFLICT (rollout, module) DO UPDATE SET "
        "received = CASE WHEN rollout_modules.state = 'silent' THEN excluded.received "
        "ELSE rollout_modules.received END, "
        "last_seen = excluded.last_seen, "
        "state = CASE WHEN rollout_modules.state = 'silent' THEN 'updating' ELSE rollout_modules.state END",
        (rollout.id, module, ModuleState.UPDATING.value, from_version, now, now, module, rollout.voters_seen_by),
    )


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


def apply_reports(db: Database, tracked: Iterable[Rollout], events: Iterable[CheckIn | Download]) -> None:
    """Apply a batch's check-ins and downloads, in arrival order, to the ``tracked`` rollouts of their channels."""
    active = {(r.product, r.tag): r for r in tracked}
    if not active:
        return
    for event in events:
        rollout = active.get((event.product, event.tag))
        if rollout is None:
            continue
        if isinstance(event, CheckIn):
            record_checkin(db, rollout, event.module, event.agent.version, event.at)
        elif event.completed and event.sha256 == rollout.to_build.sha256:
            record_download(db, rollout, event.module, event.agent.version, event.at)

"""What modules report, applied to the rollouts they are in: a whole download of the new build makes a module
*updating*; its next check-in makes it *updated* (running the new build) or, after the grace period, *failed*.
Runs inside the registry's batch transaction."""

from __future__ import annotations

from collections.abc import Iterable

from ovota.server.fleet.events import CheckIn, Download
from ovota.server.fleet.policy import ModuleState
from ovota.server.fleet.rollouts import Rollout
from ovota.server.store.database import Database


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


def apply_reports(db: Database, tracked: Iterable[Rollout], checkins: list[CheckIn], downloads: list[Download]) -> None:
    """Apply a batch's check-ins and downloads to the ``tracked`` rollouts of their channels."""
    active = {(r.product, r.tag): r for r in tracked}
    if not active:
        return
    # Check-ins first: a module that checks in and downloads in one batch is updating afterwards.
    for c in checkins:
        rollout = active.get((c.product, c.tag))
        if rollout is not None:
            record_checkin(db, rollout, c.module, c.agent.version, c.at)
    for d in downloads:
        rollout = active.get((d.product, d.tag))
        if rollout is not None and d.completed and d.sha256 == rollout.to_build.sha256:
            record_download(db, rollout, d.module, d.agent.version, d.at)

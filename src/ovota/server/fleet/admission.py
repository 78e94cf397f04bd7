"""Rate-limited rollouts: which modules the server has let in, a period's worth at a time.

With ``--rate N/h`` a module of the current step is offered the build only once admitted. One decider per
cluster admits, in cohort-hash order, the step's known target modules not yet admitted, while a window is open,
so that no period of window time (an hour for ``/h``, sliding) admits more than its allowance; the device path
serves from the admitted set. So the rate holds however many server processes answer, and a module once admitted
stays admitted.
"""

from __future__ import annotations

from collections.abc import Sequence

from ovota.server.fleet.rollouts import Rollout
from ovota.server.store.database import Database


def admissions(db: Database, rollout_id: int) -> list[str]:
    """The vehicle ids the rollout has admitted."""
    rows = db.execute("SELECT vehicle_id FROM rollout_admissions WHERE rollout = ?", (rollout_id,)).fetchall()
    return [str(v) for (v,) in rows]


def admit(db: Database, rollout: Rollout, candidates: Sequence[tuple[str, int]], now: float) -> int:
    """Admit what the current period still allows of ``candidates`` ((vehicle id, cohort hash) of the target's
    known modules), lowest hash first, in the caller's transaction; how many were admitted."""
    rate = rollout.settings.rate
    schedule = rollout.settings.schedule
    if rate is None or not schedule.is_open(now):
        return 0
    window_at = schedule.open_seconds(rollout.created, now)
    # A sliding period: whatever hour (of window time) one looks at, it admitted at most the allowance.
    (used,) = db.execute(
        "SELECT count(*) FROM rollout_admissions WHERE rollout = ? AND window_at > ?",
        (rollout.id, window_at - rate.period),
    ).fetchone()
    room = rate.allowance(rate.period_of(window_at)) - int(used)
    if room <= 0:
        return 0
    already = set(admissions(db, rollout.id))
    chosen = sorted((h, v) for v, h in candidates if h < rollout.threshold and v not in already)[:room]
    for _, vehicle_id in chosen:
        db.execute("INSERT INTO rollout_admissions VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                   (rollout.id, vehicle_id, now, window_at))  # fmt: skip
    return len(chosen)

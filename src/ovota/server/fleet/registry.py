"""The fleet registry: which module runs what, learned from the requests unchanged OVMS modules send.

OVMS's User-Agent is ``ovms/<product> (<vehicle id> <version>/<partition>/<tag> (build …))``. Each
``.ver`` or ``.bin`` request carrying it is a check-in; each ``.bin`` response is a download (build,
bytes, complete or not). Requests append to an in-memory batch; the server takes it every half second
and at a clean shutdown and writes it in one transaction, in a thread, so the request path never waits
for the database. A crash loses at most the batch not yet written.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ovota.server.fleet.agent import Agent
from ovota.server.fleet.attempts import DEFAULT_GRACE, apply_attempts
from ovota.server.fleet.events import CheckIn, Download
from ovota.server.fleet.reports import apply_reports
from ovota.server.fleet.rollouts import Rollout, Rollouts
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.repository import Repository

MAX_BUFFERED = 400_000  # events kept while the database cannot be written (about 100 MB at most)
DOWNLOADS_RETENTION = 30 * 86400.0

log = logging.getLogger("ovota.server")


@dataclass(frozen=True)
class Batch:
    events: list[CheckIn | Download]  # in arrival order
    anonymous: Counter[str]


class BatchFailed(Exception):
    """The database went away while a batch was written: ``remaining`` was not written (the rest was)."""

    def __init__(self, remaining: Batch, cause: DatabaseUnavailable) -> None:
        super().__init__(str(cause))
        self.remaining = remaining


class FleetRecorder:
    """Batches check-ins and downloads; ``write`` stores a batch and what it means for rollouts."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.rollouts = Rollouts(repo)
        self._events: list[CheckIn | Download] = []
        self._anonymous: Counter[str] = Counter()
        self.dropped = 0  # events no write could store (each logged)

    def check_in(self, agent: Agent, product: str, tag: str, address: str, at: float, offered: str = "") -> None:
        """A request from a module; ``offered``: the build the answer named to it."""
        self._events.append(CheckIn(agent.module_key(address), agent, product, tag, address, at, offered))

    def download(self, agent: Agent, product: str, tag: str, address: str, sha256: str, sent: int,
                 completed: bool, at: float) -> None:  # fmt: skip
        module = agent.module_key(address)
        self._events.append(Download(module, agent, product, tag, sha256, sent, completed, at))

    def anonymous(self, kind: str) -> None:
        """A request without a valid OVMS User-Agent: counted, not registered."""
        self._anonymous[kind] += 1

    def take(self) -> Batch | None:
        """The events so far, leaving an empty batch behind; None if there are none."""
        if not (self._events or self._anonymous):
            return None
        batch = Batch(self._events, self._anonymous)
        self._events, self._anonymous = [], Counter()
        return batch

    def restore(self, batch: Batch) -> None:
        """Put events that could not be written back in front of what came since. While the database is away,
        at most MAX_BUFFERED events are kept (the oldest go first)."""
        self._events = (batch.events + self._events)[-MAX_BUFFERED:]
        self._anonymous.update(batch.anonymous)

    @property
    def buffered(self) -> int:
        return len(self._events)

    def write(self, batch: Batch) -> None:
        """Write a batch and what it means for rollouts (may run in another thread). A batch that fails for any
        other reason than the database being away is split until the events that cannot be stored are alone;
        those are dropped and logged, the rest written. BatchFailed carries what was not written."""
        try:
            self._write(batch.events, batch.anonymous)
            return
        except DatabaseUnavailable as err:
            raise BatchFailed(batch, err) from None
        except Exception:
            pass
        self._write_halves(batch, 0, len(batch.events))
        try:
            self._write([], batch.anonymous)
        except DatabaseUnavailable as err:
            raise BatchFailed(Batch([], batch.anonymous), err) from None

    def _write_halves(self, batch: Batch, start: int, end: int) -> None:
        # Halves are written left to right, so when the database goes away everything before ``start`` is done.
        events = batch.events[start:end]
        try:
            self._write(events, Counter())
        except DatabaseUnavailable as err:
            raise BatchFailed(Batch(batch.events[start:], batch.anonymous), err) from None
        except Exception as err:
            if end - start > 1:
                middle = (start + end) // 2
                self._write_halves(batch, start, middle)
                self._write_halves(batch, middle, end)
            elif events:
                self.dropped += 1
                log.error("fleet registry: dropped an event it cannot store (%s): %r", err, events[0])

    def _write(self, events: list[CheckIn | Download], anonymous: Counter[str]) -> None:
        checkins = [e for e in events if isinstance(e, CheckIn)]
        with self.repo.transaction() as db:
            if events:
                # Before the check-ins are written: reports compare with the versions modules ran until now.
                tracked = self.rollouts.tracked(max(e.at for e in events))
                apply_attempts(db, events, _graces(tracked), self._version)
                apply_reports(db, tracked, events)
            db.executemany(
                "INSERT INTO modules VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (module) DO UPDATE SET "
                "vehicle_id = excluded.vehicle_id, product = excluded.product, tag = excluded.tag, "
                "version = excluded.version, partition = excluded.partition, address = excluded.address, "
                "last_seen = CASE WHEN excluded.last_seen > modules.last_seen THEN excluded.last_seen "
                "ELSE modules.last_seen END, checkins = modules.checkins + 1",
                [(c.module, c.agent.vehicle_id, c.product, c.tag, c.agent.version, c.agent.partition, c.address,
                  c.at, c.at) for c in checkins],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO module_versions VALUES (?, ?, ?, ?) ON CONFLICT (module, version) DO UPDATE SET "
                "last_seen = CASE WHEN excluded.last_seen > module_versions.last_seen THEN excluded.last_seen "
                "ELSE module_versions.last_seen END",
                [(c.module, c.agent.version, c.at, c.at) for c in checkins],
            )
            db.executemany(
                "INSERT INTO downloads (module, product, tag, sha256, bytes, completed, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(d.module, d.product, d.tag, d.sha256, d.sent, int(d.completed), d.at)
                 for d in events if isinstance(d, Download)],
            )  # fmt: skip
            db.executemany(
                "INSERT INTO request_counts VALUES (?, ?) "
                "ON CONFLICT (kind) DO UPDATE SET count = request_counts.count + excluded.count",
                list(anonymous.items()),
            )

    def _version(self, sha256: str) -> str:
        row = self.repo.db.execute("SELECT version FROM builds WHERE sha256 = ?", (sha256,)).fetchone()
        return "" if row is None else str(row[0])

    def prune(self, now: float, retention: float = DOWNLOADS_RETENTION) -> int:
        """Delete download records older than ``retention`` (rollout states and the modules table keep what
        rollouts need); the number deleted."""
        with self.repo.transaction() as db:
            return db.execute("DELETE FROM downloads WHERE at < ?", (now - retention,)).rowcount


def _graces(tracked: list[Rollout]) -> Callable[[str, str, str], float]:
    """The grace period of a build on a channel: its rollout's, else the default."""
    graces = {(r.product, r.tag, r.to_build.sha256): r.settings.grace for r in tracked}
    return lambda product, tag, sha256: graces.get((product, tag, sha256), DEFAULT_GRACE)

"""The fleet registry: which module runs what, learned from the requests unchanged OVMS modules send.

OVMS's User-Agent is ``ovms/<product> (<vehicle id> <version>/<partition>/<tag> (build …))``. Each
``.ver`` or ``.bin`` request carrying it is a check-in; each ``.bin`` response is a download (build,
bytes, complete or not). Requests append to an in-memory batch; the server takes it every half second
and at a clean shutdown and writes it in one transaction, in a thread, so the request path never waits
for the database. A crash loses at most the batch not yet written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ovota.server.fleet.agent import Agent
from ovota.server.fleet.events import CheckIn, Download
from ovota.server.fleet.reports import apply_reports
from ovota.server.fleet.rollouts import Rollouts
from ovota.server.store.database import Database
from ovota.server.store.repository import Repository


@dataclass(frozen=True)
class Module:
    """A row of the registry."""

    module: str
    vehicle_id: str
    product: str
    tag: str
    version: str
    partition: str
    address: str
    first_seen: float
    last_seen: float
    checkins: int


MAX_BUFFERED = 200_000  # events kept per kind while the database cannot be written (about 100 MB at most)


@dataclass(frozen=True)
class Batch:
    checkins: list[CheckIn]
    downloads: list[Download]
    anonymous: Counter[str]


class FleetRecorder:
    """Batches check-ins and downloads; ``write`` stores a batch and what it means for rollouts."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.rollouts = Rollouts(repo)
        self._checkins: list[CheckIn] = []
        self._downloads: list[Download] = []
        self._anonymous: Counter[str] = Counter()

    def check_in(self, agent: Agent, product: str, tag: str, address: str, at: float) -> None:
        self._checkins.append(CheckIn(agent.module_key(address), agent, product, tag, address, at))

    def download(self, agent: Agent, product: str, tag: str, address: str, sha256: str, sent: int,
                 completed: bool, at: float) -> None:  # fmt: skip
        module = agent.module_key(address)
        self._downloads.append(Download(module, agent, product, tag, sha256, sent, completed, at))

    def anonymous(self, kind: str) -> None:
        """A request without an OVMS User-Agent: counted, not registered."""
        self._anonymous[kind] += 1

    def take(self) -> Batch | None:
        """The events so far, leaving an empty batch behind; None if there are none."""
        if not (self._checkins or self._downloads or self._anonymous):
            return None
        batch = Batch(self._checkins, self._downloads, self._anonymous)
        self._checkins, self._downloads, self._anonymous = [], [], Counter()
        return batch

    def restore(self, batch: Batch) -> None:
        """Put a batch that could not be written back in front of what came since. While the database is
        away, at most MAX_BUFFERED check-ins and as many downloads are kept (the oldest go first)."""
        self._checkins = (batch.checkins + self._checkins)[-MAX_BUFFERED:]
        self._downloads = (batch.downloads + self._downloads)[-MAX_BUFFERED:]
        self._anonymous.update(batch.anonymous)

    @property
    def buffered(self) -> int:
        return len(self._checkins) + len(self._downloads)

    def write(self, batch: Batch) -> None:
        """Write a batch in one transaction, with what it means for rollouts (may run in another thread)."""
        self._write(batch.checkins, batch.downloads, batch.anonymous)

    def _write(self, checkins: list[CheckIn], downloads: list[Download], anonymous: Counter[str]) -> None:
        with self.repo.transaction() as db:
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
                "INSERT INTO downloads (module, product, tag, sha256, bytes, completed, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(d.module, d.product, d.tag, d.sha256, d.sent, int(d.completed), d.at) for d in downloads],
            )
            db.executemany(
                "INSERT INTO request_counts VALUES (?, ?) "
                "ON CONFLICT (kind) DO UPDATE SET count = request_counts.count + excluded.count",
                list(anonymous.items()),
            )
            if checkins or downloads:
                latest = max([c.at for c in checkins] + [d.at for d in downloads])
                apply_reports(db, self.rollouts.tracked(latest), checkins, downloads)


def list_modules(db: Database, product: str | None = None, tag: str | None = None) -> list[Module]:
    rows = db.execute(
        "SELECT * FROM modules WHERE (CAST(? AS TEXT) IS NULL OR product = ?) AND (CAST(? AS TEXT) IS NULL OR tag = ?) "
        "ORDER BY product, tag, module",
        (product, product, tag, tag),
    ).fetchall()
    return [Module(*row) for row in rows]


def module_json(module: Module) -> dict[str, object]:
    """A registry row as JSON (``fleet list --json`` and ``GET /api/v1/fleet``)."""
    return dict(module.__dict__)


def versions_in_use(db: Database, product: str | None = None, tag: str | None = None) -> list[tuple[str, int]]:
    """(version, modules running it), most modules first."""
    rows = db.execute(
        "SELECT version, count(*) AS n FROM modules "
        "WHERE (CAST(? AS TEXT) IS NULL OR product = ?) AND (CAST(? AS TEXT) IS NULL OR tag = ?) "
        "GROUP BY version ORDER BY n DESC, version",
        (product, product, tag, tag),
    ).fetchall()
    return [(str(v), int(n)) for v, n in rows]

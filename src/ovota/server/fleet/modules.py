"""Reading the fleet registry: modules filtered, searched, sorted and paged in the database (a fleet of 100,000
modules is never read whole for one page), versions in use, and one module's story."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovota.server.store.database import Database
from ovota.server.store.errors import RepositoryError

SORTS = {  # what a page may sort by: column expressions, never text from the request
    "vehicle": "m.vehicle_id, m.module",
    "version": "m.version, m.module",
    "channel": "m.product, m.tag, m.module",
    "address": "m.address, m.module",
    "first_seen": "m.first_seen, m.module",
    "last_seen": "m.last_seen, m.module",
    "checkins": "m.checkins, m.module",
}
MAX_PAGE = 1000
_COLUMNS = "m.module, m.vehicle_id, m.product, m.tag, m.version, m.partition, m.address, m.first_seen, m.last_seen, "
_COLUMNS += "m.checkins"


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


ROLLOUT_STATES = ("pending", "updating", "updated", "failed", "silent")
OVERRIDES = ("pinned", "assigned")
_IN_ROLLOUT = ("EXISTS (SELECT 1 FROM rollout_modules rm JOIN rollouts r ON r.id = rm.rollout WHERE rm.module = "
               "m.module AND rm.state = ? AND r.state IN ('running', 'paused', 'halted'))")  # fmt: skip
_OVERRIDDEN = {
    "pinned": "m.vehicle_id IN (SELECT vehicle_id FROM vehicle_pins)",
    "assigned": "EXISTS (SELECT 1 FROM assignments a WHERE a.vehicle_id = m.vehicle_id AND a.product = m.product "
    "AND a.tag = m.tag)",
}
FILTERS = ("product", "tag", "version", "state", "override", "q")  # the query parameters a filtered view takes


@dataclass(frozen=True)
class FleetQuery:
    """Which modules: of a product, tag and version, in a rollout ``state`` (in an active rollout), pinned or
    assigned (``override``), whose vehicle id, version or address contains ``search``."""

    product: str | None = None
    tag: str | None = None
    search: str = ""
    version: str | None = None
    state: str | None = None
    override: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> FleetQuery:
        """The query a page's or the API's parameters (``FILTERS``) ask for; RepositoryError naming a state or
        override that does not exist."""
        state, override = params.get("state") or None, params.get("override") or None
        if state is not None and state not in ROLLOUT_STATES:
            raise RepositoryError(f"unknown rollout state {state[:40]!r}: use {', '.join(ROLLOUT_STATES)}")
        if override is not None and override not in OVERRIDES:
            raise RepositoryError(f"unknown override {override[:40]!r}: use {', '.join(OVERRIDES)}")
        return cls(params.get("product") or None, params.get("tag") or None, (params.get("q") or "").strip(),
                   params.get("version") or None, state, override)  # fmt: skip

    def where(self, with_state: bool = True) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for column, value in (("m.product", self.product), ("m.tag", self.tag), ("m.version", self.version)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.state and with_state:
            clauses.append(_IN_ROLLOUT)
            params.append(self.state)
        if self.override:
            clauses.append(_OVERRIDDEN[self.override])
        if self.search:
            needle = "%" + self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            clauses.append("(m.vehicle_id LIKE ? ESCAPE '\\' OR m.version LIKE ? ESCAPE '\\' "
                           "OR m.address LIKE ? ESCAPE '\\')")  # fmt: skip
            params += [needle, needle, needle]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def state_counts(db: Database, query: FleetQuery) -> dict[str, int]:
    """How many of the modules the query matches (whatever state it asks for) are in each rollout state, in
    the active rollouts."""
    where, params = query.where(with_state=False)
    joined = f"{where} {'AND' if where else 'WHERE'} r.state IN ('running', 'paused', 'halted')"
    rows = db.execute(
        "SELECT rm.state, count(DISTINCT m.module) FROM modules m JOIN rollout_modules rm ON rm.module = m.module "
        f"JOIN rollouts r ON r.id = rm.rollout{joined} GROUP BY rm.state",
        params,
    ).fetchall()
    found = {str(state): int(n) for state, n in rows}
    return {state: found.get(state, 0) for state in ROLLOUT_STATES}


def list_modules(db: Database, product: str | None = None, tag: str | None = None) -> list[Module]:
    """Every module of a product and tag (all when None), by product, tag and key."""
    where, params = FleetQuery(product, tag).where()
    rows = db.execute(f"SELECT {_COLUMNS} FROM modules m{where} ORDER BY m.product, m.tag, m.module", params)
    return [Module(*row) for row in rows.fetchall()]


def page_modules(db: Database, query: FleetQuery, sort: str = "vehicle", descending: bool = False,
                 limit: int = 100, offset: int = 0) -> tuple[list[Module], int]:  # fmt: skip
    """One page of the matching modules, and how many match."""
    if sort not in SORTS:
        raise RepositoryError(f"cannot sort by {sort!r}: use {', '.join(SORTS)}")
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise RepositoryError(f"a page holds 1 to {MAX_PAGE} modules")
    where, params = query.where()
    order = ", ".join(f"{column} {'DESC' if descending else 'ASC'}" for column in SORTS[sort].split(", "))
    rows = db.execute(f"SELECT {_COLUMNS} FROM modules m{where} ORDER BY {order} LIMIT ? OFFSET ?",
                      [*params, limit, offset]).fetchall()  # fmt: skip
    (total,) = db.execute(f"SELECT count(*) FROM modules m{where}", params).fetchone()
    return [Module(*row) for row in rows], int(total)


def modules_after(db: Database, query: FleetQuery, after: str, limit: int) -> tuple[list[Module], int]:
    """Up to ``limit`` matching modules whose key sorts after ``after`` (keyset paging: stable while the
    registry grows), and how many match in all."""
    if not 1 <= limit <= MAX_PAGE:
        raise RepositoryError(f"limit must be from 1 to {MAX_PAGE}")
    where, params = query.where()
    keyed = f"{where} {'AND' if where else 'WHERE'} m.module > ?"
    rows = db.execute(f"SELECT {_COLUMNS} FROM modules m{keyed} ORDER BY m.module LIMIT ?",
                      [*params, after, limit]).fetchall()  # fmt: skip
    (total,) = db.execute(f"SELECT count(*) FROM modules m{where}", params).fetchone()
    return [Module(*row) for row in rows], int(total)


def module_json(module: Module) -> dict[str, object]:
    """A registry row as JSON (``fleet list --json`` and ``GET /api/v1/fleet``)."""
    return dict(module.__dict__)


def versions_in_use(db: Database, query: FleetQuery | None = None) -> list[tuple[str, int]]:
    """(version, modules running it), most modules first."""
    where, params = (query or FleetQuery()).where()
    rows = db.execute(
        f"SELECT m.version, count(*) AS n FROM modules m{where} GROUP BY m.version ORDER BY n DESC, m.version", params
    ).fetchall()
    return [(str(v), int(n)) for v, n in rows]


def downloaded(db: Database, modules: list[str]) -> dict[str, tuple[int, str]]:
    """Per module: bytes received (within the download retention) and its state in an active rollout."""
    if not modules:
        return {}
    marks = ", ".join("?" * len(modules))
    sent = dict(db.execute(f"SELECT module, sum(bytes) FROM downloads WHERE module IN ({marks}) GROUP BY module",
                           modules).fetchall())  # fmt: skip
    states = dict(db.execute(
        f"SELECT rm.module, rm.state FROM rollout_modules rm JOIN rollouts r ON r.id = rm.rollout "
        f"WHERE rm.module IN ({marks}) AND r.state IN ('running', 'paused', 'halted')", modules,
    ).fetchall())  # fmt: skip
    return {m: (int(sent.get(m) or 0), str(states.get(m) or "")) for m in modules}


@dataclass(frozen=True)
class ModuleStory:
    """One module: its row, the versions it ran (first and last seen), its downloads and its rollouts."""

    module: Module
    versions: list[tuple[str, float, float]]
    downloads: list[tuple[float, str, str, int, bool]]  # (at, build sha256, version, bytes, whole)
    rollouts: list[tuple[int, str, str, str, float, float]]  # (id, to version, state, from version, received, seen)


def module_story(db: Database, key: str) -> ModuleStory | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM modules m WHERE m.module = ?", (key,)).fetchone()
    if row is None:
        return None
    versions = db.execute(
        "SELECT version, first_seen, last_seen FROM module_versions WHERE module = ? ORDER BY first_seen", (key,)
    ).fetchall()
    downloads = db.execute(
        "SELECT d.at, d.sha256, COALESCE(b.version, ''), d.bytes, d.completed FROM downloads d "
        "LEFT JOIN builds b ON b.sha256 = d.sha256 WHERE d.module = ? ORDER BY d.at DESC LIMIT 50",
        (key,),
    ).fetchall()
    rollouts = db.execute(
        "SELECT r.id, b.version, rm.state, rm.from_version, rm.received, rm.last_seen FROM rollout_modules rm "
        "JOIN rollouts r ON r.id = rm.rollout JOIN builds b ON b.sha256 = r.to_sha256 WHERE rm.module = ? "
        "ORDER BY r.id DESC",
        (key,),
    ).fetchall()
    return ModuleStory(
        Module(*row),
        [(str(v), float(a), float(b)) for v, a, b in versions],
        [(float(a), str(s), str(v), int(n), bool(c)) for a, s, v, n, c in downloads],
        [(int(i), str(v), str(st), str(f), float(r), float(ls)) for i, v, st, f, r, ls in rollouts],
    )

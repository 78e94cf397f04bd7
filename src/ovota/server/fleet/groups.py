"""Groups: named sets of vehicle ids that rollouts target. Every change is audited in its transaction."""

from __future__ import annotations

import csv
import io
import secrets
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator

from ovota.server.fleet.agent import MAX_VEHICLE_ID
from ovota.server.fleet.targeting import GROUP_NAME
from ovota.server.store.audit import audited, record
from ovota.server.store.database import Database
from ovota.server.store.errors import NotFound, RepositoryError
from ovota.server.store.repository import Repository

MAX_GROUP = 1_000_000


class GroupError(RepositoryError):
    pass


def check_group_name(name: str) -> str:
    if not GROUP_NAME.fullmatch(name):
        raise GroupError(f"invalid group name {name!r}: letters, digits, '.', '_', '-', at most 64 characters")
    return name


def check_vehicle_id(vehicle_id: str) -> str:
    """A vehicle id as OVMS modules send it: printable, no surrounding spaces, at most 64 characters."""
    valid = 0 < len(vehicle_id) <= MAX_VEHICLE_ID and vehicle_id.isprintable() and not vehicle_id.startswith("@")
    if not valid or vehicle_id.strip() != vehicle_id:
        raise GroupError(f"invalid vehicle id {vehicle_id[:80]!r}: 1 to {MAX_VEHICLE_ID} printable characters, "
                         "not starting with @")  # fmt: skip
    return vehicle_id


def ids_from_csv(text: str) -> list[str]:
    """Vehicle ids from a CSV file: the first column of each row; a header row named ``vehicle_id`` or
    ``vehicle`` is skipped, as are empty rows and ``#`` comments."""
    ids: list[str] = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        value = row[0].strip()
        if not ids and value.lower() in ("vehicle_id", "vehicle", "vehicle id", "id"):
            continue
        ids.append(value)
    return ids


STAMP = "group_stamp:"  # meta key prefix: a fresh random value written with every change to that group


def members(db: Database, names: Collection[str]) -> frozenset[str]:
    """The vehicle ids in any of the groups ``names``. Read whole once per process and kept while the groups'
    stamps stay the same (``Groups`` writes a fresh one with every change, in the change's transaction): a
    million ids take a second and 140 MB to read, and the device path's answers reload at every change to
    channels, rollouts or failures. Callers that test a few ids ask ``InGroups`` instead."""
    return _MEMBERS.get(db, names)


class _MemberCache:
    """Sets of group members by database and group names, each with the stamps it was read under; a few."""

    SIZE = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one reader at a time: two threads never read a million ids twice
        self._found: OrderedDict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], frozenset[str]]] = OrderedDict()

    def get(self, db: Database, names: Collection[str]) -> frozenset[str]:
        wanted = tuple(sorted(set(names)))
        if not wanted:
            return frozenset()
        keys = [STAMP + name for name in wanted]
        rows = dict(db.execute(f"SELECT key, value FROM meta WHERE key IN ({', '.join('?' * len(keys))})",
                               keys).fetchall())  # fmt: skip
        stamps = tuple(str(rows.get(key, "")) for key in keys)  # none yet: unchanged since stamps were kept
        key = (db.location, wanted)
        with self._lock:
            cached = self._found.get(key)
            if cached is not None and cached[0] == stamps:
                self._found.move_to_end(key)
                return cached[1]
            found: set[str] = set()
            for name in wanted:
                rows_ = db.execute("SELECT vehicle_id FROM vehicle_groups WHERE name = ?", (name,)).fetchall()
                found.update(str(v) for (v,) in rows_)
            self._found[key] = (stamps, frozenset(found))
            while len(self._found) > self.SIZE:
                self._found.popitem(last=False)
            return self._found[key][1]


_MEMBERS = _MemberCache()


def _stamp(db: Database, name: str) -> None:
    """Mark the group changed (random, so a stamp written by a transaction that rolled back never comes back)."""
    db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (STAMP + name, secrets.token_hex(8)))  # fmt: skip


class InGroups(Collection[str]):
    """Membership of the groups ``names``, asked of the database one vehicle id at a time (an indexed lookup),
    as the caller's connection sees it: for callers that test some ids against groups that may hold a million
    (each registry flush, each evaluation of a rollout), where reading the groups whole each time would hold
    the process for a second."""

    def __init__(self, db: Database, names: Collection[str]) -> None:
        self.db, self.names = db, tuple(names)
        self._query = (f"SELECT 1 FROM vehicle_groups WHERE name IN ({', '.join('?' * len(self.names))}) "
                       "AND vehicle_id = ? LIMIT 1")  # fmt: skip

    def __contains__(self, vehicle_id: object) -> bool:
        if not self.names or not isinstance(vehicle_id, str):
            return False
        return self.db.execute(self._query, (*self.names, vehicle_id)).fetchone() is not None

    def __iter__(self) -> Iterator[str]:
        return iter(members(self.db, self.names))

    def __len__(self) -> int:
        return len(members(self.db, self.names))


class Groups:
    """Groups in a repository; changes recorded as ``repo.actor``."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.db = repo.db

    def add(self, name: str, vehicle_ids: Iterable[str], now: float) -> int:
        """Add vehicles to a group (made on first use); how many were new to it."""
        with audited(self.db, self.repo.actor, "group add", name):
            check_group_name(name)
            ids = list(dict.fromkeys(check_vehicle_id(v) for v in vehicle_ids))
            if not ids:
                raise GroupError("no vehicle ids given")
            if len(ids) > MAX_GROUP:
                raise GroupError(f"too many vehicle ids: at most {MAX_GROUP} per group")
            with self.repo.transaction() as db:
                before = self._size(db, name)
                for vehicle_id in ids:
                    db.execute("INSERT INTO vehicle_groups VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                               (name, vehicle_id, now))  # fmt: skip
                added = self._size(db, name) - before
                _stamp(db, name)
                record(db, self.repo.actor, "group add", name, f"{added} added, {len(ids) - added} already in it")
        return added

    def remove(self, name: str, vehicle_ids: Collection[str] = ()) -> int:
        """Remove vehicles from a group, or the whole group without ``vehicle_ids``; how many left it."""
        with audited(self.db, self.repo.actor, "group remove", name):
            check_group_name(name)
            with self.repo.transaction() as db:
                if not self._size(db, name):
                    raise NotFound(f"no group {name!r}")
                if vehicle_ids:
                    removed = 0
                    for vehicle_id in dict.fromkeys(vehicle_ids):
                        removed += db.execute("DELETE FROM vehicle_groups WHERE name = ? AND vehicle_id = ?",
                                              (name, vehicle_id)).rowcount  # fmt: skip
                else:
                    removed = db.execute("DELETE FROM vehicle_groups WHERE name = ?", (name,)).rowcount
                _stamp(db, name)
                detail = f"{removed} removed" + ("" if vehicle_ids else " (the group)")
                record(db, self.repo.actor, "group remove", name, detail)
        return removed

    def sizes(self) -> list[tuple[str, int]]:
        """(name, size) of every group, by name."""
        rows = self.db.execute("SELECT name, count(*) FROM vehicle_groups GROUP BY name ORDER BY name").fetchall()
        return [(str(n), int(c)) for n, c in rows]

    def first(self, name: str, count: int) -> list[str]:
        """The first ``count`` vehicle ids of a group, by id (a page shows a few of a million)."""
        rows = self.db.execute("SELECT vehicle_id FROM vehicle_groups WHERE name = ? ORDER BY vehicle_id LIMIT ?",
                               (name, count)).fetchall()  # fmt: skip
        return [str(v) for (v,) in rows]

    def show(self, name: str) -> list[str]:
        check_group_name(name)
        rows = self.db.execute("SELECT vehicle_id FROM vehicle_groups WHERE name = ? ORDER BY vehicle_id",
                               (name,)).fetchall()  # fmt: skip
        if not rows:
            raise NotFound(f"no group {name!r}")
        return [str(v) for (v,) in rows]

    def require(self, names: Collection[str]) -> None:
        """GroupError naming the first of ``names`` that is no group (a rollout cannot target it)."""
        for name in names:
            if not self._size(self.db, name):
                raise GroupError(f"no group {name!r}: add vehicles to it first (ovota fleet group add)")

    @staticmethod
    def _size(db: Database, name: str) -> int:
        return int(db.execute("SELECT count(*) FROM vehicle_groups WHERE name = ?", (name,)).fetchone()[0])

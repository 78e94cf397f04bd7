"""What overrides a channel's and a rollout's answer for some modules: pins (a vehicle held on a build),
waypoints (builds every older module passes through) and assignments (where a targeted rollout left its
modules). Each change is audited in its transaction; ``Overrides.load`` reads what the device path keeps in
memory for one channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovota.formats.versions import buildverscmp
from ovota.server.fleet.groups import check_vehicle_id
from ovota.server.store.audit import audited, record
from ovota.server.store.database import Database
from ovota.server.store.errors import NotFound, RepositoryError
from ovota.server.store.product_rules import running_secure_version
from ovota.server.store.repository import Build, Repository


class OverrideError(RepositoryError):
    pass


@dataclass(frozen=True)
class Pin:
    vehicle_id: str
    build: Build
    at: float
    actor: str


@dataclass(frozen=True)
class Assignment:
    product: str
    tag: str
    vehicle_id: str
    build: Build
    rollout: int
    at: float


@dataclass(frozen=True)
class ChannelOverrides:
    """What overrides the answers of one channel: by vehicle id, and the product's waypoints, oldest first."""

    pins: dict[str, Build]
    waypoints: tuple[Build, ...]
    assignments: dict[str, Build]

    @property
    def empty(self) -> bool:
        return not (self.pins or self.waypoints or self.assignments)


class Overrides:
    """Pins, waypoints and assignments in a repository; changes recorded as ``repo.actor``."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.db = repo.db

    # -- pins ------------------------------------------------------------------------------------------------

    def pin(self, vehicle_id: str, build: Build, now: float) -> None:
        """Offer ``build`` to this vehicle whatever its channel or a rollout serves. Refused when the build breaks
        an invariant of the offer decision for the product and version the fleet registry knows it by: another
        product, too big for its slot, not signed by a key it trusts, below its anti-rollback floor or below the
        secure version of the build it runs."""
        with audited(self.db, self.repo.actor, "fleet pin", vehicle_id):
            check_vehicle_id(vehicle_id)
            row = self.db.execute("SELECT product, version FROM modules WHERE vehicle_id = ? LIMIT 1",
                                  (vehicle_id,)).fetchone()  # fmt: skip
            if row is not None:
                product, version = str(row[0]), str(row[1])
                try:
                    self.repo.check_servable(build, product)
                except RepositoryError as err:
                    raise OverrideError(
                        f"cannot pin {vehicle_id} (a {product} module) to {build.version}: {err}"
                    ) from None
                runs = running_secure_version(self.db, product, version)
                if self.repo.security(build.sha256).secure_version < runs:
                    raise OverrideError(
                        f"cannot pin {vehicle_id} to {build.version}: it runs {version}, secure version {runs}, and "
                        "a chip with anti-rollback refuses anything older"
                    )
            with self.repo.transaction() as db:
                db.execute(
                    "INSERT INTO vehicle_pins VALUES (?, ?, ?, ?) ON CONFLICT (vehicle_id) DO UPDATE SET "
                    "sha256 = excluded.sha256, at = excluded.at, actor = excluded.actor",
                    (vehicle_id, build.sha256, now, self.repo.actor),
                )
                record(db, self.repo.actor, "fleet pin", vehicle_id, f"{build.version} ({build.sha256[:12]})")

    def unpin(self, vehicle_id: str) -> None:
        with audited(self.db, self.repo.actor, "fleet unpin", vehicle_id), self.repo.transaction() as db:
            if not db.execute("DELETE FROM vehicle_pins WHERE vehicle_id = ?", (vehicle_id,)).rowcount:
                raise NotFound(f"vehicle {vehicle_id!r} is not pinned")
            record(db, self.repo.actor, "fleet unpin", vehicle_id)

    def pins(self) -> list[Pin]:
        rows = self.db.execute("SELECT vehicle_id, sha256, at, actor FROM vehicle_pins ORDER BY vehicle_id")
        return [Pin(str(v), self.repo.build(str(s)), float(a), str(who)) for v, s, a, who in rows.fetchall()]

    # -- waypoints -------------------------------------------------------------------------------------------

    def add_waypoint(self, product: str, build: Build, now: float) -> None:
        """Make every module of ``product`` running an older version pass through ``build``."""
        with audited(self.db, self.repo.actor, "release waypoint", product):
            self.repo.check_servable(build, product)
            for other in self.waypoints(product):
                if other.sha256 != build.sha256 and buildverscmp(other.version, build.version) == 0:
                    raise OverrideError(f"{product} already has the waypoint {other.version} ({other.sha256[:12]})")
            with self.repo.transaction() as db:
                db.execute("INSERT INTO waypoints VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           (product, build.sha256, now, self.repo.actor))  # fmt: skip
                record(db, self.repo.actor, "release waypoint", product, f"added {build.version}")

    def remove_waypoint(self, product: str, build: Build) -> None:
        with audited(self.db, self.repo.actor, "release waypoint", product), self.repo.transaction() as db:
            if not db.execute("DELETE FROM waypoints WHERE product = ? AND sha256 = ?",
                              (product, build.sha256)).rowcount:  # fmt: skip
                raise NotFound(f"{build.version} is no waypoint of {product}")
            record(db, self.repo.actor, "release waypoint", product, f"removed {build.version}")

    def waypoints(self, product: str) -> list[Build]:
        """The product's waypoints, oldest version first."""
        rows = self.db.execute("SELECT sha256 FROM waypoints WHERE product = ?", (product,)).fetchall()
        builds = [self.repo.build(str(s)) for (s,) in rows]
        return sorted(builds, key=_VersionKey)

    # -- assignments -----------------------------------------------------------------------------------------

    def assignments(self, product: str | None = None, vehicle_id: str | None = None) -> list[Assignment]:
        rows = self.db.execute(
            "SELECT product, tag, vehicle_id, sha256, rollout, at FROM assignments "
            "WHERE (CAST(? AS TEXT) IS NULL OR product = ?) AND (CAST(? AS TEXT) IS NULL OR vehicle_id = ?) "
            "ORDER BY product, tag, vehicle_id",
            (product, product, vehicle_id, vehicle_id),
        ).fetchall()
        return [Assignment(str(p), str(t), str(v), self.repo.build(str(s)), int(r), float(a))
                for p, t, v, s, r, a in rows]  # fmt: skip

    def unassign(self, vehicle_id: str, product: str | None = None, tag: str | None = None) -> int:
        """Remove a vehicle's assignments (on one channel, or all); how many there were."""
        with audited(self.db, self.repo.actor, "fleet unassign", vehicle_id), self.repo.transaction() as db:
            removed = db.execute(
                "DELETE FROM assignments WHERE vehicle_id = ? AND (CAST(? AS TEXT) IS NULL OR product = ?) "
                "AND (CAST(? AS TEXT) IS NULL OR tag = ?)",
                (vehicle_id, product, product, tag, tag),
            ).rowcount
            if not removed:
                raise NotFound(f"vehicle {vehicle_id!r} has no assignment")
            record(db, self.repo.actor, "fleet unassign", vehicle_id, f"{removed} removed")
        return int(removed)

    # -- what the device path keeps --------------------------------------------------------------------------

    def load(self, product: str, tag: str) -> ChannelOverrides:
        """Everything that overrides the answers of ``product``/``tag``."""
        builds: dict[str, Build] = {}

        def build(sha256: str) -> Build:
            if sha256 not in builds:
                builds[sha256] = self.repo.build(sha256)
            return builds[sha256]

        pinned = self.db.execute("SELECT vehicle_id, sha256 FROM vehicle_pins").fetchall()
        pins = {str(v): build(str(s)) for v, s in pinned}
        assigned = self.db.execute("SELECT vehicle_id, sha256 FROM assignments WHERE product = ? AND tag = ?",
                                   (product, tag)).fetchall()  # fmt: skip
        assignments = {str(v): build(str(s)) for v, s in assigned}
        return ChannelOverrides(pins, tuple(self.waypoints(product)), assignments)


def assign(db: Database, product: str, tag: str, vehicle_ids: set[str], build: Build, rollout: int,
           now: float) -> int:  # fmt: skip
    """Assign vehicles to ``build`` (the end of targeted rollout ``rollout``), in the caller's transaction."""
    for vehicle_id in sorted(vehicle_ids):
        db.execute(
            "INSERT INTO assignments VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (product, tag, vehicle_id) DO UPDATE "
            "SET sha256 = excluded.sha256, rollout = excluded.rollout, at = excluded.at",
            (product, tag, vehicle_id, build.sha256, rollout, now),
        )
    return len(vehicle_ids)


class _VersionKey:
    """Orders builds by OVMS's version comparison."""

    def __init__(self, build: Build) -> None:
        self.version = build.version

    def __lt__(self, other: _VersionKey) -> bool:
        return buildverscmp(self.version, other.version) < 0

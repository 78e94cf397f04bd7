"""Copy a repository into other backends (``ovota repo migrate``): an embedded folder into PostgreSQL + S3.

Blobs first, each checked against its SHA-256 on the way (and, on S3, read back after the upload), then all
rows in one transaction of the target, in foreign-key order. Rows are copied with their keys and ids, so a
second run finds them there and changes nothing; tables without a key (rollout samples and events) are
replaced per rollout. Copying while the source is being written copies what it held at the start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ovota.server.store.database import Database
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import Repository

# In foreign-key order. (table, key columns for ON CONFLICT, or None: replace the rows per rollout)
TABLES: tuple[tuple[str, str | None], ...] = (
    ("builds", "sha256"),
    ("build_security", "sha256"),
    ("channels", "product, tag"),
    ("history", "id"),
    ("tokens", "id"),
    ("sessions", "digest"),
    ("trusted_keys", "product, digest"),
    ("modules", "module"),
    ("module_versions", "module, version"),
    ("downloads", "id"),
    ("request_counts", "kind"),
    ("rollouts", "id"),
    ("rollout_modules", "rollout, module"),
    ("rollout_samples", None),
    ("rollout_events", None),
    ("deltas", "base_hash, target_sha256"),
    ("meta", "key"),
    ("audit", "id"),
)
IDENTITY_TABLES = ("history", "tokens", "downloads", "rollouts", "audit")


@dataclass(frozen=True)
class CopyReport:
    blobs: int
    rows: dict[str, int]  # rows in the source, per table


def copy_repository(source: Repository, target: Repository, say: Callable[[str], None]) -> CopyReport:
    """Copy everything ``source`` holds into ``target``; RepositoryError if a blob does not match its name."""
    names = [row[0] for row in source.db.execute("SELECT sha256 FROM builds ORDER BY created").fetchall()]
    names += [row[0] for row in source.db.execute("SELECT patch_sha256 FROM deltas WHERE state = 'ready'").fetchall()]
    for index, sha256 in enumerate(names, 1):
        data = source.blob_path(sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RepositoryError(f"blob {sha256} in the source does not match its SHA-256: nothing was copied")
        target.write_blob(sha256, data)
        say(f"blob {index}/{len(names)} {sha256} ({len(data)} bytes) verified")
    rows: dict[str, int] = {}
    with target.transaction() as db:
        for table, key in TABLES:
            found = source.db.execute(f"SELECT * FROM {table}").fetchall()
            rows[table] = len(found)
            _copy_rows(db, table, key, found)
        if db.dialect == "postgresql":
            for table in IDENTITY_TABLES:
                # Rows came with their ids: move each id sequence past them, or the next insert would collide.
                db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT COALESCE(max(id), 0) + 1 FROM {table}), false)"
                )
    for table, count in rows.items():
        if count:
            say(f"{table}: {count} rows")
    return CopyReport(len(names), rows)


def _copy_rows(db: Database, table: str, key: str | None, found: list[tuple[object, ...]]) -> None:
    if not found:
        return
    marks = ", ".join("?" * len(found[0]))
    if key is None:
        for rollout in {row[0] for row in found}:
            db.execute(f"DELETE FROM {table} WHERE rollout = ?", (rollout,))
        db.executemany(f"INSERT INTO {table} VALUES ({marks})", found)
        return
    db.executemany(f"INSERT INTO {table} VALUES ({marks}) ON CONFLICT ({key}) DO NOTHING", found)

"""The repository's SQL database: SQLite in the repository folder (the default) or PostgreSQL.

Queries are written once, in the SQL both engines accept (``?`` placeholders, ``ON CONFLICT`` upserts,
``RETURNING``); the PostgreSQL connection rewrites the placeholders. The schema is created and moved forward
by numbered migrations (schema.py), recorded in ``schema_migrations``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ovota.server.store.schema import ANSWERS_KEY, MIGRATIONS


class DatabaseUnavailable(Exception):
    """The database cannot be reached (PostgreSQL restarting, network); the caller may retry later."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """One connection. ``transaction()`` is atomic and, on SQLite, takes the write lock up front."""

    dialect: str
    location: str  # which database (a file, a URL): the same for every connection to it

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def transaction(self) -> Any: ...

    def close(self) -> None: ...

    def reconnect(self) -> Database:
        """Another connection to the same database (for a thread or a process of its own)."""
        ...

    def change_token(self) -> int:
        """A number that changes when another connection has committed changes readers cache."""
        ...

    def hold_lock(self, role: str) -> bool:
        """Whether this process is the one that decides for ``role`` (e.g. rollout steps and halts)."""
        ...


def _busy(err: sqlite3.OperationalError) -> bool:
    """Errors that pass: another process's lock, or a disk that is full or failing for now (answered 503)."""
    text = str(err)
    return "locked" in text or "busy" in text or "disk is full" in text or "disk I/O error" in text


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.location = str(path)
        self.busy_timeout = busy_timeout
        self.conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as err:
            if _busy(err):  # another process holds the write lock longer than busy_timeout
                raise DatabaseUnavailable(f"SQLite: {err}") from None
            raise

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.OperationalError as err:
            if _busy(err):
                raise DatabaseUnavailable(f"SQLite: {err}") from None
            raise

    @contextmanager
    def transaction(self) -> Iterator[SqliteDatabase]:
        self.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def change_token(self) -> int:
        """Changes whenever a change to what the device path caches is committed (triggers count them in
        ``meta``: schema.ANSWER_TABLES): a cheap cache key for readers."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (ANSWERS_KEY,)).fetchone()
        return int(row[0]) if row is not None else int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def hold_lock(self, role: str) -> bool:
        """One host, one file: every process may decide (conditional updates keep decisions single)."""
        return True

    def close(self) -> None:
        self.conn.close()

    def reconnect(self) -> SqliteDatabase:
        return SqliteDatabase(self.path, self.busy_timeout)


_PLACEHOLDER = re.compile(r"\?")


def to_postgres(sql: str) -> str:
    """``?`` placeholders become ``%s`` (and a literal ``%`` is doubled for psycopg)."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str, busy_timeout: float = 30.0) -> None:
        import psycopg

        self.url = url
        self.location = url
        self.busy_timeout = busy_timeout
        self._psycopg = psycopg
        self._sql: dict[str, str] = {}
        self._listener: ChangeListener | None = None
        self._locks: dict[str, int] = {}  # role -> the connection generation that holds its lock
        self.generation = 0
        self._in_transaction = False
        self._retry_at = 0.0  # after a failed connect, no new attempt before this (time.monotonic)
        self._pause = 0.0
        self.conn = self._connect()

    def _connect(self) -> Any:
        """A new connection. While PostgreSQL is away, attempts back off (0.25 s doubling to 5 s): callers get
        DatabaseUnavailable at once in between (a 503), instead of each waiting for a connect timeout."""
        if time.monotonic() < self._retry_at:
            raise DatabaseUnavailable(f"PostgreSQL is away: next connection attempt in {self._pause:g} s or less")
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            # A statement that waits longer than this for a lock another process holds fails (and is retried
            # later, or answered 503) rather than holding its thread.
            conn.execute(f"SET lock_timeout = {int(self.busy_timeout * 1000)}")
        except self._psycopg.OperationalError as err:
            self._pause = min(max(self._pause * 2, 0.25), 5.0)
            self._retry_at = time.monotonic() + self._pause
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_first_line(err)}") from None
        self._pause = 0.0
        return conn

    def _live(self) -> Any:
        """The connection, made anew if PostgreSQL dropped it (a restart): session locks are gone then."""
        if self.conn.closed or self.conn.broken:
            if self._in_transaction:
                # Never carry on a transaction's statements on a new connection: the earlier ones are lost.
                raise DatabaseUnavailable("PostgreSQL: the connection was lost inside a transaction")
            self.conn = self._connect()
            self.generation += 1
        return self.conn

    def _query(self, sql: str) -> str:
        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = to_postgres(sql)
        return query

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            cursor: Cursor = self._live().execute(self._query(sql), params)
        except self._psycopg.OperationalError as err:
            raise DatabaseUnavailable(f"PostgreSQL: {_first_line(err)}") from None
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            with self._live().cursor() as cursor:
                cursor.executemany(self._query(sql), rows)
        except self._psycopg.OperationalError as err:
            raise DatabaseUnavailable(f"PostgreSQL: {_first_line(err)}") from None

    @contextmanager
    def transaction(self) -> Iterator[PostgresDatabase]:
        try:
            with self._live().transaction():
                self._in_transaction = True
                try:
                    yield self
                finally:
                    self._in_transaction = False
        except self._psycopg.OperationalError as err:
            raise DatabaseUnavailable(f"PostgreSQL: {_first_line(err)}") from None

    def hold_lock(self, role: str) -> bool:
        """True if this connection holds the cluster-wide advisory lock for ``role``, taking it if it is free.
        It is held until this connection ends, so when its process dies another one takes over."""
        if self._locks.get(role) == self.generation and not (self.conn.closed or self.conn.broken):
            return True
        key = zlib.crc32(role.encode())
        if self.execute("SELECT pg_try_advisory_lock(?)", (key,)).fetchone()[0]:
            self._locks[role] = self.generation
            return True
        return False

    def change_token(self) -> int:
        """Changes whenever another process commits a change to channels, builds, rollouts or trusted keys
        (LISTEN/NOTIFY on a connection of its own, started on first use), and after that connection was lost."""
        if self._listener is None:
            self._listener = ChangeListener(self.url)
        return self._listener.token

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self.conn.close()

    def reconnect(self) -> PostgresDatabase:
        return PostgresDatabase(self.url, self.busy_timeout)


class ChangeListener:
    """A thread that LISTENs for ``ovota_changes`` and counts them; reconnects (counting that too) when the
    connection drops, since notifications sent meanwhile are lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ovota-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        while not self._stopped.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute("LISTEN ovota_changes")
                    self.token += 1  # anything may have changed while there was no listener
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.token += 1
            except psycopg.Error:
                self.token += 1
                self._stopped.wait(0.5)

    def stop(self) -> None:
        self._stopped.set()


def open_database(url_or_path: str | Path, busy_timeout: float = 30.0) -> SqliteDatabase | PostgresDatabase:
    """A PostgreSQL URL (``postgresql://…``) or the path of a SQLite file, migrated to the current schema.
    A statement that cannot get a lock within ``busy_timeout`` seconds raises DatabaseUnavailable."""
    if isinstance(url_or_path, str) and url_or_path.startswith(("postgresql://", "postgres://")):
        db: SqliteDatabase | PostgresDatabase = PostgresDatabase(url_or_path, busy_timeout)
    else:
        db = SqliteDatabase(Path(url_or_path), busy_timeout)
    migrate(db)
    return db


def migrate(db: SqliteDatabase | PostgresDatabase) -> list[int]:
    """Apply the migrations not yet recorded, each in its own transaction; the numbers applied."""
    create = "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied REAL NOT NULL)"
    if db.dialect == "postgresql":
        with db.transaction():
            # Two servers starting at once would race even on CREATE TABLE IF NOT EXISTS (pg_type's unique
            # index): everything schema-related runs under one transaction-level advisory lock.
            db.execute("SELECT pg_advisory_xact_lock(7280001)")
            db.execute(create)
    else:
        db.execute(create)
    done = {int(row[0]) for row in db.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, statements in MIGRATIONS:
        if version in done:
            continue  # the common case: no write lock is taken just to find nothing to do
        with db.transaction():
            if db.dialect == "postgresql":
                # Several servers may start at once: the first migrates, the others wait, then see it done.
                db.execute("SELECT pg_advisory_xact_lock(7280001)")
            if db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                continue
            for statement in statements:
                dialect, sql = statement if isinstance(statement, tuple) else (db.dialect, statement)
                if dialect == db.dialect:
                    db.execute(for_dialect(sql, db.dialect))
            db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
            applied.append(version)
    return applied


def for_dialect(ddl: str, dialect: str) -> str:
    """DDL written for SQLite, in PostgreSQL's types when needed."""
    if dialect != "postgresql":
        return ddl
    ddl = ddl.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    ddl = re.sub(r"\bREAL\b", "DOUBLE PRECISION", ddl)
    return re.sub(r"\bINTEGER\b", "BIGINT", ddl)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]

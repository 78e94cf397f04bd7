"""The repository's schema, as numbered migrations: builds and channels, the fleet registry, rollouts, trust.

Written in SQLite's DDL; database.py maps the types for PostgreSQL. A migration is applied once, in a
transaction, and recorded in ``schema_migrations``; a new schema change is a new entry at the end, never an
edit of an old one. Migration 1 is the schema of the embedded repositories made before migrations existed
(``IF NOT EXISTS``), so they move on from it unchanged.
"""

_INITIAL = """
CREATE TABLE IF NOT EXISTS builds (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    version TEXT NOT NULL,
    project TEXT NOT NULL,
    changelog TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    product TEXT NOT NULL,
    tag TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES builds(sha256),
    updated REAL NOT NULL,
    PRIMARY KEY (product, tag)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product TEXT NOT NULL,
    tag TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES builds(sha256),
    action TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);

-- Fleet registry: one row per module, keyed by its vehicle id ('@' + address when the id is empty).
CREATE TABLE IF NOT EXISTS modules (
    module TEXT PRIMARY KEY,
    vehicle_id TEXT NOT NULL,
    product TEXT NOT NULL,
    tag TEXT NOT NULL,
    version TEXT NOT NULL,
    partition TEXT NOT NULL,
    address TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    checkins INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS modules_channel ON modules (product, tag);
CREATE TABLE IF NOT EXISTS downloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    module TEXT NOT NULL,
    product TEXT NOT NULL,
    tag TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS downloads_module ON downloads (module);
-- Requests without an OVMS User-Agent: counted per kind, not registered.
CREATE TABLE IF NOT EXISTS request_counts (
    kind TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product TEXT NOT NULL,
    tag TEXT NOT NULL,
    from_sha256 TEXT NOT NULL REFERENCES builds(sha256),
    to_sha256 TEXT NOT NULL REFERENCES builds(sha256),
    steps TEXT NOT NULL,
    step_interval REAL NOT NULL,
    halt_failed REAL NOT NULL,
    halt_silent REAL NOT NULL,
    min_sample INTEGER NOT NULL,
    watch REAL NOT NULL,
    grace REAL NOT NULL,
    notify_url TEXT NOT NULL,
    state TEXT NOT NULL,
    step INTEGER NOT NULL,
    step_started REAL NOT NULL,
    thresholds TEXT NOT NULL,
    reason TEXT NOT NULL,
    baseline TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_channel ON rollouts (product, tag, state);
-- A module's part in a rollout, from the moment it has received all of the new build's bytes.
CREATE TABLE IF NOT EXISTS rollout_modules (
    rollout INTEGER NOT NULL REFERENCES rollouts(id),
    module TEXT NOT NULL,
    state TEXT NOT NULL,
    from_version TEXT NOT NULL,
    received REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (rollout, module)
);
-- Counts over time, for the rollout page's chart, and the rollout's log of decisions.
CREATE TABLE IF NOT EXISTS rollout_samples (
    rollout INTEGER NOT NULL REFERENCES rollouts(id),
    at REAL NOT NULL,
    pending INTEGER NOT NULL,
    updating INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    silent INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout_events (
    rollout INTEGER NOT NULL REFERENCES rollouts(id),
    at REAL NOT NULL,
    message TEXT NOT NULL
);
-- esp_delta_ota patches from a base image (by its validation hash) to a build, made in the background.
CREATE TABLE IF NOT EXISTS deltas (
    base_hash TEXT NOT NULL,
    target_sha256 TEXT NOT NULL REFERENCES builds(sha256),
    state TEXT NOT NULL,
    patch_sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    claimed REAL NOT NULL,
    PRIMARY KEY (base_hash, target_sha256)
);
-- Secure Boot V2: the keys (SHA-256 digests, hex) each product trusts, and what each build is signed with.
CREATE TABLE IF NOT EXISTS trusted_keys (
    product TEXT NOT NULL,
    digest TEXT NOT NULL,
    name TEXT NOT NULL,
    added REAL NOT NULL,
    PRIMARY KEY (product, digest)
);
CREATE TABLE IF NOT EXISTS build_security (
    sha256 TEXT PRIMARY KEY REFERENCES builds(sha256),
    secure_version INTEGER NOT NULL,
    signers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# PostgreSQL only: every committed change to what the server answers from memory (channels, builds, rollouts,
# trusted keys) notifies the other server processes, which drop their cached answers (LISTEN/NOTIFY).
_NOTIFY_CHANGES = (
    """CREATE OR REPLACE FUNCTION ovota_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_notify('ovota_changes', TG_TABLE_NAME); RETURN NULL; END $$""",
    *(
        f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ovota_notify_change()"
        for table in ("builds", "channels", "rollouts", "trusted_keys", "deltas")
    ),
)

# The rollouts table's states in which a rollout still decides what its channel serves. The store needs them
# to refuse moving such a channel; fleet/policy.py's RolloutState names them (a test checks they agree).
ACTIVE_ROLLOUT_STATES = ("running", "paused", "halted")

Statement = str | tuple[str, str]  # SQL for every engine, or (dialect, SQL) for one


def _statements(script: str) -> tuple[Statement, ...]:
    return tuple(part.strip() for part in script.split(";") if part.strip())


# Console sessions shared by every server process; when a token was last used; which modules may vote in a
# rollout (known at least this long before it started); pruning downloads by age.
_OPEN_INTERNET = """
ALTER TABLE tokens ADD COLUMN last_used REAL NOT NULL DEFAULT 0;
CREATE TABLE sessions (
    digest TEXT PRIMARY KEY,
    token INTEGER NOT NULL REFERENCES tokens(id),
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX sessions_token ON sessions (token);
ALTER TABLE rollouts ADD COLUMN voters_known_for REAL NOT NULL DEFAULT 0;
CREATE INDEX downloads_at ON downloads (at)
"""

# Operators: token roles (tokens made before them are admins), the audit log and who acted in channel histories
# and rollout logs, when a rollout's reason was given, and each module's versions over time.
_OPERATORS = """
ALTER TABLE tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
ALTER TABLE history ADD COLUMN actor TEXT NOT NULL DEFAULT '';
ALTER TABLE rollout_events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
ALTER TABLE rollouts ADD COLUMN reason_at REAL NOT NULL DEFAULT 0;
CREATE TABLE module_versions (
    module TEXT NOT NULL,
    version TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (module, version)
);
CREATE INDEX rollout_modules_module ON rollout_modules (module)
"""

# Targeting and pacing: a rollout's target and pacing (JSON), groups of vehicle ids, pins (a vehicle held on a
# build), waypoints (builds every module passes through), assignments (where a targeted rollout left its
# modules), and which modules a rate-limited rollout has admitted (with the window time it did so at).
_TARGETING = """
ALTER TABLE rollouts ADD COLUMN target TEXT NOT NULL DEFAULT '{}';
ALTER TABLE rollouts ADD COLUMN pacing TEXT NOT NULL DEFAULT '{}';
CREATE TABLE vehicle_groups (
    name TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    added REAL NOT NULL,
    PRIMARY KEY (name, vehicle_id)
);
CREATE TABLE vehicle_pins (
    vehicle_id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL REFERENCES builds(sha256),
    at REAL NOT NULL,
    actor TEXT NOT NULL
);
CREATE TABLE waypoints (
    product TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES builds(sha256),
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    PRIMARY KEY (product, sha256)
);
CREATE TABLE assignments (
    product TEXT NOT NULL,
    tag TEXT NOT NULL,
    vehicle_id TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES builds(sha256),
    rollout INTEGER NOT NULL REFERENCES rollouts(id),
    at REAL NOT NULL,
    PRIMARY KEY (product, tag, vehicle_id)
);
CREATE TABLE rollout_admissions (
    rollout INTEGER NOT NULL REFERENCES rollouts(id),
    vehicle_id TEXT NOT NULL,
    at REAL NOT NULL,
    window_at REAL NOT NULL,
    PRIMARY KEY (rollout, vehicle_id)
)
"""
_TARGETING_TABLES = ("vehicle_groups", "vehicle_pins", "waypoints", "assignments", "rollout_admissions")

# Safe offers: the products each build was published for (builds stored before: the products of the channels,
# rollouts, waypoints and assignments that named them; others are derived from their version), the build each
# module last received whole and whether it has run it since, the builds modules failed on (until an operator
# retries), when an operator last retried a module, and each product's anti-rollback floor.
_SAFE_OFFERS = """
CREATE TABLE build_products (
    sha256 TEXT NOT NULL REFERENCES builds(sha256),
    product TEXT NOT NULL,
    PRIMARY KEY (sha256, product)
);
INSERT INTO build_products SELECT sha256, product FROM history UNION SELECT sha256, product FROM channels
    UNION SELECT to_sha256, product FROM rollouts UNION SELECT sha256, product FROM waypoints
    UNION SELECT sha256, product FROM assignments;
CREATE TABLE module_attempts (
    module TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    received REAL NOT NULL,
    running INTEGER NOT NULL
);
CREATE TABLE module_failures (
    module TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (module, sha256)
);
CREATE INDEX module_failures_sha256 ON module_failures (sha256);
CREATE TABLE module_retries (
    module TEXT PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL
);
CREATE TABLE product_rules (
    product TEXT PRIMARY KEY,
    min_secure_version INTEGER NOT NULL
)
"""
_SAFE_OFFERS_TABLES = ("build_products", "module_failures", "module_retries", "product_rules")


def _notify_triggers(tables: tuple[str, ...]) -> tuple[Statement, ...]:
    """PostgreSQL triggers that tell every server process when these tables change (their answers depend on them)."""
    return tuple(
        (
            "postgresql",
            f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ovota_notify_change()",
        )
        for table in tables
    )


# What the device path's cached answers depend on: a change to any of these tables reloads them (PostgreSQL: NOTIFY
# triggers above; SQLite: triggers counting changes in ``meta``, so that registry writes, which touch none of them,
# do not reload every channel's answer twice a second).
ANSWER_TABLES = (
    "builds", "channels", "rollouts", "trusted_keys", "deltas", *_TARGETING_TABLES, *_SAFE_OFFERS_TABLES,
)  # fmt: skip
ANSWERS_KEY = "answers_changed"


def _sqlite_change_counters() -> tuple[Statement, ...]:
    """SQLite triggers that count changes to ANSWER_TABLES in ``meta`` (a row trigger per table and operation)."""
    bump = f"UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = '{ANSWERS_KEY}'"
    return (
        ("sqlite", f"INSERT INTO meta (key, value) VALUES ('{ANSWERS_KEY}', '0') ON CONFLICT DO NOTHING"),
        *(
            ("sqlite", f"CREATE TRIGGER {table}_{op.lower()}_counted AFTER {op} ON {table} BEGIN {bump}; END")
            for table in ANSWER_TABLES
            for op in ("INSERT", "UPDATE", "DELETE")
        ),
    )


MIGRATIONS: tuple[tuple[int, tuple[Statement, ...]], ...] = (
    (1, _statements(_INITIAL)),
    (2, tuple(("postgresql", sql) for sql in _NOTIFY_CHANGES)),
    (3, _statements(_OPEN_INTERNET)),
    (4, _statements(_OPERATORS)),
    (
        5,
        _statements(_TARGETING) + _notify_triggers(_TARGETING_TABLES),
    ),
    (
        6,
        _statements(_SAFE_OFFERS) + _notify_triggers(_SAFE_OFFERS_TABLES),
    ),
    (7, _sqlite_change_counters()),
)

"""The repository's SQLite schema: builds and channels, the fleet registry, rollouts.

Statements are idempotent (IF NOT EXISTS), run at every open; new tables only ever get added.
"""

SCHEMA = """
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

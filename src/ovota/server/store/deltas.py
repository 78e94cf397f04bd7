"""Delta patches made in the background: from a product's recent builds to each build its channels serve.

For every build a channel serves (and every active rollout's new build), patches come from the last
``bases`` distinct builds of each channel of the same product. Making a patch takes seconds of CPU, so it
runs in a separate process, never in a request. A job is claimed in the database first, so several server
processes share the work; a claim older than ``CLAIM_SECONDS`` (a crashed worker) is taken over. Patches
are kept as blobs like builds; one that is not smaller than its build is recorded as useless, never served.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from ovota.formats import FormatError
from ovota.formats.delta import create_patch, validation_hash
from ovota.server.store import channels
from ovota.server.store.backends import Backends
from ovota.server.store.errors import NotFound
from ovota.server.store.repository import Build, Repository
from ovota.server.store.schema import ACTIVE_ROLLOUT_STATES

DEFAULT_BASES = 3
CLAIM_SECONDS = 600


@dataclass(frozen=True)
class Delta:
    base_hash: str  # hex validation hash of the base image
    target: str  # sha256 of the build it produces
    patch_sha256: str
    size: int


@dataclass(frozen=True)
class Job:
    base_sha256: str
    base_hash: str
    target_sha256: str


def image_hash(repo: Repository, build: Build, cache: dict[str, str | None]) -> str | None:
    """The build's validation hash (the SHA-256 appended to the image), hex; None if it has none.
    Builds never change, so ``cache`` keeps it per build."""
    if build.sha256 not in cache:
        try:
            cache[build.sha256] = validation_hash(repo.blob_path(build.sha256).read_bytes()).hex()
        except (FormatError, OSError):
            cache[build.sha256] = None
    return cache[build.sha256]


def ready(repo: Repository, base_hash: str, target_sha256: str) -> Delta | None:
    """The patch from a base (by validation hash) to a build, if one was made and is worth sending."""
    row = repo.db.execute(
        "SELECT base_hash, target_sha256, patch_sha256, size FROM deltas "
        "WHERE base_hash = ? AND target_sha256 = ? AND state = 'ready'",
        (base_hash, target_sha256),
    ).fetchone()
    return None if row is None else Delta(str(row[0]), str(row[1]), str(row[2]), int(row[3]))


def for_target(repo: Repository, target_sha256: str) -> list[Delta]:
    rows = repo.db.execute(
        "SELECT base_hash, target_sha256, patch_sha256, size FROM deltas WHERE target_sha256 = ? AND state = 'ready' "
        "ORDER BY base_hash",
        (target_sha256,),
    ).fetchall()
    return [Delta(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]


def wanted(repo: Repository, bases: int, hashes: dict[str, str | None]) -> list[Job]:
    """Patches that should exist and do not (nor are being made), oldest need first."""
    if bases <= 0:
        return []
    targets: dict[str, str] = {}  # target sha256 -> product
    for channel in repo.channels():
        targets[channel.build.sha256] = channel.product
    active = ACTIVE_ROLLOUT_STATES
    rows = repo.db.execute("SELECT product, to_sha256 FROM rollouts WHERE state IN (?, ?, ?)", active).fetchall()
    for product, sha in rows:
        targets[str(sha)] = str(product)
    jobs = []
    for target, product in targets.items():
        for base in _recent_builds(repo, product, bases):
            if base.sha256 == target:
                continue
            base_hash = image_hash(repo, base, hashes)
            if base_hash is None or _known(repo, base_hash, target):
                continue
            jobs.append(Job(base.sha256, base_hash, target))
    return jobs


def _recent_builds(repo: Repository, product: str, bases: int) -> list[Build]:
    rows = repo.db.execute("SELECT DISTINCT tag FROM history WHERE product = ?", (product,)).fetchall()
    found: dict[str, Build] = {}
    for (tag,) in rows:
        shas: list[str] = []
        for move in channels.history(repo.db, product, str(tag)):
            if move.sha256 not in shas:
                shas.append(move.sha256)
        for sha in shas[:bases]:
            try:
                found.setdefault(sha, repo.build(sha))
            except NotFound:
                continue
    return list(found.values())


def _known(repo: Repository, base_hash: str, target: str) -> bool:
    row = repo.db.execute(
        "SELECT state, claimed FROM deltas WHERE base_hash = ? AND target_sha256 = ?", (base_hash, target)
    ).fetchone()
    if row is None:
        return False
    return not (row[0] == "making" and time.time() - float(row[1]) > CLAIM_SECONDS)


def claim(repo: Repository, job: Job) -> bool:
    """Take the job; False if another process has it."""
    now = time.time()
    with repo.transaction() as db:
        row = db.execute(
            "SELECT state, claimed FROM deltas WHERE base_hash = ? AND target_sha256 = ?",
            (job.base_hash, job.target_sha256),
        ).fetchone()
        if row is not None and not (row[0] == "making" and now - float(row[1]) > CLAIM_SECONDS):
            return False
        db.execute(
            "INSERT INTO deltas VALUES (?, ?, 'making', '', 0, ?) ON CONFLICT (base_hash, target_sha256) DO UPDATE "
            "SET state = excluded.state, patch_sha256 = excluded.patch_sha256, size = excluded.size, "
            "claimed = excluded.claimed",
            (job.base_hash, job.target_sha256, now),
        )
    return True


def make(where: Path | Backends, job: Job) -> tuple[str, int]:
    """Make one patch (run in a worker process): store it as a blob and record it. Returns (state, size)."""
    repo = Repository(where)
    try:
        base = repo.blob_path(job.base_sha256).read_bytes()
        target = repo.blob_path(job.target_sha256).read_bytes()
        try:
            patch = create_patch(base, target)
        except FormatError:
            state, sha, size = "failed", "", 0
        else:
            sha, size = hashlib.sha256(patch).hexdigest(), len(patch)
            state = "ready" if size < len(target) else "useless"
            if state == "ready":
                repo.write_blob(sha, patch)
        with repo.transaction() as db:
            db.execute(
                "UPDATE deltas SET state = ?, patch_sha256 = ?, size = ? WHERE base_hash = ? AND target_sha256 = ?",
                (state, sha, size, job.base_hash, job.target_sha256),
            )
        return state, size
    finally:
        repo.close()

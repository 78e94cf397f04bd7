"""The builds modules failed on, as operators see and clear them: a failed build is never offered to that module
again (``offer`` invariant d) until an operator retries it, which is audited."""

from __future__ import annotations

from dataclasses import dataclass

from ovota.server.store.audit import audited, record
from ovota.server.store.errors import NotFound
from ovota.server.store.repository import Build, Repository


@dataclass(frozen=True)
class Failure:
    module: str
    sha256: str
    version: str
    at: float
    reason: str


def module_failures(repo: Repository, module: str) -> list[Failure]:
    """The builds a module (its registry key: the vehicle id, or ``@address``) failed on, latest first."""
    rows = repo.db.execute(
        "SELECT module, sha256, version, at, reason FROM module_failures WHERE module = ? ORDER BY at DESC", (module,)
    ).fetchall()
    return [Failure(str(m), str(s), str(v), float(a), str(r)) for m, s, v, a, r in rows]


def retry(repo: Repository, module: str, build: Build | None, now: float) -> list[Failure]:
    """Let the module be offered the builds it failed on again (only ``build``, if given); what was cleared.
    NotFound when there is nothing to retry."""
    with audited(repo.db, repo.actor, "fleet retry", module):
        cleared = [f for f in module_failures(repo, module) if build is None or f.sha256 == build.sha256]
        if not cleared:
            what = f"{build.version} ({build.sha256[:12]})" if build is not None else "any build"
            raise NotFound(f"module {module!r} has not failed on {what}")
        with repo.transaction() as db:
            for failure in cleared:
                db.execute("DELETE FROM module_failures WHERE module = ? AND sha256 = ?", (module, failure.sha256))
            db.execute("DELETE FROM module_attempts WHERE module = ?", (module,))
            db.execute(
                "INSERT INTO module_retries VALUES (?, ?, ?) ON CONFLICT (module) DO UPDATE SET at = excluded.at, "
                "actor = excluded.actor",
                (module, now, repo.actor),
            )
            record(db, repo.actor, "fleet retry", module, ", ".join(f.version for f in cleared))
    return cleared

"""Which builds a module failed on, learned from its requests: the rule without I/O, and its record in the
database (applied in the registry's batch, event by event in arrival order).

A module *attempts* a build when it has received all of its bytes (the whole image or a whole delta patch to
it). Its later check-ins tell what became of it:

- running the build's version: it runs it;
- still another version once the grace period has passed since it received it: it failed on it (the image did
  not boot and the bootloader fell back, or the module was never rebooted);
- having run it, an older version without receiving that one from the server: it went back from it (failed).

The device path applies the same rule in memory, so the very check-in that shows a failure is already
answered without the failed build; the database keeps it for restarts, other server processes and operators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from ovota.formats.versions import buildverscmp
from ovota.server.fleet.events import CheckIn, Download
from ovota.server.store.database import Database

DEFAULT_GRACE = 600.0  # outside a rollout (a rollout's build uses the rollout's --grace)


@dataclass(frozen=True)
class Attempt:
    """The build a module last received whole, and what became of it."""

    sha256: str
    version: str
    received: float
    running: bool = False  # it reported running it since
    failed_at: float | None = None  # when its check-ins showed it failed on it
    reason: str = ""

    @property
    def failed(self) -> bool:
        return self.failed_at is not None


def after_checkin(attempt: Attempt, version: str, now: float, grace: float) -> Attempt | None:
    """The attempt after a check-in running ``version`` at ``now``; None once it says nothing more (the module
    moved on to a newer version). A failed attempt stays failed."""
    if attempt.failed:
        return attempt
    if version == attempt.version:
        return replace(attempt, running=True)
    if attempt.running:
        if buildverscmp(version, attempt.version) < 0:
            return replace(attempt, failed_at=now, reason=f"went back to {version} after running it")
        return None
    if now - attempt.received >= grace:
        return replace(attempt, failed_at=now, reason=f"still reported {version} {_span(now - attempt.received)} "
                                                      "after receiving it")  # fmt: skip
    return attempt


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


# -- the record ----------------------------------------------------------------------------------------------


def apply_attempts(db: Database, events: Iterable[CheckIn | Download], grace: Callable[[str, str, str], float],
                   versions: Callable[[str], str]) -> None:  # fmt: skip
    """Apply a batch's whole downloads and check-ins to the modules' attempts and failures (in the caller's
    transaction). ``grace(product, tag, sha256)``: the grace period for that build; ``versions(sha256)``: a
    build's version."""
    for event in events:
        if isinstance(event, Download):
            if event.completed:
                db.execute(
                    "INSERT INTO module_attempts VALUES (?, ?, ?, ?, 0) ON CONFLICT (module) DO UPDATE SET "
                    "sha256 = excluded.sha256, version = excluded.version, received = excluded.received, running = 0",
                    (event.module, event.sha256, versions(event.sha256), event.at),
                )
            continue
        row = db.execute("SELECT sha256, version, received, running FROM module_attempts WHERE module = ?",
                         (event.module,)).fetchone()  # fmt: skip
        if row is None:
            continue
        attempt = Attempt(str(row[0]), str(row[1]), float(row[2]), bool(row[3]))
        after = after_checkin(attempt, event.agent.version, event.at, grace(event.product, event.tag, attempt.sha256))
        if after == attempt:
            continue
        if after is None or after.failed:
            db.execute("DELETE FROM module_attempts WHERE module = ?", (event.module,))
        else:
            db.execute("UPDATE module_attempts SET running = 1 WHERE module = ?", (event.module,))
        if after is not None and after.failed:
            db.execute(
                "INSERT INTO module_failures VALUES (?, ?, ?, ?, ?) ON CONFLICT (module, sha256) DO UPDATE SET "
                "at = excluded.at, reason = excluded.reason",
                (event.module, after.sha256, after.version, event.at, after.reason),
            )


def open_attempts(db: Database, builds: Iterable[str]) -> dict[str, Attempt]:
    """Per module, its attempt of one of ``builds`` (SHA-256s) that it has not reported running yet (modules
    that run their build are many; the device path remembers those it served itself)."""
    shas = sorted(set(builds))
    if not shas:
        return {}
    rows = db.execute(f"SELECT module, sha256, version, received, running FROM module_attempts "
                      f"WHERE running = 0 AND sha256 IN ({', '.join('?' * len(shas))})", shas).fetchall()  # fmt: skip
    return {str(m): Attempt(str(s), str(v), float(r), bool(run)) for m, s, v, r, run in rows}


def failures(db: Database, builds: Iterable[str]) -> dict[str, frozenset[str]]:
    """Per module, which of ``builds`` (SHA-256s) it failed on and was not retried since."""
    shas = sorted(set(builds))
    if not shas:
        return {}
    found: dict[str, set[str]] = {}
    marks = ", ".join("?" * len(shas))
    for module, sha256 in db.execute(f"SELECT module, sha256 FROM module_failures WHERE sha256 IN ({marks})",
                                     shas).fetchall():  # fmt: skip
        found.setdefault(str(module), set()).add(str(sha256))
    return {m: frozenset(s) for m, s in found.items()}


def retries(db: Database) -> dict[str, float]:
    """When an operator last retried each module (failures the device path saw before that no longer hold)."""
    return {str(m): float(at) for m, at in db.execute("SELECT module, at FROM module_retries").fetchall()}

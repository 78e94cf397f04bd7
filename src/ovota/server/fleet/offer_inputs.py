"""Everything the offer decision (``offer.decide``) needs for one channel, read from the database at once: the
channel's build, its active rollout, pins, waypoints and assignments, what each of those builds is (products,
size, signers, secure version), every product's rules, and the failures and open attempts of the modules.

The device path keeps one ``ChannelInputs`` per channel in memory and asks it for every module's answer;
``fleet list``, rollout status, the API and the console ask the same object read the same way, so what
operators read and what modules get cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from ovota.server.fleet.admission import admissions
from ovota.server.fleet.attempts import DEFAULT_GRACE, Attempt, failures, open_attempts, retries
from ovota.server.fleet.groups import members
from ovota.server.fleet.offer import BuildFacts, Layers, ModuleFacts, Offer, ProductRules, RolloutFacts, decide
from ovota.server.fleet.overrides import Overrides
from ovota.server.fleet.rollouts import Rollout, Rollouts
from ovota.server.store.database import Database
from ovota.server.store.errors import NotFound
from ovota.server.store.repository import Build, Channel, Repository
from ovota.server.store.trust import trusted_keys


@dataclass(frozen=True)
class ChannelInputs:
    """What decides the offers of one channel's modules (builds by SHA-256 in ``facts``)."""

    channel: Channel
    builds: dict[str, Build]  # every build below, by SHA-256
    facts: dict[str, BuildFacts]
    rollout: Rollout | None
    members: frozenset[str]
    admitted: frozenset[str]
    pins: dict[str, str]  # vehicle id -> build
    waypoints: tuple[str, ...]  # oldest first
    assignments: dict[str, str]  # vehicle id -> build
    rules: dict[str, ProductRules]
    failures: dict[str, frozenset[str]]  # module -> builds it failed on
    attempts: dict[str, Attempt]  # module -> its open attempt of one of these builds
    retried: dict[str, float]  # module -> when an operator last retried it
    _layers: dict[tuple[Callable[[str], int] | None, bool], Layers] = field(
        default_factory=dict, compare=False, repr=False
    )

    def attempt(self, module: str, newer: Attempt | None = None) -> Attempt | None:
        """The module's attempt: ``newer`` (the device path's own memory) unless the database knows a later one."""
        known = self.attempts.get(module)
        if newer is None or (known is not None and known.received > newer.received):
            return known
        return newer

    def module(self, module: str, vehicle_id: str, product: str, version: str,
               attempt: Attempt | None = None) -> ModuleFacts:  # fmt: skip
        """The decision's view of a module (``module``: its registry key)."""
        failed = self.failures.get(module, frozenset())
        attempt = self.attempt(module, attempt)
        if attempt is not None and attempt.failed_at is not None and attempt.failed_at > self.retried.get(module, -1):
            failed = failed | {attempt.sha256}
        return ModuleFacts(vehicle_id, product, version, failed)

    def offer(self, module: ModuleFacts | None, now: float, place: Callable[[str], int] | None = None) -> Offer:
        """What ``module`` (None: a client that is no OVMS module: no pins, waypoints or assignments) is offered
        now, and why."""
        if module is None:
            return decide(ModuleFacts("", self.channel.product, ""), self._base(place, False), self.rules, now)
        layers = self._base(place, True)
        vehicle_id = module.vehicle_id
        pin = self.pins.get(vehicle_id) if vehicle_id else None
        assigned = self.assignments.get(vehicle_id) if vehicle_id else None
        if pin is not None or assigned is not None:
            layers = replace(layers, pin=None if pin is None else self.facts[pin],
                             assignment=None if assigned is None else self.facts[assigned])  # fmt: skip
        return decide(module, layers, self.rules, now)

    def _base(self, place: Callable[[str], int] | None, waypoints: bool) -> Layers:
        """The layers every module shares: channel, rollout and (for OVMS modules) waypoints; made once."""
        found = self._layers.get((place, waypoints))
        if found is None:
            rollout = None
            if self.rollout is not None:
                build = self.facts[self.rollout.to_build.sha256]
                rollout = RolloutFacts(self.rollout, build, self.members, self.admitted, place)
            passed = tuple(self.facts[w] for w in self.waypoints) if waypoints else ()
            found = Layers(self.facts[self.channel.build.sha256], rollout, waypoints=passed)
            self._layers[(place, waypoints)] = found
        return found

    def grace(self, sha256: str) -> float:
        """How long after receiving a build a module may still report another version before it counts as failed."""
        rollout = self.rollout
        return rollout.settings.grace if rollout is not None and rollout.to_build.sha256 == sha256 else DEFAULT_GRACE


def build_facts(repo: Repository, build: Build) -> BuildFacts:
    """What the decision knows of a build."""
    security = repo.security(build.sha256)
    return BuildFacts(build.sha256, build.version, build.size, repo.products(build),
                      frozenset(security.signers), security.secure_version)  # fmt: skip


def product_rules(db: Database) -> dict[str, ProductRules]:
    """Every product's rules: trusted keys, anti-rollback floor, and the secure version of each version served."""
    trusted: dict[str, set[str]] = {}
    for key in trusted_keys(db):
        trusted.setdefault(key.product, set()).add(key.digest)
    rows = db.execute("SELECT product, min_secure_version FROM product_rules").fetchall()
    floors = {str(p): int(n) for p, n in rows}
    secure: dict[str, dict[str, int]] = {}
    for product, version, level in db.execute(
        "SELECT p.product, b.version, max(s.secure_version) FROM builds b JOIN build_security s ON s.sha256 = b.sha256 "
        "JOIN build_products p ON p.sha256 = b.sha256 WHERE s.secure_version > 0 GROUP BY p.product, b.version"
    ).fetchall():
        secure.setdefault(str(product), {})[str(version)] = int(level)
    return {
        product: ProductRules(frozenset(trusted.get(product, ())), floors.get(product, 0), secure.get(product, {}))
        for product in set(trusted) | set(floors) | set(secure)
    }


def read_inputs(rollouts: Rollouts, product: str, tag: str) -> ChannelInputs | None:
    """The channel's inputs; None when the channel does not exist."""
    repo = rollouts.repo
    try:
        channel = repo.channel(product, tag)
    except NotFound:
        return None
    overrides = Overrides(repo).load(product, tag)
    rollout = rollouts.active(product, tag)
    builds: dict[str, Build] = {channel.build.sha256: channel.build}
    listed: Iterable[Build] = [*overrides.pins.values(), *overrides.waypoints, *overrides.assignments.values()]
    builds.update((b.sha256, b) for b in listed)
    group, admitted = frozenset[str](), frozenset[str]()
    if rollout is not None:
        builds[rollout.to_build.sha256] = rollout.to_build
        group = members(repo.db, rollout.settings.target.groups)
        admitted = frozenset(admissions(repo.db, rollout.id)) if rollout.settings.rate else frozenset()
    return ChannelInputs(
        channel,
        builds,
        {sha: build_facts(repo, build) for sha, build in builds.items()},
        rollout,
        group,
        admitted,
        {v: b.sha256 for v, b in overrides.pins.items()},
        tuple(b.sha256 for b in overrides.waypoints),
        {v: b.sha256 for v, b in overrides.assignments.items()},
        product_rules(repo.db),
        failures(repo.db, builds),
        open_attempts(repo.db, builds),
        retries(repo.db),
    )

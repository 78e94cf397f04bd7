"""The offer invariants under random sequences of operator actions and module reports, against a real repository
(SQLite in a folder): hypothesis's rule-based state machine publishes, promotes, rolls back, starts, pauses,
resumes and aborts rollouts, pins and unpins, retries, raises the anti-rollback floor, lets modules check in,
download and boot or fail, and moves time; after every step every module's offer is checked against invariants
a-e, read from the database independently of the decision."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ovota.formats.image_builder import build_app_image
from ovota.server.fleet.agent import Agent
from ovota.server.fleet.control import RolloutControl
from ovota.server.fleet.decisions import RolloutDecider
from ovota.server.fleet.explain import Explainer
from ovota.server.fleet.failures import retry
from ovota.server.fleet.offer import Offer
from ovota.server.fleet.overrides import Overrides
from ovota.server.fleet.registry import FleetRecorder
from ovota.server.fleet.rollouts import Rollouts, parse_settings
from ovota.server.store.errors import RepositoryError
from ovota.server.store.product_rules import set_min_secure_version
from ovota.server.store.repository import Repository
from tests.module_helpers import BUILT

NEW, OLD = "v3.3-5", "v3.3"
SIZE = 8192
# (version, product, secure version): what the machine may publish.
IMAGES = {
    "3.3.006": (NEW, 0),
    "3.3.007": (NEW, 0),
    "3.3.008": (NEW, 1),
    "3.3.009": (NEW, 2),
    "3.3.005-2-gccccccc": (OLD, 0),
}
DATA = {v: build_app_image(v, size=SIZE, built=BUILT, secure_version=sv) for v, (_, sv) in IMAGES.items()}
MODULES = {"M1": NEW, "M2": NEW, "M3": NEW, "M4": NEW, "OLD1": OLD}
TAGS = ("main", "edge", "mian")  # "mian": a typo that must never make a channel


class OfferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="offer-machine-"))
        self.repo = Repository(self.folder)
        self.repo.actor = "machine"
        self.rollouts = Rollouts(self.repo)
        self.control = RolloutControl(self.rollouts)
        self.decider = RolloutDecider(self.rollouts)
        self.recorder = FleetRecorder(self.repo)
        self.now = 1_800_000_000.0
        self.repo.publish(DATA["3.3.006"], "main")
        self.repo.publish(DATA["3.3.005-2-gccccccc"], "main", OLD)
        self.repo.publish(DATA["3.3.007"], "edge")
        self.running = {m: ("3.3.005-2-gccccccc" if p == OLD else "3.3.006") for m, p in MODULES.items()}
        for module in MODULES:
            self._check_in(module)
        self.now += 60

    def teardown(self) -> None:
        self.repo.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- what modules do ---------------------------------------------------------------------------------------

    def _agent(self, module: str) -> Agent:
        return Agent(MODULES[module], module, self.running[module], "ota_0", "main")

    def _check_in(self, module: str) -> None:
        self.recorder.check_in(self._agent(module), MODULES[module], "main", "127.0.0.1", self.now)
        self._flush()

    def _flush(self) -> None:
        batch = self.recorder.take()
        if batch is not None:
            self.recorder.write(batch)

    def _offer(self, module: str) -> Offer | None:
        return Explainer(self.rollouts, self.now).offer(MODULES[module], "main", module, module, self.running[module])

    @rule(module=st.sampled_from(sorted(MODULES)))
    def check_in(self, module: str) -> None:
        self._check_in(module)

    @rule(module=st.sampled_from(sorted(MODULES)), outcome=st.sampled_from(("boots", "falls back", "goes back")))
    def update(self, module: str, outcome: str) -> None:
        """The module downloads what it is offered (whole), then boots it; or falls back to what it ran and reports
        that after the grace period; or boots it and later goes back to what it ran."""
        offer = self._offer(module)
        if offer is None or offer.build is None or offer.version == self.running[module]:
            return
        build, before = offer.build, self.running[module]
        agent = self._agent(module)
        self.recorder.download(agent, MODULES[module], "main", "127.0.0.1", build.sha256, build.size, True, self.now)
        self._flush()
        self.now += 30
        if outcome == "falls back":
            self.now += 700
        else:
            self.running[module] = build.version
        self._check_in(module)
        if outcome == "goes back":
            self.now += 60
            self.running[module] = before
            self._check_in(module)

    @rule(seconds=st.sampled_from((60, 700, 3600, 86400, 3 * 86400)))
    def advance(self, seconds: int) -> None:
        self.now += seconds
        self.decider.evaluate(self.now)

    # -- what operators do (refusals are fine: they must change nothing) ---------------------------------------

    def _try(self, action: Callable[[], object]) -> None:
        with contextlib.suppress(RepositoryError):
            action()

    @rule(version=st.sampled_from(sorted(IMAGES)), tag=st.sampled_from(TAGS), force=st.booleans())
    def publish(self, version: str, tag: str, force: bool) -> None:
        self._try(lambda: self.repo.publish(DATA[version], tag, IMAGES[version][0], force=force))

    @rule(source=st.sampled_from(("edge", "main")), dest=st.sampled_from(("main", "mian")), force=st.booleans())
    def promote(self, source: str, dest: str, force: bool) -> None:
        self._try(lambda: self.repo.promote(NEW, source, dest, force))

    @rule(force=st.booleans())
    def rollback(self, force: bool) -> None:
        self._try(lambda: self.repo.rollback(NEW, "main", force))

    @rule(version=st.sampled_from(sorted(IMAGES)), steps=st.sampled_from(("50,100", "1,100", "100")),
          vehicles=st.sampled_from(((), ("M1", "M2"), ("NOSUCH*",))))  # fmt: skip
    def start_rollout(self, version: str, steps: str, vehicles: tuple[str, ...]) -> None:
        def start() -> None:
            settings_ = parse_settings(steps=steps, step_interval="1h", min_sample=2, vehicles=vehicles)
            self.control.start(NEW, "main", self.repo.find_build(version), settings_, self.now)

        self._try(start)

    @rule(action=st.sampled_from(("pause", "resume", "abort")))
    def steer(self, action: str) -> None:
        self._try(lambda: self.control.act(action, NEW, "main", self.now))

    @rule(module=st.sampled_from(sorted(MODULES)), version=st.sampled_from(sorted(IMAGES)))
    def pin(self, module: str, version: str) -> None:
        self._try(lambda: Overrides(self.repo).pin(module, self.repo.find_build(version), self.now))

    @rule(module=st.sampled_from(sorted(MODULES)))
    def unpin(self, module: str) -> None:
        self._try(lambda: Overrides(self.repo).unpin(module))

    @rule(module=st.sampled_from(sorted(MODULES)))
    def retry(self, module: str) -> None:
        self._try(lambda: retry(self.repo, module, None, self.now))

    @rule(level=st.integers(0, 2))
    def floor(self, level: int) -> None:
        self._try(lambda: set_min_secure_version(self.repo.db, NEW, level, "machine"))

    # -- the invariants ------------------------------------------------------------------------------------------

    @precondition(lambda self: hasattr(self, "repo"))
    @invariant()
    def every_offer_keeps_every_invariant(self) -> None:
        db = self.repo.db
        for module, product in MODULES.items():
            offer = self._offer(module)
            if offer is None or offer.build is None:
                continue
            sha = offer.build.sha256
            rows = db.execute("SELECT product FROM build_products WHERE sha256 = ?", (sha,)).fetchall()
            products = {str(p) for (p,) in rows}
            assert product in products, (module, offer)  # a
            slot = 0x700000 if product.endswith("-5") else 0x400000
            assert (offer.build.size // 4096 + 1) * 4096 <= slot  # b
            failed = db.execute("SELECT 1 FROM module_failures WHERE module = ? AND sha256 = ?", (module, sha))
            assert failed.fetchone() is None, (module, offer)  # d
            (level,) = db.execute("SELECT secure_version FROM build_security WHERE sha256 = ?", (sha,)).fetchone()
            row = db.execute("SELECT min_secure_version FROM product_rules WHERE product = ?", (product,)).fetchone()
            runs = db.execute(
                "SELECT max(s.secure_version) FROM builds b JOIN build_security s ON s.sha256 = b.sha256 "
                "JOIN build_products p ON p.sha256 = b.sha256 WHERE b.version = ? AND p.product = ?",
                (self.running[module], product),
            ).fetchone()[0]
            assert level >= max(row[0] if row else 0, runs or 0), (module, offer)  # e
        # No channel was made by a typo.
        assert db.execute("SELECT 1 FROM channels WHERE tag = 'mian'").fetchone() is None


OfferMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestOfferMachine = OfferMachine.TestCase

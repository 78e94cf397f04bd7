"""What the server holds in memory: channel answers, rollout views, device pins, open blobs, and the loops
that flush the fleet registry and evaluate rollouts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ovota.server import deltas
from ovota.server.blob_response import OpenBlob
from ovota.server.clock import ServerClock
from ovota.server.database import DatabaseUnavailable
from ovota.server.fleet import Agent, FleetRecorder
from ovota.server.repository import NAME, Channel, NotFound, Repository
from ovota.server.rollout_policy import RolloutState
from ovota.server.rollouts import Decision, Rollout, Rollouts, status_summary

BIN, VER = "ovms3.bin", "ovms3.ver"
PIN_SECONDS = 15 * 60
RECHECK_SECONDS = 0.05
MAX_PINS = 100_000
FLUSH_SECONDS = 0.5  # the fleet registry's batch window (real seconds)
EVALUATE_SECONDS = 0.5  # how often rollouts are checked for silent modules, halts and step advances
MAX_COHORT_CACHE = 200_000
DELTA_SECONDS = 2.0  # how often missing delta patches are looked for

log = logging.getLogger("ovota.server")

REPO_KEY = web.AppKey("repo", Repository)


@dataclass(frozen=True)
class Served:
    """What the device paths serve for one channel, prepared once per change."""

    channel: Channel
    ver_body: bytes
    ver_etag: str
    ver_headers: CIMultiDictProxy[str]  # built once: header construction is a large part of a .ver request


@dataclass
class RolloutView:
    """What a channel with an active rollout serves: the new build to its cohort, the old one to others."""

    rollout: Rollout
    old: Served
    new: Served
    cohort: dict[str, bool]  # vehicle id -> in the current cohort (the hash is computed once per id)

    def choose(self, agent: Agent | None) -> Served:
        rollout = self.rollout
        if rollout.state is RolloutState.HALTED:
            # Modules already running the new build stay on it; nobody else is offered it.
            return self.new if agent is not None and agent.version == rollout.to_build.version else self.old
        vehicle_id = agent.vehicle_id if agent is not None else ""
        member = self.cohort.get(vehicle_id)
        if member is None:
            if len(self.cohort) > MAX_COHORT_CACHE:
                self.cohort.clear()
            member = self.cohort[vehicle_id] = rollout.in_cohort(vehicle_id)
        return self.new if member else self.old


def _served(channel: Channel) -> Served:
    etag = f'"{channel.build.sha256[:32]}-ver"'
    headers = CIMultiDict(
        {
            "Content-Type": "text/plain; charset=utf-8",
            "ETag": etag,
            "Last-Modified": formatdate(channel.updated, usegmt=True),
            "Cache-Control": "no-cache",
        }
    )
    return Served(channel, channel.ver_file, etag, CIMultiDictProxy(headers))


class ServerState:
    """Caches channel lookups and rollouts until the repository changes, and remembers device pins."""

    def __init__(self, repo: Repository, clock: ServerClock, fleet: bool = True, delta_bases: int = 0) -> None:
        self.repo = repo
        self.clock = clock
        self.rollouts = Rollouts(repo)
        # Writes that take an fsync (registry batches, rollout decisions) run in a thread on a connection of
        # their own, one at a time, so requests are never held up behind the disk.
        self.background_repo = Repository(repo.backends)
        self.recorder = FleetRecorder(self.background_repo) if fleet else None
        self.evaluator = Rollouts(self.background_repo)
        self._background_lock = asyncio.Lock()
        self.delta_bases = delta_bases
        self._delta_hashes: dict[str, str | None] = {}
        self._delta_worker: multiprocessing.process.BaseProcess | None = None
        self._version = -1
        self._next_check = 0.0
        self._blobs: dict[str, OpenBlob] = {}
        self._served: dict[tuple[str, str], Served | RolloutView | None] = {}
        self._stale: set[tuple[str, str]] = set()  # answers to reload (kept while the database is away)
        self._pins: OrderedDict[tuple[str, str, str, str], tuple[float, Served]] = OrderedDict()
        self._notifications: set[asyncio.Future[None]] = set()

    def invalidate(self) -> None:
        self._stale = set(self._served)

    def served(self, product: str, tag: str, agent: Agent | None = None) -> Served | None:
        """What the channel serves to this module: its build, or, during a rollout, the one for the module."""
        found = self._lookup(product, tag)
        return found.choose(agent) if isinstance(found, RolloutView) else found

    def _lookup(self, product: str, tag: str) -> Served | RolloutView | None:
        now = time.monotonic()
        if now >= self._next_check:
            # Another process (the CLI, another worker or server) may have published: look at most every 50 ms.
            self._next_check = now + RECHECK_SECONDS
            with contextlib.suppress(DatabaseUnavailable):
                version = self.repo.data_version()
                if version != self._version:
                    self._stale = set(self._served)
                    self._version = version
        key = (product, tag)
        if key in self._served and key not in self._stale:
            return self._served[key]
        try:
            self._served[key] = self._load(product, tag)
        except DatabaseUnavailable:
            # The database is restarting: modules keep getting what this process last knew (503 if nothing).
            if key not in self._served:
                raise
            return self._served[key]
        self._stale.discard(key)
        return self._served[key]

    def _load(self, product: str, tag: str) -> Served | RolloutView | None:
        if not (NAME.match(product) and NAME.match(tag)):
            return None
        try:
            channel = self.repo.channel(product, tag)
        except NotFound:
            return None
        served = _served(channel)
        rollout = self.rollouts.active(product, tag)
        if rollout is None:
            return served
        new = _served(Channel(product, tag, rollout.to_build, rollout.updated))
        return RolloutView(rollout, served, new, {})

    async def flush(self) -> None:
        """Write the registry's batch (in a thread); a failed batch is kept for the next flush."""
        if self.recorder is None:
            return
        batch = self.recorder.take()
        if batch is None:
            return
        async with self._background_lock:
            try:
                await asyncio.to_thread(self.recorder.write, batch)
            except BaseException:
                self.recorder.restore(batch)
                raise

    async def evaluate(self) -> None:
        """Rollout decisions due now (in a thread), then serve and announce them."""
        async with self._background_lock:
            decisions = await asyncio.to_thread(self._evaluate_if_leader)
        self.decided(decisions)

    def _evaluate_if_leader(self) -> list[Decision]:
        # Several servers on one PostgreSQL: one of them (the holder of an advisory lock) decides, so a step
        # or a halt is decided and announced once; when it dies, its lock goes with its connection.
        if not self.background_repo.leads("rollouts"):
            return []
        return self.evaluator.evaluate(self.clock.now())

    async def make_deltas(self) -> None:
        """Make the patches that are missing, one at a time, in a worker process (never in a request)."""
        if self.delta_bases <= 0:
            return
        async with self._background_lock:
            jobs = await asyncio.to_thread(deltas.wanted, self.background_repo, self.delta_bases, self._delta_hashes)
            job = next((j for j in jobs if deltas.claim(self.background_repo, j)), None)
        if job is None:
            return
        # A process of its own (spawned, not forked: the server has threads and an event loop a forked child
        # must not inherit); it records the outcome itself. Stopping the server stops it; its claim expires.
        self._delta_worker = multiprocessing.get_context("spawn").Process(
            target=deltas.make, args=(self.repo.backends, job), daemon=True
        )
        self._delta_worker.start()
        while self._delta_worker.is_alive():
            await asyncio.sleep(0.1)
        log.info("delta %s -> %s made (exit %s)", job.base_hash[:12], job.target_sha256[:12],
                 self._delta_worker.exitcode)  # fmt: skip
        self._delta_worker = None

    def close_background(self) -> None:
        if self._delta_worker is not None and self._delta_worker.is_alive():
            self._delta_worker.terminate()
            self._delta_worker.join(5)
        self.background_repo.close()

    async def advance_clock(self, when: float) -> None:
        """Driven clock: flush what happened so far, move time, then make the rollout decisions now due."""
        await self.flush()
        self.clock.advance_to(when)
        async with self._background_lock:
            await asyncio.to_thread(self.background_repo.save_clock, self.clock)
        await self.evaluate()

    def decided(self, decisions: list[Decision]) -> None:
        """Rollout decisions made by this process: serve accordingly from now on, and announce them."""
        if not decisions:
            return
        self.invalidate()
        for decision in decisions:
            log.warning("rollout %d of %s/%s %s: %s", decision.rollout.id, decision.rollout.product,
                        decision.rollout.tag, decision.event, decision.message)  # fmt: skip
            if decision.rollout.settings.notify_url:
                self._notifications.add(asyncio.ensure_future(self._notify(decision)))

    async def _notify(self, decision: Decision) -> None:
        """POST the decision as JSON to the rollout's notify URL (one attempt, 10 s)."""
        rollout = decision.rollout
        body = {"event": decision.event, "message": decision.message, **status_summary(self.rollouts, rollout)}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(rollout.settings.notify_url, json=body) as response,
            ):
                if response.status >= 300:
                    log.warning("notify URL %s answered %d", rollout.settings.notify_url, response.status)
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("notify URL %s failed: %s", rollout.settings.notify_url, err)

    async def notify_pending(self) -> None:
        """Wait for notifications still being sent (at shutdown)."""
        if self._notifications:
            await asyncio.wait(self._notifications, timeout=10)

    async def blob(self, sha256: str) -> OpenBlob:
        """The build's blob, opened once: blobs are immutable, so the descriptor stays valid. With S3 the
        first request fetches it into the local cache (in a thread; BlobUnavailable if the store is down)."""
        blob = self._blobs.get(sha256)
        if blob is None:
            path = await asyncio.to_thread(self.repo.blob_path, sha256)
            blob = self._blobs[sha256] = OpenBlob.open(path, sha256)
        return blob

    def close(self) -> None:
        for blob in self._blobs.values():
            blob.file.close()
        self._blobs.clear()

    def pin(self, request: web.Request, product: str, tag: str, served: Served) -> None:
        key = (request.remote or "", request.headers.get("User-Agent", ""), product, tag)
        self._pins[key] = (time.monotonic(), served)
        self._pins.move_to_end(key)
        while len(self._pins) > MAX_PINS:
            self._pins.popitem(last=False)

    def pinned(self, request: web.Request, product: str, tag: str) -> Served | None:
        key = (request.remote or "", request.headers.get("User-Agent", ""), product, tag)
        entry = self._pins.get(key)
        if entry is None or time.monotonic() - entry[0] > PIN_SECONDS:
            return None
        return entry[1]


STATE_KEY = web.AppKey("state", ServerState)


async def background(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: flush the registry and evaluate rollouts until shutdown, then flush once more."""
    state = app[STATE_KEY]
    task = asyncio.create_task(_loop(state))
    delta_task = asyncio.create_task(_delta_loop(state))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    delta_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await delta_task
    await state.notify_pending()
    await state.flush()
    state.close_background()


async def _loop(state: ServerState) -> None:
    next_evaluation = 0.0
    failing = False
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        try:
            await state.flush()
            if not state.clock.driven and time.monotonic() >= next_evaluation:
                next_evaluation = time.monotonic() + EVALUATE_SECONDS
                await state.evaluate()
        except DatabaseUnavailable as err:
            # PostgreSQL restarting: the batch stays buffered (bounded) and is written once it is back.
            if not failing:
                log.warning("database unavailable, buffering check-ins: %s", err)
            failing = True
            continue
        except Exception:  # a failing flush must not stop the loop (e.g. the database is locked for a while)
            log.exception("fleet flush or rollout evaluation failed")
            continue
        if failing:
            log.warning("database back; buffered check-ins written")
            failing = False


async def _delta_loop(state: ServerState) -> None:
    while True:
        await asyncio.sleep(DELTA_SECONDS)
        try:
            await state.make_deltas()
        except Exception:
            log.exception("making a delta patch failed")

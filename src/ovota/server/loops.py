"""The server's background work, each on a loop of its own: write the fleet registry's batches, evaluate
rollouts, make delta patches. Database writes here run in a thread on a connection of their own, one at a
time, so requests are never held up behind an fsync."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from ovota.server.fleet.decisions import RolloutDecider
from ovota.server.fleet.notify import Notifier
from ovota.server.fleet.registry import DOWNLOADS_RETENTION, BatchFailed, FleetRecorder
from ovota.server.fleet.rollouts import Decision, Rollouts
from ovota.server.fleet.status import RolloutStatus
from ovota.server.metrics import (
    BACKGROUND_FAILING,
    BACKGROUND_FAILURES,
    REGISTRY_BATCH_EVENTS,
    REGISTRY_BATCH_SECONDS,
    REGISTRY_DROPPED,
)
from ovota.server.store import deltas
from ovota.server.store.audit import SERVER
from ovota.server.store.backends import Backends
from ovota.server.store.clock import ServerClock, save_clock
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.repository import Repository

FLUSH_SECONDS = 0.5  # the fleet registry's batch window (real seconds)
PRUNE_SECONDS = 600.0  # how often download records past their retention are deleted (real seconds)
EVALUATE_SECONDS = 0.5  # how often rollouts are checked for silent modules, halts and step advances
DELTA_SECONDS = 2.0  # how often missing delta patches are looked for

log = logging.getLogger("ovota.server")


class WorkerHealth:
    """Which background workers are failing now, and why. A failure is logged once (again only when its reason
    changes) and counted in the metrics; recovery is logged once. ``/readyz`` shows the failing ones."""

    def __init__(self) -> None:
        self.failing: dict[str, str] = {}

    def failed(self, worker: str, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}"
        BACKGROUND_FAILURES.labels(worker).inc()
        BACKGROUND_FAILING.labels(worker).set(1)
        if self.failing.get(worker) != reason:
            log.error("%s failed, retrying later: %s", worker, reason, exc_info=not isinstance(err, OSError))
        self.failing[worker] = reason

    def ok(self, worker: str) -> None:
        if self.failing.pop(worker, None) is not None:
            BACKGROUND_FAILING.labels(worker).set(0)
            log.warning("%s works again", worker)


HEALTH = WorkerHealth()  # one per process: the workers and /readyz share it


class Background:
    """Registry flushes and rollout evaluation on the background connection; ``changed`` is told when a
    decision changes what channels serve, ``notifier`` announces it."""

    def __init__(self, backends: Backends, clock: ServerClock, fleet: bool, changed: Callable[[], None],
                 retention: float = DOWNLOADS_RETENTION) -> None:  # fmt: skip
        self.repo = Repository(backends)
        self.repo.actor = SERVER  # rollout decisions are the server's own
        self.clock = clock
        self.recorder = FleetRecorder(self.repo) if fleet else None
        rollouts = Rollouts(self.repo)
        self.decider = RolloutDecider(rollouts)
        self.status = RolloutStatus(rollouts)
        self.notifier = Notifier()
        self.changed = changed
        self.retention = retention
        self.lock = asyncio.Lock()  # one background write at a time on the connection

    async def flush(self) -> None:
        """Write the registry's batch (in a thread); a failed batch is kept for the next flush."""
        if self.recorder is None:
            return
        batch = self.recorder.take()
        if batch is None:
            return
        recorder = self.recorder
        async with self.lock:
            started, dropped = time.perf_counter(), recorder.dropped
            try:
                await asyncio.to_thread(recorder.write, batch)
                REGISTRY_BATCH_EVENTS.observe(len(batch.events))
                REGISTRY_BATCH_SECONDS.observe(time.perf_counter() - started)
                REGISTRY_DROPPED.inc(recorder.dropped - dropped)
            except BatchFailed as failed:
                self.recorder.restore(failed.remaining)
                raise DatabaseUnavailable(str(failed)) from None
            except BaseException:  # cancelled while writing: keep the batch for the final flush
                self.recorder.restore(batch)
                raise

    async def evaluate(self) -> None:
        """Rollout decisions due now (in a thread), then serve and announce them."""
        async with self.lock:
            decisions = await asyncio.to_thread(self._evaluate_if_leader)
        if decisions or self.decider.admitted:
            self.changed()
        if decisions:
            self.notifier.announce(decisions)

    def _evaluate_if_leader(self) -> list[tuple[Decision, dict[str, Any]]]:
        # Several servers on one PostgreSQL: one of them (the holder of an advisory lock) decides, so a step
        # or a halt is decided and announced once; when it dies, its lock goes with its connection.
        if not self.repo.leads("rollouts"):
            return []
        return [(d, self.status.summary(d.rollout)) for d in self.decider.evaluate(self.clock.now())]

    async def prune(self) -> None:
        """Delete download records older than the retention (on the server's clock)."""
        if self.recorder is not None:
            async with self.lock:
                await asyncio.to_thread(self.recorder.prune, self.clock.now(), self.retention)

    async def advance_clock(self, when: float) -> None:
        """Driven clock: flush what happened so far, move time, then make the rollout decisions now due and
        delete the download records now past their retention."""
        await self.flush()
        self.clock.advance_to(when)
        async with self.lock:
            await asyncio.to_thread(save_clock, self.repo.db, self.clock)
        await self.evaluate()
        await self.prune()

    async def run(self) -> None:
        """Flush every FLUSH_SECONDS and evaluate every EVALUATE_SECONDS (a driven clock evaluates when moved),
        until cancelled; a failure is logged and the loop goes on."""
        next_evaluation = 0.0
        next_prune = time.monotonic() + FLUSH_SECONDS
        failing = False
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
                if not self.clock.driven and time.monotonic() >= next_evaluation:
                    next_evaluation = time.monotonic() + EVALUATE_SECONDS
                    await self.evaluate()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_SECONDS
                    await self.prune()
            except DatabaseUnavailable as err:
                # PostgreSQL restarting: the batch stays buffered (bounded) and is written once it is back.
                if not failing:
                    log.warning("database unavailable, buffering check-ins: %s", err)
                failing = True
                continue
            except Exception as err:  # a failing round must not stop the loop (a locked database, a full disk)
                HEALTH.failed("registry and rollouts", err)
                continue
            HEALTH.ok("registry and rollouts")
            if failing:
                log.warning("database back; buffered check-ins written")
                failing = False


class DeltaMaker:
    """Makes the patches that are missing, one at a time, each in a worker process (never in a request)."""

    def __init__(self, background: Background, bases: int) -> None:
        self.background = background
        self.bases = bases
        self._hashes: dict[str, str | None] = {}  # build sha256 -> validation hash
        self._worker: multiprocessing.process.BaseProcess | None = None

    async def make_one(self) -> None:
        if self.bases <= 0:
            return
        repo = self.background.repo
        async with self.background.lock:
            jobs = await asyncio.to_thread(deltas.wanted, repo, self.bases, self._hashes)
            job = next((j for j in jobs if deltas.claim(repo, j)), None)
        if job is None:
            return
        # A process of its own (spawned, not forked: the server has threads and an event loop a forked child
        # must not inherit); it records the outcome itself. Stopping the server stops it; its claim expires.
        self._worker = multiprocessing.get_context("spawn").Process(
            target=deltas.make, args=(repo.backends, job), daemon=True
        )
        self._worker.start()
        while self._worker.is_alive():
            await asyncio.sleep(0.1)
        log.info("delta %s -> %s made (exit %s)", job.base_hash[:12], job.target_sha256[:12], self._worker.exitcode)
        self._worker = None

    async def run(self) -> None:
        """Make what is missing every DELTA_SECONDS; after a failure (a full disk) wait longer each time, up to
        five minutes, logging it once."""
        pause = DELTA_SECONDS
        while True:
            await asyncio.sleep(pause)
            try:
                await self.make_one()
            except Exception as err:
                HEALTH.failed("delta patches", err)
                pause = min(pause * 2, 300.0)
                continue
            HEALTH.ok("delta patches")
            pause = DELTA_SECONDS

    def stop(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            self._worker.terminate()
            self._worker.join(5)


def background_tasks(background: Background, maker: DeltaMaker) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context: the loops run until shutdown, then notifications are sent, the registry is
    flushed once more and the background connection closed."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(background.run()), asyncio.create_task(maker.run())]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await background.notifier.wait()
        await background.flush()
        maker.stop()
        background.repo.close()

    return context

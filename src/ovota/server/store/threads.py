"""Database work off the event loop: a few threads, each with a repository connection of its own.

Everything a request needs from the database runs here, so the event loop that serves modules never waits on
SQLite's write lock, an fsync or the network to PostgreSQL. Waits are bounded: a job that could not start
within ``queue_wait`` seconds is not run at all (the caller answers 503 and nothing was written), and a
statement waits at most ``busy_timeout`` seconds for another process's lock (DatabaseUnavailable).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from ovota.server.store.backends import Backends
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.repository import Repository

T = TypeVar("T")  # what each thread keeps over its connection
R = TypeVar("R")

QUEUE_WAIT = 5.0
BUSY_TIMEOUT = 5.0


class Busy(DatabaseUnavailable):
    """Every thread was taken for longer than the caller may wait."""


class RepositoryThreads(Generic[T]):
    """``size`` threads; each makes ``desk(repository)`` once, over a connection of its own, and hands it to
    the jobs it runs."""

    def __init__(self, backends: Backends, desk: Callable[[Repository], T], size: int, name: str,
                 queue_wait: float = QUEUE_WAIT, busy_timeout: float = BUSY_TIMEOUT) -> None:  # fmt: skip
        self.backends = backends
        self._desk = desk
        self.queue_wait = queue_wait
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._repos: list[Repository] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)

    def _own_desk(self) -> T:
        desk: T | None = getattr(self._local, "desk", None)
        if desk is None:
            repo = Repository(self.backends, busy_timeout=self.busy_timeout)
            with self._lock:
                self._repos.append(repo)
            desk = self._local.desk = self._desk(repo)
        return desk

    async def run(self, job: Callable[[T], R]) -> R:
        """``job(desk)`` in one of the threads; Busy if no thread could take it within ``queue_wait``."""
        deadline = time.monotonic() + self.queue_wait

        def start() -> R:
            if time.monotonic() > deadline:
                raise Busy("the server is busy: no database connection was free, nothing was done")
            return job(self._own_desk())

        return await asyncio.get_running_loop().run_in_executor(self._executor, start)

    def close(self) -> None:
        """Wait for running jobs, then close every thread's connection."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for repo in self._repos:
                repo.close()
            self._repos.clear()

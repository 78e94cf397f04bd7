"""The "OVMS AutoFlash" task: ``ota flash auto`` and the daily check run it beside the console.

On the module it is a FreeRTOS task: the console command returns at once, ``ota status`` shows its progress,
and on success the module restarts by itself. Here it is a thread. Its restart is carried out by the console
between two commands (or when a script waits for the task), so a reboot never lands inside a command's output.
A reboot from anywhere else kills the task, as a reset kills every task: it stops at its next flash write.
A power cut planned by a test (PowerLoss) in the task is raised again by :meth:`AutoFlashTask.wait`; any other
failure is logged at once, as an error line of the task.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ovota.device.flash import Interrupted, PowerLoss

T = TypeVar("T")


class TaskKilled(Interrupted):
    """The module rebooted while the task ran."""


class AutoFlashTask:
    """At most one AutoFlash thread; ``log(message, level)`` reports what it could not survive."""

    def __init__(self, log: Callable[[str, str], None]) -> None:
        self._log = log
        self._thread: threading.Thread | None = None
        self._failure: PowerLoss | None = None
        self._killed = threading.Event()
        self._waiting: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._lock = threading.Lock()
        self.restart_requested = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def launch(self, body: Callable[[], bool]) -> bool:
        """Start ``body`` (True: it flashed and the module must restart); False if a task already runs."""
        if self.running:
            return False
        self.wait()

        def run() -> None:
            try:
                if body():
                    self.restart_requested = True
            except TaskKilled:
                pass
            except PowerLoss as cut:  # a test's planned cut: the console thread raises it
                self._failure = cut
            except Exception as err:  # an emulator bug: one error line, not a thread dying in silence
                self._log(f"AutoFlash: emulator failure ({type(err).__name__}: {err})", "E")

        self._thread = threading.Thread(target=run, name="OVMS AutoFlash", daemon=True)
        self._thread.start()
        return True

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """asyncio.run for the task's network waits, which a reboot cancels at once (TaskKilled)."""
        loop = asyncio.new_event_loop()
        try:
            main = loop.create_task(coro)
            with self._lock:
                self._waiting = loop, main
                if self._killed.is_set():
                    main.cancel()
            try:
                return loop.run_until_complete(main)
            except asyncio.CancelledError:
                raise TaskKilled from None
        finally:
            with self._lock:
                self._waiting = None
            loop.close()

    def check(self) -> None:
        """In the task's thread, after a reboot: stop here (TaskKilled). Anywhere else: nothing."""
        if self._killed.is_set() and threading.current_thread() is self._thread:
            raise TaskKilled

    def wait(self) -> None:
        """Until the task has ended; a power cut in it is raised here."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def kill(self) -> None:
        """A reboot: the task stops at its next check or flash write, and is waited for; no restart follows."""
        with self._lock:
            self._killed.set()
            if self._waiting is not None:
                loop, main = self._waiting
                loop.call_soon_threadsafe(main.cancel)
        try:
            self.wait()
        finally:
            self._killed.clear()
            self.restart_requested = False

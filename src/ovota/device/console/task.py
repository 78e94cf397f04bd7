"""The "OVMS AutoFlash" task: ``ota flash auto`` and the daily check run it beside the console.

On the module it is a FreeRTOS task: the console command returns at once, ``ota status`` shows its progress,
and on success the module restarts by itself. Here it is a thread. Its restart is carried out by the console
between two commands (or when a script waits for the task), so a reboot never lands inside a command's output.
A power cut planned by a test (PowerLoss) in the task is raised again by :meth:`AutoFlashTask.wait`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class AutoFlashTask:
    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
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
            except BaseException as err:  # handed to the console thread, which raises it
                self._failure = err

        self._thread = threading.Thread(target=run, name="OVMS AutoFlash", daemon=True)
        self._thread.start()
        return True

    def wait(self) -> None:
        """Until the task has ended; what it raised is raised here."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

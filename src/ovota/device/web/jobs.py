"""The module's console as the web server uses it: one command at a time (OVMS's flashing mutex), each in a
worker thread, its output kept as lines the page streams or polls."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from aiohttp import web

from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.module import Module

T = TypeVar("T")
LOG = logging.getLogger("ovota.device.web")
SUCCESS = "OTA flash was successful"
_PERCENT = re.compile(r"(\d{1,3})%")  # the real page's progress rule: any "N%" in a line
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# An ESP_LOG line ("I (2420) ota: ..."): the module's log, which OVMS does not send to a web command's output.
LOG_LINE = re.compile(r"[EWIDV] \(\d+\) [^:\s]+: ")
# Lines that say a command failed, wherever a prefix (a timestamp, a log tag) puts them in the line.
_FAILED = ("Error:", "Usage: ", "Unrecognised command", "Subcommand required")


@dataclass
class Job:
    """One console command (or the upload's flash) and what it printed."""

    title: str
    lines: list[str] = field(default_factory=list)
    percent: int = 0
    done: bool = False
    ok: bool = False

    @property
    def output(self) -> list[str]:
        """What the command printed, without the module's log lines (OVMS's ExecuteCommand captures no log)."""
        return [line for line in self.lines if not LOG_LINE.match(line)]

    @property
    def failed_lines(self) -> bool:
        return any(marker in line for line in self.output for marker in _FAILED)

    @property
    def flashed(self) -> bool:
        return any(SUCCESS in line for line in self.lines)


class _JobStream:
    """The console writer's stream for a job: whole lines, colour codes dropped, the latest percentage."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + _ANSI.sub("", text)).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line.rstrip("\r"))
        return len(text)

    def _line(self, line: str) -> None:
        self.job.lines.append(line)
        match = None if LOG_LINE.match(line) else _PERCENT.search(line)  # a task's log is not this job
        if match and int(match.group(1)) <= 100:
            self.job.percent = int(match.group(1))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""


class Console:
    """The module's console session for the web server, and the job it is running or ran last."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.shell = Shell(module, Writer(_JobStream(Job("power on"))))  # boot events (SD auto-flash) run here
        self.job: Job | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ovms-console")
        self._future: asyncio.Future[None] | None = None

    @property
    def labels(self) -> list[str]:
        """The app partitions ``ota boot`` knows on this module."""
        return [p.name for p in [self.module.layout.factory, *self.module.layout.ota_slots] if p is not None]

    def busy(self) -> bool:
        """A job runs, or the AutoFlash task holds the flashing mutex."""
        return (self.job is not None and not self.job.done) or self.shell.flashing.locked()

    def start(self, title: str, action: Callable[[Shell], object]) -> Job:
        """Run ``action(shell)`` in the worker thread; call from the event loop after checking ``busy()``.

        ``action`` may return a bool (success); otherwise the job succeeded if no line said it failed."""
        job = Job(title)
        stream = _JobStream(job)
        self.job = job
        self.shell.out = Writer(stream)

        def run() -> None:
            try:
                result = action(self.shell)
                stream.close()
                job.ok = bool(result) if isinstance(result, bool) else not job.failed_lines
                if job.ok and job.flashed:
                    job.percent = 100
            except Exception as err:  # an emulator bug: shown as the command's last line, not a dead worker
                LOG.exception("console job %r failed", title)
                stream.close()
                job.lines.append(f"Error: emulator failure ({type(err).__name__}: {err})")
            finally:
                job.done = True

        self._future = asyncio.get_running_loop().run_in_executor(self._worker, run)
        return job

    def run(self, line: str, title: str | None = None) -> Job:
        """Start a console line (one that :func:`forms.command` rebuilt) as a job."""
        return self.start(title or line, lambda shell: shell.execute(line))

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the worker thread, after whatever runs there, without making it the current job."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    async def wait(self) -> None:
        """Until the current job is done."""
        if self._future is not None:
            await asyncio.shield(self._future)

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        self.shell.power_off()


CONSOLE_KEY = web.AppKey("module_console", Console)

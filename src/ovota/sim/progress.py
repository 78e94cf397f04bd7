"""What a running simulation shows: rich's live table on a terminal; elsewhere (a pipe, a file, a CI log) a plain
line every few seconds of wall time, since a run on the real clock (ten minutes a tick) would otherwise print
nothing for minutes."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ovota.sim.fleet import Simulation

PLAIN_EVERY = 5.0  # seconds of wall time between plain lines: well inside the 10 s a watcher waits at most
VERSIONS_SHOWN = 3  # a plain line names the most run versions only


class Progress:
    """Shows ``update``'s state: on a terminal at once (live), elsewhere as a line at most every PLAIN_EVERY s."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self._printed = self.started
        self._live = Live(console=console, refresh_per_second=4, transient=True) if console.is_terminal else None

    def __enter__(self) -> Progress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()

    def update(self, now: float, simulation: Simulation) -> None:
        """The simulation at server time ``now``: redraw the live table, or print a line if one is due."""
        elapsed = time.monotonic() - self.started
        if self._live is not None:
            self._live.update(live_table(now, simulation, elapsed))
        elif time.monotonic() - self._printed >= PLAIN_EVERY:
            self._printed = time.monotonic()
            self.console.print(progress_line(now, simulation, elapsed), markup=False, highlight=False, soft_wrap=True)
            self.console.file.flush()  # a pipe is block-buffered: the line must reach its reader now


def _running(simulation: Simulation) -> list[tuple[str, int]]:
    """Modules per running version (silent ones left out), most first."""
    return Counter(m.version for m in simulation.modules if not m.silent).most_common()


def progress_line(now: float, simulation: Simulation, elapsed: float) -> str:
    """One line: wall time so far, the server's time, requests so far and the most run versions."""
    stats = simulation.stats
    running = _running(simulation)
    versions = ", ".join(f"{n} on {version}" for version, n in running[:VERSIONS_SHOWN])
    more = f" and {len(running) - VERSIONS_SHOWN} more versions" if len(running) > VERSIONS_SHOWN else ""
    return (
        f"{elapsed:.0f} s: server time {datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M} UTC, {stats.checkins} "
        f"check-ins, {stats.downloads} downloads, {stats.errors} errors; {versions or 'every module silent'}{more}"
    )


def live_table(now: float, simulation: Simulation, elapsed: float) -> Table:
    """The terminal's live table: modules per running version, under the server's time."""
    table = Table(title=f"Simulated {datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M} UTC ({elapsed:.0f} s)")
    for column in ("Version", "Modules"):
        table.add_column(column)
    for version, n in _running(simulation):
        table.add_row(version, str(n))
    stats = simulation.stats
    table.caption = f"{stats.checkins} check-ins, {stats.downloads} downloads, {stats.errors} errors"
    return table

"""``ovota fleet simulate``: many simulated OVMS modules against a real server (imported only when run)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console
from rich.table import Table

from ovota.device.fetch import failure_reason
from ovota.files import write_atomic
from ovota.formats import FormatError
from ovota.server.fleet.policy import PolicyError
from ovota.server.fleet.targeting import parse_schedule
from ovota.sim.fleet import FailureModel, Simulation, first_image, first_version, make_fleet, parse_hours, run
from ovota.sim.http import HttpFailed, Server, Unreachable
from ovota.sim.progress import Progress


@click.command("simulate")
@click.option(
    "--server", "server_url", required=True, help="The server as OVMS's `ota server`: host:port/firmware/ota."
)
@click.option("--modules", "count", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--product", default="v3.3-5", show_default=True)
@click.option("--tag", default="main", show_default=True)
@click.option("--fail", "fail_rules", multiple=True, help="VERSION:RATE: that share of modules falls back from it.")
@click.option("--silent", "silent_rules", multiple=True, help="VERSION:RATE: that share goes silent after it.")
@click.option("--days", default=7.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--id-prefix", default="SIM", show_default=True, help="Vehicle ids are PREFIX00001, PREFIX00002, …")
@click.option("--version", "start_version", help="The version the fleet runs at the start (default: the channel's).")
@click.option("--delta", is_flag=True, help="Modules ask for delta patches (ota delta yes); reports bytes saved.")
@click.option(
    "--auto-hour",
    "auto_hour",
    default="0-23",
    show_default=True,
    help="The modules' ota auto.hour, local time: 2 (OVMS's default), a range 0-23, or a list 1,2,3.",
)
@click.option("--timezone", default="UTC", show_default=True, help="The fleet's time zone (IANA), for auto.hour.")
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the report as JSON."
)
def simulate(
    server_url: str, count: int, product: str, tag: str, fail_rules: tuple[str, ...], silent_rules: tuple[str, ...],
    days: float, id_prefix: str, start_version: str | None, delta: bool, auto_hour: str, timezone: str,
    report_path: Path | None,
) -> None:  # fmt: skip
    """Run COUNT simulated OVMS modules against a real server for DAYS days of the server's clock."""
    try:
        server = Server.parse(server_url)
        fail, silent = FailureModel.parse(fail_rules), FailureModel.parse(silent_rules)
        hours = parse_hours(auto_hour)
        zone = parse_schedule((), timezone).zone
    except (ValueError, PolicyError) as err:
        raise FormatError(str(err)) from None
    try:
        start_version = start_version or asyncio.run(first_version(server, product, tag))
    except HttpFailed as err:
        raise _failed(server, err) from None
    simulation = Simulation(server, make_fleet(count, start_version, id_prefix, hours), product, tag, start_version,
                            fail, silent, delta=delta)  # fmt: skip
    if delta:
        # The fleet's first delta needs its base image: the channel's current one.
        try:
            channel_version = asyncio.run(first_version(server, product, tag))
            image = asyncio.run(first_image(server, product, tag))
        except HttpFailed as err:
            raise _failed(server, err) from None
        if channel_version != start_version:
            raise FormatError(
                f"--delta starts the fleet on the channel's build ({channel_version}), not {start_version}"
            )
        simulation.images[start_version] = image
    console = Console()
    if not console.is_terminal:
        # Piped or in a file: rich would assume 80 columns and cut the report's headers.
        console = Console(width=200)
    started = time.monotonic()
    clock_url = f"http://{server.host}:{server.port}/clock"
    with Progress(console) as progress:
        try:
            asyncio.run(run(simulation, clock_url, days, progress.update, zone, on_wait=progress.update))
        except (aiohttp.ClientError, HttpFailed, TimeoutError) as err:  # the server's clock did not answer
            raise _failed(server, err) from None
    wall = time.monotonic() - started
    console.print(_report_table(simulation))
    summary = _summary(simulation, wall)
    console.print(
        f"{count} modules, {len(simulation.days)} days in {wall:.1f} s: {summary['checkins']} check-ins "
        f"({summary['checkins_per_second']:.0f}/s), {summary['downloads']} downloads, "
        f"{summary['bytes_served'] / 1e6:.1f} MB served, {summary['exposed_share'] * 100:.1f}% of the fleet "
        f"received a new build, {summary['errors']} errors"
    )
    if delta:
        console.print(
            f"deltas: {summary['delta_downloads']} of {summary['downloads']} downloads, "
            f"{summary['bytes_saved'] / 1e6:.1f} MB saved fleet-wide"
        )
    if report_path is not None:
        report = {"summary": summary, "days": [day.__dict__ for day in simulation.days]}
        write_atomic(report_path, json.dumps(report, indent=2).encode())


def _failed(server: Server, err: BaseException) -> FormatError:
    """The one line for a server that did not answer (``cannot reach 127.0.0.1:1/firmware/ota: connection refused``)
    or answered without what the simulation needs."""
    if isinstance(err, aiohttp.ClientResponseError):
        return FormatError(f"{server}: GET {err.request_info.real_url} answered {err.status} {err.message}")
    if isinstance(err, Unreachable | OSError):
        return FormatError(
            f"cannot reach {server}: {err.reason if isinstance(err, Unreachable) else failure_reason(err)}"
        )
    return FormatError(str(err))


def _summary(simulation: Simulation, wall: float) -> dict[str, Any]:
    stats = simulation.stats
    exposed = sum(1 for m in simulation.modules if m.received - {simulation.first_version})
    return {
        "modules": len(simulation.modules),
        "first_version": simulation.first_version,
        "wall_seconds": wall,
        "checkins": stats.checkins,
        "checkins_per_second": stats.checkins / wall if wall else 0.0,
        "downloads": stats.downloads,
        "bytes_served": stats.bytes_served,
        "exposed": exposed,
        "exposed_share": exposed / len(simulation.modules),
        "failed": sum(m.failed for m in simulation.modules),
        "silent": sum(m.silent for m in simulation.modules),
        "errors": stats.errors,
        "delta_downloads": stats.delta_downloads,
        "bytes_saved": stats.bytes_saved,
    }


def _report_table(simulation: Simulation) -> Table:
    first = simulation.first_version
    table = Table(title=f"Fleet of {len(simulation.modules)} modules, from {first}")
    for column in ("Day", f"On {first}", "On newer", "Failed", "Silent", "Check-ins", "Downloads", "MB served",
                   "Ever received new"):  # fmt: skip
        table.add_column(column, justify="right")
    for day in simulation.days:
        on_first = day.versions.get(first, 0)
        table.add_row(
            str(day.day), str(on_first), str(sum(day.versions.values()) - on_first), str(day.failed), str(day.silent),
            str(day.checkins), str(day.downloads), f"{day.bytes_served / 1e6:.1f}",
            f"{day.exposed / len(simulation.modules) * 100:.1f}%",
        )  # fmt: skip
    return table

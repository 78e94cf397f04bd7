"""``ovota fleet``: the modules the server has seen, and the fleet simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from ovota.cli.repo_access import open_repository, repo_option
from ovota.server.fleet import list_modules, module_json


@click.group()
def fleet() -> None:
    """The fleet registry (which module runs what) and the fleet simulator."""


@fleet.command("list")
@repo_option
@click.option("--product", help="Only modules of this product.")
@click.option("--tag", help="Only modules following this channel.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
def list_fleet(repo: Path, product: str | None, tag: str | None, as_json: bool) -> None:
    """Every registered module: vehicle id, product, channel, version, partition, address, last seen."""
    with open_repository(repo) as r:
        modules = list_modules(r.db, product, tag)
    if as_json:
        click.echo(json.dumps([module_json(m) for m in modules], indent=2))
        return
    click.echo(f"{'Vehicle':<16} {'Product':<8} {'Tag':<6} {'Version':<28} {'Partition':<9} {'Address':<15} Last seen")
    for m in modules:
        seen = datetime.fromtimestamp(m.last_seen, UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{m.vehicle_id or '(none)':<16} {m.product:<8} {m.tag:<6} {m.version:<28} {m.partition:<9} "
            f"{m.address:<15} {seen}"
        )
    click.echo(f"{len(modules)} modules")

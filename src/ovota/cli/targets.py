"""``ovota fleet group|pin|unpin|pins|assignments|unassign`` and ``ovota release waypoint``: which modules get
which build besides their channel's (groups for targeted rollouts, pins, assignments, waypoints)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ovota.cli.output import row, when
from ovota.cli.repo_access import open_repository, repo_option
from ovota.server.fleet.failures import retry as retry_failed
from ovota.server.fleet.groups import Groups, ids_from_csv
from ovota.server.fleet.overrides import Overrides
from ovota.server.store.backends import Backends


@click.group("group")
def group() -> None:
    """Named sets of vehicle ids, for rollouts that target them (rollout start --group NAME)."""


@group.command("add")
@repo_option
@click.argument("name")
@click.argument("vehicle_ids", nargs=-1)
@click.option("--from-file", "csv_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A CSV file whose first column holds vehicle ids (a 'vehicle_id' header is skipped).")  # fmt: skip
def group_add(repo: Backends, name: str, vehicle_ids: tuple[str, ...], csv_file: Path | None) -> None:
    """Add vehicles to group NAME (made on first use)."""
    ids = list(vehicle_ids) + (ids_from_csv(csv_file.read_text(errors="replace")) if csv_file else [])
    with open_repository(repo) as r:
        added = Groups(r).add(name, ids, r.clock().now())
        size = len(Groups(r).show(name))
    row(f"Group {name}: {added} added, {len(set(ids)) - added} already in it, {size} vehicles")


@group.command("remove")
@repo_option
@click.argument("name")
@click.argument("vehicle_ids", nargs=-1)
def group_remove(repo: Backends, name: str, vehicle_ids: tuple[str, ...]) -> None:
    """Remove vehicles from group NAME, or the whole group when no vehicle is named."""
    with open_repository(repo, create=False) as r:
        removed = Groups(r).remove(name, vehicle_ids)
    row(f"Group {name}: {removed} removed" + ("" if vehicle_ids else " (group deleted)"))


@group.command("list")
@repo_option
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def group_list(repo: Backends, name: str | None, as_json: bool) -> None:
    """Every group and its size, or the vehicles of group NAME."""
    with open_repository(repo, create=False) as r:
        if name is not None:
            ids = Groups(r).show(name)
            if as_json:
                click.echo(json.dumps(ids, indent=2))
                return
            for vehicle_id in ids:
                row(vehicle_id)
            return
        sizes = Groups(r).sizes()
    if as_json:
        click.echo(json.dumps([{"name": n, "vehicles": c} for n, c in sizes], indent=2))
        return
    row(f"{'Group':<24} Vehicles")
    for group_name, count in sizes:
        row(f"{group_name:<24} {count}")


@click.command("pin")
@repo_option
@click.argument("vehicle_id")
@click.option("--build", "build_ref", required=True, help="A version or SHA-256 prefix of a build in the repository.")
def pin(repo: Backends, vehicle_id: str, build_ref: str) -> None:
    """Offer VEHICLE_ID this build whatever its channel, a waypoint or a rollout serves."""
    with open_repository(repo, create=False) as r:
        build = r.find_build(build_ref)
        Overrides(r).pin(vehicle_id, build, r.clock().now())
    row(f"Pinned {vehicle_id} to {build.version} ({build.sha256[:12]})")


@click.command("unpin")
@repo_option
@click.argument("vehicle_id")
def unpin(repo: Backends, vehicle_id: str) -> None:
    """Let VEHICLE_ID follow its channel (and rollouts) again."""
    with open_repository(repo, create=False) as r:
        Overrides(r).unpin(vehicle_id)
    row(f"Unpinned {vehicle_id}")


@click.command("pins")
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pins(repo: Backends, as_json: bool) -> None:
    """Every pinned vehicle, its build, when and by whom."""
    with open_repository(repo, create=False) as r:
        found = Overrides(r).pins()
    if as_json:
        rows = [{"vehicle_id": p.vehicle_id, "version": p.build.version, "sha256": p.build.sha256, "at": p.at,
                 "actor": p.actor} for p in found]  # fmt: skip
        click.echo(json.dumps(rows, indent=2))
        return
    row(f"{'Vehicle':<16} {'Version':<28} {'Pinned':<20} By")
    for p in found:
        row(f"{p.vehicle_id:<16} {p.build.version:<28} {when(p.at):<20} {p.actor}")


@click.command("assignments")
@repo_option
@click.option("--product", help="Only this product's.")
@click.option("--vehicle", "vehicle_id", help="Only this vehicle's.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def assignments(repo: Backends, product: str | None, vehicle_id: str | None, as_json: bool) -> None:
    """Where targeted rollouts left their modules (they keep that build until unassigned)."""
    with open_repository(repo, create=False) as r:
        found = Overrides(r).assignments(product, vehicle_id)
    if as_json:
        rows = [{"product": a.product, "tag": a.tag, "vehicle_id": a.vehicle_id, "version": a.build.version,
                 "sha256": a.build.sha256, "rollout": a.rollout, "at": a.at} for a in found]  # fmt: skip
        click.echo(json.dumps(rows, indent=2))
        return
    row(f"{'Vehicle':<16} {'Channel':<14} {'Version':<28} {'Rollout':<8} Since")
    for a in found:
        row(f"{a.vehicle_id:<16} {a.product + '/' + a.tag:<14} {a.build.version:<28} {a.rollout:<8} {when(a.at)}")
    row(f"{len(found)} assignments")


@click.command("unassign")
@repo_option
@click.argument("vehicle_id")
@click.option("--product", help="Only the assignment on this product's channels.")
@click.option("--tag", help="Only the assignment on this channel.")
def unassign(repo: Backends, vehicle_id: str, product: str | None, tag: str | None) -> None:
    """Let VEHICLE_ID follow its channel again after a targeted rollout."""
    with open_repository(repo, create=False) as r:
        removed = Overrides(r).unassign(vehicle_id, product, tag)
    row(f"Removed {removed} assignment{'s' if removed != 1 else ''} of {vehicle_id}")


@click.command("retry")
@repo_option
@click.argument("vehicle_id")
@click.option("--build", "build_ref", help="Only this build (a version or SHA-256 prefix); default: every one.")
def retry(repo: Backends, vehicle_id: str, build_ref: str | None) -> None:
    """Offer VEHICLE_ID the builds it failed on again (a module without a vehicle id: '@ADDRESS')."""
    with open_repository(repo, create=False) as r:
        build = r.find_build(build_ref) if build_ref else None
        cleared = retry_failed(r, vehicle_id, build, r.clock().now())
    for failure in cleared:
        row(f"Retrying {failure.version} ({failure.sha256[:12]}) for {vehicle_id}: it failed on it "
                   f"{when(failure.at)} ({failure.reason})")  # fmt: skip


@click.command("waypoint")
@repo_option
@click.option("--product", required=True, help="Product, e.g. v3.3-5.")
@click.option("--version", "build_ref", help="The waypoint: a version or SHA-256 prefix of a build.")
@click.option("--remove", is_flag=True, help="Remove this waypoint.")
@click.option("--list", "listing", is_flag=True, help="List the product's waypoints.")
def waypoint(repo: Backends, product: str, build_ref: str | None, remove: bool, listing: bool) -> None:
    """Make every module running an older version get this build first, whatever its channel serves, until it
    runs it (then it gets its channel's build): for one-time migrations later builds rely on."""
    if listing or build_ref is None:
        with open_repository(repo, create=False) as r:
            for build in Overrides(r).waypoints(product):
                row(f"{build.version}  {build.sha256[:12]}")
        return
    with open_repository(repo, create=False) as r:
        build = r.find_build(build_ref)
        if remove:
            Overrides(r).remove_waypoint(product, build)
        else:
            Overrides(r).add_waypoint(product, build, r.clock().now())
    row(f"{'Removed' if remove else 'Added'} waypoint {build.version} for {product}")


FLEET_COMMANDS = (group, pin, unpin, pins, assignments, unassign, retry)

"""``ovota fleet``: the modules the server has seen, and the fleet simulator."""

from __future__ import annotations

import json

import click

from ovota.cli.lazy import LazyGroup
from ovota.cli.output import row, when
from ovota.cli.repo_access import open_repository, repo_option
from ovota.cli.targets import FLEET_COMMANDS
from ovota.server.fleet.explain import Explainer, offer_json
from ovota.server.fleet.modules import list_modules, module_json
from ovota.server.fleet.rollouts import Rollouts
from ovota.server.store.audit import printable
from ovota.server.store.backends import Backends


@click.group(cls=LazyGroup, lazy={"simulate": "ovota.cli.simulate:simulate"})
def fleet() -> None:
    """The fleet registry (which module runs what) and the fleet simulator."""


@fleet.command("list")
@repo_option
@click.option("--product", help="Only modules of this product.")
@click.option("--tag", help="Only modules following this channel.")
@click.option("--json", "as_json", is_flag=True, help="A JSON list of objects.")
def list_fleet(repo: Backends, product: str | None, tag: str | None, as_json: bool) -> None:
    """Every registered module: vehicle id, product, channel, version, partition, address, last seen, and the
    build it is offered now with why (pin, waypoint, assignment, rollout or channel)."""
    with open_repository(repo, create=False) as r:
        modules = list_modules(r.db, product, tag)
        explainer = Explainer(Rollouts(r), r.clock().now())
        offers = [explainer.of(m) for m in modules]
    if as_json:
        rows = [module_json(m) | offer_json(o) for m, o in zip(modules, offers, strict=True)]
        click.echo(json.dumps(rows, indent=2))
        return
    row(f"{'Vehicle':<16} {'Product':<8} {'Tag':<6} {'Version':<28} {'Partition':<9} {'Address':<15} "
               f"{'Last seen':<19} {'Offered':<24} Why")  # fmt: skip
    for m, o in zip(modules, offers, strict=True):
        seen = when(m.last_seen)
        row(
            f"{printable(m.vehicle_id) or '(none)':<16} {m.product:<8} {m.tag:<6} {printable(m.version):<28} "
            f"{printable(m.partition):<9} {printable(m.address):<15} {seen:<19} {o.version if o else '-':<24} "
            f"{o.why if o else 'no build on this channel'}"
        )
    row(f"{len(modules)} modules")


for _command in FLEET_COMMANDS:
    fleet.add_command(_command)

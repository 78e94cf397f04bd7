"""``ovota rollout``: staged rollouts of a build to a channel's modules, and their status."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ovota.cli.output import row, when
from ovota.cli.repo_access import open_repository, repo_option
from ovota.server.fleet.control import RolloutControl
from ovota.server.fleet.policy import ModuleState
from ovota.server.fleet.progress import NextStep
from ovota.server.fleet.progress import describe as next_line
from ovota.server.fleet.rollouts import Rollout, Rollouts, parse_settings
from ovota.server.fleet.status import RolloutStatus
from ovota.server.store.backends import Backends
from ovota.server.store.repository import Build, Repository

F = TypeVar("F", bound=Callable[..., Any])


def rollout_options(function: F) -> F:
    """The health and pacing options of a rollout, shared by ``rollout start`` and ``release … --rollout``."""
    for option in reversed(
        [
            click.option("--step-interval", default="1d", show_default=True, help="Time each step runs at least."),
            click.option(
                "--halt-failed", default="5%", show_default=True, help="Halt at this failed/(updated+failed)."
            ),
            click.option("--halt-silent", default="20%", show_default=True, help="Halt at this silent/attempted."),
            click.option("--min-sample", default=20, show_default=True, type=int, help="Attempts before halting."),
            click.option("--watch", default="2d", show_default=True, help="A module not seen this long is silent."),
            click.option("--grace", default="10m", show_default=True, help="Old version after this long: failed."),
            click.option("--notify-url", default="", help="POST a JSON notice here at each step, halt and completion."),
            click.option(
                "--voters-known-for",
                default="0s",
                show_default=True,
                help="Only modules first seen this long before the start count for health and steps.",
            ),
            click.option("--group", "groups", multiple=True, help="Only this group's vehicles (repeatable)."),
            click.option("--vehicles", multiple=True, help="Only vehicle ids matching this pattern, e.g. 'TEST*'."),
            click.option("--versions", default="", help="Only modules running these versions, e.g. '<3.3.006'."),
            click.option(
                "--window",
                "windows",
                multiple=True,
                help="Offer the build only in this window, e.g. 'Mon-Fri 01:00-05:00' (repeatable).",
            ),
            click.option("--timezone", default="UTC", show_default=True, help="The windows' IANA time zone."),
            click.option("--rate", default="", help="At most this many modules newly offered per period: 100/h."),
            click.option(
                "--rate-growth",
                default=1.0,
                show_default=True,
                type=float,
                help="Multiply the rate by this after each period (exponential rollout).",
            ),
            click.option("--allow-empty", is_flag=True, help="Start a targeted rollout even if it matches no module."),
        ]
    ):
        function = option(function)
    return function


def start_rollout(r: Repository, product: str, tag: str, build: Build, steps: str, **options: Any) -> Rollout:
    """Start a rollout with the CLI's settings and print what started."""
    allow_empty = options.pop("allow_empty", False)
    settings = parse_settings(steps=steps, **options)
    control = RolloutControl(Rollouts(r))
    now = r.clock().now()
    rollout = control.start(product, tag, build, settings, now, allow_empty)
    matched = control.matching(product, tag, build, settings, now)
    row(
        f"Rollout {rollout.id} of {product}/{tag}: {rollout.from_build.version} -> {build.version}, "
        f"steps {','.join(map(str, settings.steps))}, now {rollout.state} at {rollout.percent}%; "
        f"matches {matched} known module{'s' if matched != 1 else ''}"
    )
    return rollout


@click.group()
def rollout() -> None:
    """Staged rollouts that halt themselves when modules fail or go silent."""


_channel = [
    click.option("--product", required=True, help="Product, e.g. v3.3-5."),
    click.option("--tag", required=True, help="Channel, e.g. main."),
]


def _channel_options(function: F) -> F:
    for option in reversed(_channel):
        function = option(function)
    return function


@rollout.command("start")
@repo_option
@_channel_options
@click.option("--build", "build_ref", required=True, help="A version or SHA-256 prefix of a build in the repository.")
@click.option("--steps", default="1,10,50,100", show_default=True, help="Percent of the channel's modules per step.")
@rollout_options
def start(repo: Backends, product: str, tag: str, build_ref: str, steps: str, **options: Any) -> None:
    """Roll a build out to a channel in steps; the channel keeps its build until the last step."""
    with open_repository(repo, create=False) as r:
        start_rollout(r, product, tag, r.find_build(build_ref), steps, **options)


@rollout.command("status")
@repo_option
@_channel_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--modules", "which", type=click.Choice(["all", *(s.value for s in ModuleState)]),
              help="List the rollout's modules in this state (who failed: --modules failed).")  # fmt: skip
def status(repo: Backends, product: str, tag: str, as_json: bool, which: str | None) -> None:
    """The channel's active (else latest) rollout: step, states per step, why it halted, and who."""
    with open_repository(repo, create=False) as r:
        rollouts = Rollouts(r)
        status = RolloutStatus(rollouts)
        rollout = rollouts.current(product, tag)
        now = r.clock().now()
        summary = status.summary(rollout, now)
        modules = None if which is None else status.modules(rollout, None if which == "all" else which, now)
    if as_json:
        if modules is not None:
            summary["modules"] = [m.__dict__ for m in modules]
        click.echo(json.dumps(summary, indent=2))
        return
    for line in describe(summary):
        row(line)
    if modules is not None:
        row(f"{'Vehicle':<16} {'State':<9} {'From':<24} {'Received':<20} {'Last seen':<20} {'Address':<15} "
                   "Offered now")  # fmt: skip
        for m in modules:
            received = when(m.received) if m.received else "-"
            row(f"{m.vehicle_id or m.module:<16} {m.state:<9} {m.from_version:<24} {received:<20} "
                       f"{when(m.last_seen):<20} {m.address:<15} {m.why}")  # fmt: skip
        row(f"{len(modules)} modules")


def describe(summary: dict[str, Any]) -> list[str]:
    """Human-readable status lines."""
    counts = summary["counts"]
    lines = [
        f"Rollout {summary['id']} of {summary['product']}/{summary['tag']}: "
        f"{summary['from']['version']} -> {summary['to']['version']}",
        f"State: {summary['state']}, step {summary['step']} of {len(summary['settings']['steps'])} "
        f"({summary['percent']}%)",
        f"Target: {summary['target']}; offered {summary['pacing']}"
        + ("" if summary.get("admitted") is None else f"; {summary['admitted']} modules admitted so far"),
    ]
    if summary["reason"]:
        at = f" at {when(summary['reason_at'])} UTC" if summary.get("reason_at") else ""
        lines.append(f"Halted{at}: {summary['reason']}")
    if "next" in summary:
        lines.append(next_line(NextStep(**summary["next"]), lambda t: f"{when(t)} UTC"))
    lines.append(
        f"Modules now: {counts['attempted']} attempted, {counts['updating']} updating, {counts['updated']} updated, "
        f"{counts['failed']} failed, {counts['silent']} silent"
    )
    lines.append(f"{'Step':<5} {'Percent':>7} {'Cohort':>7} {'Pending':>8} {'Updating':>9} {'Updated':>8} "
                 f"{'Failed':>7} {'Silent':>7}")  # fmt: skip
    for index, step in enumerate(summary["steps"], 1):
        lines.append(
            f"{index:<5} {step['percent']:>6}% {step['cohort']:>7} {step['pending']:>8} {step['updating']:>9} "
            f"{step['updated']:>8} {step['failed']:>7} {step['silent']:>7}"
        )
    return lines


def _change(action: str) -> Callable[..., None]:
    def command(repo: Backends, product: str, tag: str) -> None:
        with open_repository(repo, create=False) as r:
            changed = RolloutControl(Rollouts(r)).act(action, product, tag, r.clock().now())
            row(f"Rollout {changed.id} of {product}/{tag} is now {changed.state}")

    command.__doc__ = {
        "pause": "Stop advancing steps (the current cohort keeps the new build).",
        "resume": "Continue a paused or halted rollout (after a halt, health is judged afresh).",
        "abort": "End the rollout: the channel keeps its previous build.",
    }[action]
    return command


for _action in ("pause", "resume", "abort"):
    rollout.command(_action)(repo_option(_channel_options(_change(_action))))


@rollout.command("list")
@repo_option
def list_rollouts(repo: Backends) -> None:
    """Every rollout, newest last."""
    with open_repository(repo, create=False) as r:
        for item in Rollouts(r).every():
            at = when(item.created)
            row(
                f"{item.id:<4} {item.product:<10} {item.tag:<8} {item.from_build.version} -> {item.to_build.version}"
                f"  {item.state} at {item.percent}%  {at}"
            )

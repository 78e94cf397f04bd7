"""``ovota server``, ``ovota release`` and ``ovota token``: run and manage the update server."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from ovota.cli.repo_access import open_repository, repo_option
from ovota.cli.rollout import rollout_options, start_rollout
from ovota.server.app import create_app
from ovota.server.repository import Repository


@click.command("server")
@repo_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes (SO_REUSEPORT).")
@click.option(
    "--time-scale", default=1.0, show_default=True, type=click.FloatRange(min=1.0),
    help="Run the server's clock this much faster (fleet simulations only; 1440: a day per minute).",
)  # fmt: skip
@click.option("--driven-clock", is_flag=True, help="Time stands still until POST /clock moves it (simulations).")
@click.option("--fleet/--no-fleet", default=True, show_default=True, help="Register modules from their requests.")
@click.option(
    "--delta-bases", default=3, show_default=True, type=click.IntRange(0, 50),
    help="Make delta patches from this many recent builds of each channel (0: none).",
)  # fmt: skip
def server(
    repo: Path, host: str, port: int, workers: int, time_scale: float, driven_clock: bool, fleet: bool,
    delta_bases: int,
) -> None:  # fmt: skip
    """Serve firmware to modules, the download area and the release API."""
    if driven_clock and (workers > 1 or time_scale != 1):
        raise click.UsageError("--driven-clock works with one worker and no --time-scale")
    r = Repository(repo)  # create the schema once, before workers race for it
    clock = r.clock(time_scale, driven_clock)  # anchored once, so every worker keeps the same time
    r.close()
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    scaled = ", driven clock" if driven_clock else f", clock x{time_scale:g}" if time_scale != 1 else ""
    click.echo(f"ovota server on http://{host}:{port}/firmware/ota/ (repository {repo}, pid {os.getpid()}{scaled})")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    # The default asyncio loop, not uvloop: uvloop lacks transport sendfile, which the .bin path relies on.
    app = create_app(repo, clock, fleet, delta_bases)
    web.run_app(app, host=host, port=port, reuse_port=workers > 1, print=None, access_log=None)


@click.group()
def release() -> None:
    """Publish, promote and roll back builds in release channels."""


@release.command("publish")
@click.argument("image", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@repo_option
@click.option("--tag", required=True, help="Channel: main, eap, edge or another name.")
@click.option("--product", help="Product directory (default: v3.3-5 for 3.3.006 and later, else v3.3).")
@click.option("--changelog", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Changelog text.")
@click.option("--force", is_flag=True, help="Publish even if the channel has a rollout (which is aborted).")
@click.option("--rollout", "steps", help="Roll the build out in steps (e.g. 1,10,50,100) instead of at once.")
@rollout_options
def publish(
    image: Path, repo: Path, tag: str, product: str | None, changelog: Path | None, force: bool, steps: str | None,
    **options: Any,
) -> None:  # fmt: skip
    """Validate IMAGE and make it the current build of a channel (or start a rollout of it)."""
    with open_repository(repo) as r:
        text = changelog.read_text() if changelog else ""
        if steps:
            build, product = r.add_build(image.read_bytes(), product, text)
            click.echo(f"Added {build.version} to the repository (sha256 {build.sha256})")
            start_rollout(r, product, tag, build, steps, **options)
            return
        channel = r.publish(image.read_bytes(), tag, product, text, force)
        click.echo(
            f"Published {channel.build.version} to {channel.product}/{channel.tag} (sha256 {channel.build.sha256})"
        )


@release.command("promote")
@repo_option
@click.option("--product", required=True)
@click.option("--from", "source", required=True)
@click.option("--to", "target", required=True)
@click.option("--force", is_flag=True, help="Promote even if channel TO has a rollout (which is aborted).")
@click.option("--rollout", "steps", help="Roll the build out to TO in steps (e.g. 1,10,50,100).")
@rollout_options
def promote(repo: Path, product: str, source: str, target: str, force: bool, steps: str | None, **options: Any) -> None:
    """Point channel TO at the build channel FROM has (or start a rollout of it)."""
    with open_repository(repo) as r:
        if steps:
            start_rollout(r, product, target, r.channel(product, source).build, steps, **options)
            return
        channel = r.promote(product, source, target, force)
        click.echo(f"Promoted {channel.build.version} from {product}/{source} to {product}/{target}")


@release.command("rollback")
@repo_option
@click.option("--product", required=True)
@click.option("--tag", required=True)
def rollback(repo: Path, product: str, tag: str) -> None:
    """Point a channel back at its previous build."""
    with open_repository(repo) as r:
        channel = r.rollback(product, tag)
        click.echo(f"Rolled back {product}/{tag} to {channel.build.version}")


@release.command("list")
@repo_option
def list_channels(repo: Path) -> None:
    """Show every channel and its current build."""
    with open_repository(repo) as r:
        for c in r.channels():
            when = datetime.fromtimestamp(c.updated, UTC).strftime("%Y-%m-%d %H:%M:%S")
            click.echo(
                f"{c.product:<10} {c.tag:<8} {c.build.version:<32} {c.build.size:>9} {when} {c.build.sha256[:16]}"
            )


@click.group()
def token() -> None:
    """API tokens for CI systems (stored hashed)."""


@token.command("create")
@repo_option
@click.option("--name", required=True, help="Who or what uses the token.")
def create_token(repo: Path, name: str) -> None:
    """Create a token and print it once."""
    with open_repository(repo) as r:
        click.echo(r.create_token(name))

"""``ovota server``, ``ovota release`` and ``ovota token``: run and manage the update server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from aiohttp import web

from ovota.formats import FormatError
from ovota.server.app import create_app
from ovota.server.repository import Repository, RepositoryError

DEFAULT_REPO = Path("ovota-repo")
_repo_option = click.option(
    "--repo", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPO, show_default=True,
    help="Repository folder (created if missing).",
)  # fmt: skip


@contextmanager
def _repository(repo: Path) -> Iterator[Repository]:
    """Open the repository; its refusals become one Error: line and exit 2."""
    r = Repository(repo)
    try:
        yield r
    except RepositoryError as err:
        raise FormatError(str(err)) from None
    finally:
        r.close()


@click.command("server")
@_repo_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Processes (SO_REUSEPORT).")
def server(repo: Path, host: str, port: int, workers: int) -> None:
    """Serve firmware to modules, the download area and the release API."""
    Repository(repo).close()  # create the schema once, before workers race for it
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    click.echo(f"ovota server on http://{host}:{port}/firmware/ota/ (repository {repo}, pid {os.getpid()})")
    # The default asyncio loop, not uvloop: uvloop lacks transport sendfile, which the .bin path relies on.
    web.run_app(create_app(repo), host=host, port=port, reuse_port=workers > 1, print=None, access_log=None)


@click.group()
def release() -> None:
    """Publish, promote and roll back builds in release channels."""


@release.command("publish")
@click.argument("image", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_repo_option
@click.option("--tag", required=True, help="Channel: main, eap, edge or another name.")
@click.option("--product", help="Product directory (default: v3.3-5 for 3.3.006 and later, else v3.3).")
@click.option("--changelog", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Changelog text.")
def publish(image: Path, repo: Path, tag: str, product: str | None, changelog: Path | None) -> None:
    """Validate IMAGE and make it the current build of a channel."""
    with _repository(repo) as r:
        text = changelog.read_text() if changelog else ""
        channel = r.publish(image.read_bytes(), tag, product, text)
        click.echo(
            f"Published {channel.build.version} to {channel.product}/{channel.tag} (sha256 {channel.build.sha256})"
        )


@release.command("promote")
@_repo_option
@click.option("--product", required=True)
@click.option("--from", "source", required=True)
@click.option("--to", "target", required=True)
def promote(repo: Path, product: str, source: str, target: str) -> None:
    """Point channel TO at the build channel FROM has."""
    with _repository(repo) as r:
        channel = r.promote(product, source, target)
        click.echo(f"Promoted {channel.build.version} from {product}/{source} to {product}/{target}")


@release.command("rollback")
@_repo_option
@click.option("--product", required=True)
@click.option("--tag", required=True)
def rollback(repo: Path, product: str, tag: str) -> None:
    """Point a channel back at its previous build."""
    with _repository(repo) as r:
        channel = r.rollback(product, tag)
        click.echo(f"Rolled back {product}/{tag} to {channel.build.version}")


@release.command("list")
@_repo_option
def list_channels(repo: Path) -> None:
    """Show every channel and its current build."""
    with _repository(repo) as r:
        for c in r.channels():
            when = datetime.fromtimestamp(c.updated, UTC).strftime("%Y-%m-%d %H:%M:%S")
            click.echo(
                f"{c.product:<10} {c.tag:<8} {c.build.version:<32} {c.build.size:>9} {when} {c.build.sha256[:16]}"
            )


@click.group()
def token() -> None:
    """API tokens for CI systems (stored hashed)."""


@token.command("create")
@_repo_option
@click.option("--name", required=True, help="Who or what uses the token.")
def create_token(repo: Path, name: str) -> None:
    """Create a token and print it once."""
    with _repository(repo) as r:
        click.echo(r.create_token(name))

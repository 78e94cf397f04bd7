"""``ovota repo``: move a repository between backends."""

from __future__ import annotations

from pathlib import Path

import click

from ovota.cli.repo_access import open_repository, repo_option
from ovota.server.store.backends import Backends
from ovota.server.store.copy_repository import copy_repository


@click.group()
def repo() -> None:
    """Repository maintenance."""


@repo.command("migrate")
@click.option("--from", "source", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The embedded repository folder to copy.")  # fmt: skip
@repo_option
def migrate(source: Path, repo: Backends) -> None:
    """Copy a repository folder (builds, channel history, tokens, trusted keys, rollouts, fleet) into the
    backends given by --db and --blobs, verifying every blob. Running it again changes nothing."""
    if repo.folder is not None and repo.folder.resolve() == source.resolve():
        raise click.UsageError("the source and the target are the same repository")
    with open_repository(source) as src, open_repository(repo) as dst:
        report = copy_repository(src, dst, click.echo)
    click.echo(f"Copied {report.blobs} blobs and {sum(report.rows.values())} rows from {source} to {repo.describe()}")

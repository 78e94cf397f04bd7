"""``ovota repo``: move a repository between backends, back one up."""

from __future__ import annotations

from pathlib import Path

import click

from ovota.cli.repo_access import open_repository, repo_option
from ovota.formats import FormatError
from ovota.server.store.backends import Backends
from ovota.server.store.backup import backup_folder
from ovota.server.store.copy_repository import copy_repository
from ovota.server.store.errors import RepositoryError


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


@repo.command("backup")
@click.option("--repo", "source", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="The repository folder to back up (servers may keep running).")  # fmt: skip
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
def backup(source: Path, target: Path) -> None:
    """Copy an embedded repository into the new folder TARGET while servers keep using it: the database by
    SQLite's online backup, then every blob it names, each checked against its SHA-256."""
    try:
        size, blobs = backup_folder(source, target)
    except RepositoryError as err:
        raise FormatError(str(err)) from None
    click.echo(f"Backed up {source} to {target}: database {size} bytes, {blobs} blobs")

"""The repository options (``--repo``, or ``--db`` and ``--blobs``) and opening a repository for a command."""

from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ovota.formats import FormatError
from ovota.server.fleet.policy import PolicyError
from ovota.server.store.backends import Backends
from ovota.server.store.database import DatabaseUnavailable
from ovota.server.store.errors import RepositoryError
from ovota.server.store.repository import Repository

DEFAULT_REPO = Path("ovota-repo")


def repo_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--repo DIR`` (default ./ovota-repo) and ``--db URL`` + ``--blobs s3://…`` (also OVOTA_DB and
    OVOTA_BLOBS); the command receives them as one ``repo: Backends``."""

    @click.option(
        "--repo", type=click.Path(file_okay=False, path_type=Path), default=None,
        help=f"Repository folder, created if missing (default: {DEFAULT_REPO}).",
    )  # fmt: skip
    @click.option("--db", envvar="OVOTA_DB", help="PostgreSQL URL (postgresql://…), with --blobs, instead of --repo.")
    @click.option("--blobs", envvar="OVOTA_BLOBS", help="S3 blob store (s3://BUCKET[/PREFIX]), with --db.")
    @functools.wraps(command)
    def wrapper(*args: Any, repo: Path | None, db: str | None, blobs: str | None, **kwargs: Any) -> Any:
        return command(*args, repo=backends(repo, db, blobs), **kwargs)

    return wrapper


def cli_actor() -> str:
    """The audit log's name for whoever runs the command: ``cli:`` and the OS user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"cli:uid{os.getuid()}"


def backends(repo: Path | None, db: str | None, blobs: str | None) -> Backends:
    if repo is not None and (db or blobs):
        raise click.UsageError("give --repo, or --db and --blobs (OVOTA_DB, OVOTA_BLOBS), not both")
    if repo is None and not (db or blobs):
        repo = DEFAULT_REPO
    try:
        return Backends(folder=repo) if repo is not None else Backends(db=db, blobs=blobs)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


@contextmanager
def open_repository(repo: Path | Backends, create: bool = True) -> Iterator[Repository]:
    """Open the repository; its refusals become one Error: line and exit 2. ``create=False`` (commands that
    only read): a repository folder that does not exist is an error, not made."""
    folder = repo if isinstance(repo, Path) else repo.folder
    if not create and folder is not None and not (folder / "repo.sqlite").exists():
        raise FormatError(f"no repository at {folder} (give --repo, or publish a build there first)")
    try:
        r = Repository(repo)
    except DatabaseUnavailable as err:
        raise FormatError(str(err)) from None
    r.actor = cli_actor()
    try:
        yield r
    except (RepositoryError, PolicyError, DatabaseUnavailable) as err:
        raise FormatError(str(err)) from None
    finally:
        r.close()

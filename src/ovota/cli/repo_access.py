"""The ``--repo`` option and opening a repository for a command, shared by the server-side commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ovota.formats import FormatError
from ovota.server.repository import Repository, RepositoryError
from ovota.server.rollout_policy import PolicyError

DEFAULT_REPO = Path("ovota-repo")
repo_option = click.option(
    "--repo", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPO, show_default=True,
    help="Repository folder (created if missing).",
)  # fmt: skip


@contextmanager
def open_repository(repo: Path) -> Iterator[Repository]:
    """Open the repository; its refusals become one Error: line and exit 2."""
    r = Repository(repo)
    try:
        yield r
    except (RepositoryError, PolicyError) as err:
        raise FormatError(str(err)) from None
    finally:
        r.close()

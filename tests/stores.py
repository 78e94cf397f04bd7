"""Where a test's repository lives: a folder, or PostgreSQL + S3 (SeaweedFS), behind one test interface."""

from __future__ import annotations

from dataclasses import dataclass

from ovota.server.store.backends import Backends
from ovota.server.store.repository import Repository


@dataclass(frozen=True)
class Store:
    kind: str  # "folder" or "cluster"
    backends: Backends

    @property
    def args(self) -> tuple[str, ...]:
        """The CLI options that name this repository."""
        b = self.backends
        if b.folder is not None:
            return ("--repo", str(b.folder))
        assert b.db is not None and b.blobs is not None
        return ("--db", b.db, "--blobs", b.blobs)

    def repository(self) -> Repository:
        return Repository(self.backends)

    def state(self) -> tuple[list[tuple[str, str, str]], list[str], int]:
        """Channels, stored blob names and the number of builds: what a refused change must leave alone."""
        r = self.repository()
        try:
            channels = [(c.product, c.tag, c.build.sha256) for c in r.channels()]
            builds = int(r.db.execute("SELECT count(*) FROM builds").fetchone()[0])
            return channels, r.blobs.names(), builds
        finally:
            r.close()

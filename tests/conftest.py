"""Shared fixtures: the ESP-IDF vectors beside the project, and a runner for the real ``ovota`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from playwright.sync_api import Browser

from ovota.server.store.backends import Backends
from tests.browser import launch_browser
from tests.engines import PostgresServer, SeaweedServer
from tests.signing import Keys, make_keys
from tests.stores import Store

# No per-example deadline: a loaded CI machine must not turn a slow example into a failure.
settings.register_profile("ovota", deadline=None)
settings.load_profile("ovota")

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT.parent / "shared" / "vectors"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


CliRunner = Callable[..., Run]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    yield from launch_browser()


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Two RSA-3072 signing keys made by espsecure (once per test process: each takes a second)."""
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def vectors() -> Path:
    assert VECTORS.is_dir(), f"test vectors not found at {VECTORS}"
    return VECTORS


def ovota_runner() -> CliRunner:
    """Run the installed ``ovota`` console script as a user would, in a subprocess."""
    script = Path(sys.executable).with_name("ovota")

    def run(*args: str | Path, env: dict[str, str] | None = None) -> Run:
        proc = subprocess.run([str(script), *map(str, args)], capture_output=True, text=True, env=env, check=False)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def ovota() -> CliRunner:
    return ovota_runner()


@dataclass
class Engines:
    postgres: PostgresServer
    seaweed: SeaweedServer
    bucket: str  # one bucket per test process (a bucket is a SeaweedFS collection with volumes of its own)


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    """A PostgreSQL cluster and a SeaweedFS server for this test process; the AWS variables point at it, so
    the ``ovota`` processes the tests start use it too."""
    postgres = PostgresServer()
    try:
        seaweed = SeaweedServer()
    except BaseException:
        postgres.close()
        raise
    saved = {k: os.environ.get(k) for k in (*seaweed.env(), "OVOTA_CACHE")}
    os.environ.update(seaweed.env())
    os.environ["OVOTA_CACHE"] = str(tmp_path_factory.mktemp("blob-cache"))
    try:
        yield Engines(postgres, seaweed, seaweed.new_bucket())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        seaweed.close()
        postgres.close()


def new_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    """An empty repository of the given kind; the cluster one gets a database and a bucket prefix of its own."""
    if kind == "folder":
        return Store(kind, Backends(folder=tmp_path / "repo"))
    engines: Engines = request.getfixturevalue("engines")
    db = engines.postgres.new_database()
    prefix = db.rsplit("/", 1)[1]  # the database's unique name
    return Store(kind, Backends(db=db, blobs=f"s3://{engines.bucket}/{prefix}", cache=tmp_path / "cache"))


@pytest.fixture(params=["folder", "cluster"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty repository, once in a folder (SQLite) and once on PostgreSQL + S3."""
    return new_store(str(request.param), tmp_path, request)

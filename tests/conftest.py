"""Shared fixtures: the ESP-IDF vectors beside the project, and a runner for the real ``ovota`` CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from playwright.sync_api import Browser

from tests.browser import launch_browser
from tests.signing import Keys, make_keys

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

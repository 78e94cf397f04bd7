"""Every benchmark in bench/ still runs: each is started in its smoke mode (tiny inputs, one round).

Only that it completes and prints its comparison is checked here; timings belong to ``make bench``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engines import default_cluster_ports
from tests.servers import free_port

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p for p in BENCH.iterdir() if p.suffix in (".py", ".sh"))
# What the shell benches need on the machine; `make test` installs it (as root).
TOOLS = {".sh": ["nginx", "wrk", "curl", "bc", "taskset"], "ver_cost.py": ["valgrind", "callgrind_control"]}


def _missing_tools(script: Path) -> list[str]:
    search = os.environ.get("PATH", "") + ":/usr/sbin"
    needed = TOOLS.get(script.suffix, []) + TOOLS.get(script.name, [])
    return [tool for tool in needed if shutil.which(tool, path=search) is None]


def test_benches_are_found() -> None:
    assert {p.name for p in SCRIPTS} >= {"image_verify.py", "flash_update.py", "serve.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_bench_runs_in_smoke_mode(script: Path) -> None:
    missing = _missing_tools(script)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} not installed; make test installs them")
        pytest.skip(f"{', '.join(missing)} not installed")
    env = {**os.environ, "SMOKE": "1", "NGINX_PORT": str(free_port()), "OVOTA_PORT": str(free_port())}
    env["OVOTA"] = str(Path(sys.executable).with_name("ovota"))
    command = [sys.executable, str(script), "--smoke"] if script.suffix == ".py" else ["bash", str(script)]
    # bench/cluster*.sh use make cluster's SeaweedFS ports, as does tests/test_make_cluster.py: one at a time.
    holding = default_cluster_ports() if script.name.startswith("cluster") else contextlib.nullcontext()
    with holding:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio" in proc.stdout, proc.stdout

"""Small but real (issue 28): `make run` may be run again without harm and seeds the old layout's product too, the
simulator reports progress wherever its output goes and names a server it cannot reach in one line, the module
emulator says why a connection failed without aiohttp's words, and a server whose clock is behind its repository
says so once and never moves a module's last seen back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import CliRunner
from tests.module_helpers import image, logged, new_module, run_commands
from tests.servers import OvotaServer, free_port, raw_get, wait_for_port
from tests.test_fleet import A, agent, http_json, wait_for

ROOT = Path(__file__).resolve().parent.parent
OVOTA = str(Path(sys.executable).with_name("ovota"))
SEEDS = {"main": "3.3.006", "eap": "3.3.006-52-g1b2c3d4", "edge": "3.3.006-172-g362f87425"}
OLD_LAYOUT_AGENT = "ovms/v3.3 (OLDCAR 3.3.005/factory/main (build idf v3.3.4, product v3.3))"


# -- make run ---------------------------------------------------------------------------------------------------


class MakeRun:
    """``make run`` as an operator starts it (the Makefile's own command lines), on a folder and a port of its own;
    the virtualenv is taken as it is (-o: never reinstalled by a test)."""

    def __init__(self, run: Path) -> None:
        venv = Path(sys.executable).parent.parent
        self.port = free_port()
        self.log_path = run.parent / f"make-run-{time.monotonic_ns()}.log"
        self._log: IO[str] = self.log_path.open("w")
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "-o", f"{venv}/.installed", "run", f"VENV={venv}", f"RUN={run}",
             "HOST=127.0.0.1", f"PORT={self.port}"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            wait_for_port(self.port, self.proc, "make run", timeout=180)
        except RuntimeError as err:
            raise AssertionError(f"{err}\n{self.log}") from None

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def ver(self, product: str, tag: str, user_agent: str = agent("DEMO")) -> str:
        """Line 1 of ovms3.ver, fetched as OVMS does; the status line must be 200."""
        head, body = raw_get(self.port, f"/firmware/ota/{product}/{tag}/ovms3.ver", user_agent)
        assert head.startswith(b"HTTP/1.0 200"), (product, tag, head)
        return body.decode().splitlines()[0]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)  # make, its shell and the server it started
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_seeds_empty_channels_of_both_products_and_keeps_an_operators_build(
    tmp_path: Path, ovota: CliRunner
) -> None:
    run = tmp_path / "run"
    first = MakeRun(run)
    try:
        for tag, version in SEEDS.items():
            assert first.ver("v3.3-5", tag) == version
            assert first.ver("v3.3", tag, OLD_LAYOUT_AGENT) == version  # the old layout's modules: no silent 404
        operator = tmp_path / "operator.bin"
        operator.write_bytes(image("3.3.007-3-gabcdef1", 65536))
        published = ovota("release", "publish", operator, "--repo", run / "repo", "--tag", "edge")
        assert published.code == 0, published.err
        assert first.ver("v3.3-5", "edge") == "3.3.007-3-gabcdef1"
    finally:
        first.stop()
    assert first.log.count("Published ") == 6, first.log

    again = MakeRun(run)
    try:
        assert again.ver("v3.3-5", "edge") == "3.3.007-3-gabcdef1"  # the operator's build, not the seed
        assert (
            again.ver("v3.3-5", "main") == SEEDS["main"]
            and again.ver("v3.3", "edge", OLD_LAYOUT_AGENT) == SEEDS["edge"]
        )
    finally:
        again.stop()
    assert "Published " not in again.log, again.log
    assert "Kept v3.3-5/edge: the channel already serves 3.3.007-3-gabcdef1 (sha256 " in again.log
    assert again.log.count("Kept ") == 6
    listed = ovota("release", "list", "--repo", run / "repo").out.splitlines()
    assert sorted(line.split()[0] for line in listed) == ["v3.3"] * 3 + ["v3.3-5"] * 3


def test_an_old_layout_module_is_offered_the_v3_3_seed(tmp_path: Path, ovota: CliRunner) -> None:
    seed = tmp_path / "main.bin"
    seed.write_bytes(image(SEEDS["main"], 65536))
    repo = tmp_path / "repo"
    done = ovota("release", "publish", seed, "--repo", repo, "--tag", "main", "--product", "v3.3", "--if-empty")
    assert done.code == 0 and done.out.startswith("Published 3.3.006 to v3.3/main"), done.out + done.err
    server = OvotaServer(repo)
    try:
        flash = new_module(tmp_path / "old.img", layout="v3-30", version="3.3.005")
        out = run_commands(flash, f"config set ota server {server.base}", "ota status").output
    finally:
        server.stop()
    assert "Server Available:  3.3.006 (is newer)" in out, out


def test_publish_if_empty_keeps_a_channel_that_serves_a_build(tmp_path: Path, ovota: CliRunner) -> None:
    builds = {}
    for version in ("3.3.006", "3.3.007"):
        builds[version] = tmp_path / f"{version}.bin"
        builds[version].write_bytes(image(version, 65536))
    repo = tmp_path / "repo"
    assert ovota("release", "publish", builds["3.3.006"], "--repo", repo, "--tag", "edge", "--if-empty").code == 0
    kept = ovota("release", "publish", builds["3.3.007"], "--repo", repo, "--tag", "edge", "--if-empty")
    assert kept.code == 0, kept.err
    assert kept.out.startswith("Kept v3.3-5/edge: the channel already serves 3.3.006 (sha256 "), kept.out
    assert ovota("release", "list", "--repo", repo).out.split()[2] == "3.3.006"
    broken = tmp_path / "broken.bin"
    broken.write_bytes(bytes(4096))
    refused = ovota("release", "publish", broken, "--repo", repo, "--tag", "edge", "--if-empty")
    assert refused.code == 2 and refused.err.startswith("Error: "), refused.err
    assert "--if-empty" in ovota("release", "publish", "--help").out


# -- the fleet simulator ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [(), ("--version", A), ("--delta",)])
def test_simulate_without_a_server_is_one_error_line(ovota: CliRunner, extra: tuple[str, ...]) -> None:
    port = free_port()  # nothing listens there
    run = ovota("fleet", "simulate", "--server", f"127.0.0.1:{port}/firmware/ota", "--modules", "3", "--days", "1",
                *extra)  # fmt: skip
    assert run.code != 0
    assert run.err == f"Error: cannot reach 127.0.0.1:{port}/firmware/ota: connection refused\n", run.err
    assert run.out == ""


def test_simulate_names_a_host_that_does_not_resolve(ovota: CliRunner) -> None:
    run = ovota("fleet", "simulate", "--server", "ovota-test.invalid:8080/firmware/ota", "--version", A)
    assert run.code != 0 and "Traceback" not in run.err, run.err
    assert len(run.err.splitlines()) == 1, run.err
    assert run.err.startswith("Error: cannot reach ovota-test.invalid:8080/firmware/ota: name lookup failed ("), run.err


def test_simulate_prints_progress_lines_when_piped_on_the_real_clock(tmp_path: Path, ovota: CliRunner) -> None:
    build = tmp_path / "a.bin"
    build.write_bytes(image(A, 65536))
    repo = tmp_path / "repo"
    assert ovota("release", "publish", build, "--repo", repo, "--tag", "main").code == 0
    server = OvotaServer(repo)  # the real clock: no /clock, the simulator follows the wall clock
    try:
        # 0.0002 days: about 17 s of wall time, shorter than a tick (10 minutes), so no module checks in.
        simulation = subprocess.Popen([OVOTA, "fleet", "simulate", "--server", server.base, "--modules", "5",
                                       "--days", "0.0002"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)  # fmt: skip
        try:
            assert simulation.stdout is not None
            first = simulation.stdout.readline()
            running = simulation.poll() is None  # the line came while the run went on, not with the report
            rest, err = simulation.communicate(timeout=120)
        finally:
            if simulation.poll() is None:
                simulation.kill()
    finally:
        server.stop()
    assert simulation.returncode == 0, err
    assert running and first.endswith(f"0 check-ins, 0 downloads, 0 errors; 5 on {A}\n"), first
    assert " s: server time " in first and "Day" not in first
    lines = [first, *rest.splitlines(keepends=True)]
    report = next(n for n, line in enumerate(lines) if "Fleet of 5 modules" in line)
    assert all(" s: server time " in line for line in lines[:report]), lines
    assert "5 modules, 0 days in " in rest


# -- the module emulator --------------------------------------------------------------------------------------------


def test_module_says_why_a_plain_http_connection_failed(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img")
    port = free_port()  # nothing listens there
    out = run_commands(flash, f"ota flash http 127.0.0.1:{port}/ovms3.bin").output
    assert "Error: Request failed\n" in out
    assert logged(out, f"OTA Flash HTTP: cannot connect to 127.0.0.1:{port}: connection refused"), out
    assert "ssl:" not in out
    out = run_commands(flash, "ota flash http http://ovota-test.invalid/ovms3.bin").output
    assert "OTA Flash HTTP: cannot connect to ovota-test.invalid:80: name lookup failed (" in out, out


# -- one clock per server -----------------------------------------------------------------------------------------


def test_a_server_behind_its_repository_warns_once_and_keeps_last_seen(tmp_path: Path, ovota: CliRunner) -> None:
    build = tmp_path / "a.bin"
    build.write_bytes(image(A, 65536))
    repo = tmp_path / "repo"
    assert ovota("release", "publish", build, "--repo", repo, "--tag", "main").code == 0

    def last_seen() -> float:
        modules = json.loads(ovota("fleet", "list", "--repo", repo, "--json").out)
        return float(next(m["last_seen"] for m in modules if m["vehicle_id"] == "DEMO"))

    simulation = OvotaServer(repo, extra=("--driven-clock",))
    try:
        now = float(http_json(f"{simulation.url}/clock")[1]["now"])
        assert http_json(f"{simulation.url}/clock", "POST", body={"to": now + 10 * 86400})[0] == 200
        assert raw_get(simulation.port, "/firmware/ota/v3.3-5/main/ovms3.ver", agent("DEMO"))[0].startswith(
            b"HTTP/1.0 200"
        )
    finally:
        simulation.stop()  # a clean stop writes the check-in
    ahead = last_seen()
    assert ahead > time.time() + 9 * 86400

    server = OvotaServer(repo)  # the real clock, ten days behind
    try:
        head, _ = raw_get(server.port, "/firmware/ota/v3.3-5/main/ovms3.ver", agent("DEMO", partition="ota_1"))
        assert head.startswith(b"HTTP/1.0 200")

        def checked_in() -> bool:
            modules = json.loads(ovota("fleet", "list", "--repo", repo, "--json").out)
            return any(m["vehicle_id"] == "DEMO" and m["partition"] == "ota_1" for m in modules)

        wait_for(checked_in, "the real-clock server's check-in in the registry")
        assert last_seen() == ahead  # not moved back to the real clock's time
        log = server.log
    finally:
        server.stop()
    warnings = [line for line in log.splitlines() if "behind the newest time this repository recorded" in line]
    assert len(warnings) == 1, log
    assert warnings[0].startswith("server clock ") and " is 10.0 days behind " in warnings[0], warnings[0]
    assert f"recorded, {datetime.fromtimestamp(ahead, UTC):%Y-%m-%d %H:%M:%S} UTC (" in warnings[0], warnings[0]
    assert "serve this repository with that clock again, or use a fresh repository" in warnings[0]

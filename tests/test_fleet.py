"""The fleet registry and staged rollouts, against a real server, with real and simulated OVMS modules."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ovota.server.store.backends import Backends
from tests.conftest import CliRunner
from tests.module_helpers import image
from tests.servers import OvotaServer, RawServer, raw_get
from tests.stores import Store

A, B = "3.3.006", "3.3.007"
SIZE = 65536
FLEET = 1000


def agent(vehicle_id: str, version: str = A, partition: str = "ota_0", tag: str = "main") -> str:
    build = "build idf v3.3.4-854-g9063c8662c May 13 2026 20:13:48, product v3.3-5"
    return f"ovms/v3.3-5 ({vehicle_id} {version}/{partition}/{tag} ({build}))"


def http_json(url: str, method: str = "GET", token: str = "", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body or b"null")
        except json.JSONDecodeError:
            return err.code, body.decode()


def ver(server: OvotaServer, user_agent: str) -> str:
    head, body = raw_get(server.port, "/firmware/ota/v3.3-5/main/ovms3.ver", user_agent)
    assert head.startswith(b"HTTP/1.0 200"), head
    return body.decode().splitlines()[0]


def wait_for(predicate: Any, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class Setup:
    repo: Store
    builds: dict[str, Path]
    ovota: CliRunner
    work: Path

    def run(self, *args: str | Path) -> Any:
        result = self.ovota(*args)
        assert result.code == 0, result.err + result.out
        return result

    def status(self) -> dict[str, Any]:
        out = self.run("rollout", "status", *self.repo.args, "--product", "v3.3-5", "--tag", "main", "--json")
        return dict(json.loads(out.out))

    def simulate(self, server: OvotaServer, days: float, *extra: str) -> dict[str, Any]:
        report = self.work / f"report-{time.monotonic_ns()}.json"
        self.run("fleet", "simulate", "--server", server.base, "--modules", str(FLEET), "--days", str(days),
                 "--report", report, *extra)  # fmt: skip
        return dict(json.loads(report.read_text()))


def make_setup(store: Store, tmp_path: Path, ovota: CliRunner) -> Setup:
    builds = {}
    for version in (A, B):
        builds[version] = tmp_path / f"{version}.bin"
        builds[version].write_bytes(image(version, SIZE))
    assert ovota("release", "publish", builds[A], *store.args, "--tag", "main").code == 0
    return Setup(store, builds, ovota, tmp_path)


@pytest.fixture
def setup(store: Store, tmp_path: Path, ovota: CliRunner) -> Setup:
    """Build A on main: in a folder, and on PostgreSQL + S3."""
    return make_setup(store, tmp_path, ovota)


@pytest.fixture
def embedded(tmp_path: Path, ovota: CliRunner) -> Setup:
    """Build A on main in a folder only: for the 1,000-module simulations (the cluster runs them in
    tests/test_cluster.py's smaller scenarios)."""
    return make_setup(Store("folder", Backends(folder=tmp_path / "repo")), tmp_path, ovota)


@pytest.fixture
def driven(embedded: Setup) -> Iterator[OvotaServer]:
    server = OvotaServer(embedded.repo, extra=("--driven-clock",))
    yield server
    server.stop()


# -- the registry -----------------------------------------------------------------------------------------------


def test_registry_learns_modules_from_their_requests(setup: Setup) -> None:
    server = OvotaServer(setup.repo)
    try:
        assert ver(server, agent("DEMO")) == A
        assert ver(server, agent("", partition="factory")) == A
        head, body = raw_get(server.port, "/firmware/ota/v3.3-5/main/ovms3.bin", agent("DEMO"))
        assert head.startswith(b"HTTP/1.0 200") and len(body) == SIZE
        assert ver(server, "Mozilla/5.0") == A  # counted, not registered

        def registered() -> list[dict[str, Any]]:
            out = setup.run("fleet", "list", *setup.repo.args, "--json").out
            return list(json.loads(out))

        wait_for(lambda: len(registered()) == 2, "two modules in the registry")
        demo = next(m for m in registered() if m["vehicle_id"] == "DEMO")
        assert {k: demo[k] for k in ("product", "tag", "version", "partition", "address", "checkins")} == {
            "product": "v3.3-5", "tag": "main", "version": A, "partition": "ota_0", "address": "127.0.0.1",
            "checkins": 2,
        }  # fmt: skip
        assert demo["first_seen"] <= demo["last_seen"]
        anonymous = next(m for m in registered() if m["vehicle_id"] == "")
        assert anonymous["module"] == "@127.0.0.1" and anonymous["partition"] == "factory"
        text = setup.run("fleet", "list", *setup.repo.args, "--product", "v3.3-5", "--tag", "main").out
        assert "DEMO" in text and text.endswith("2 modules\n")
        # Vehicle ids are for token holders only: not in the public download area.
        for path in ("/firmware/ota/", "/firmware/ota/v3.3-5/", "/firmware/ota/v3.3-5/main/"):
            for accept in ("text/html", "application/json"):
                request = urllib.request.Request(server.url + path, headers={"Accept": accept})
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert b"DEMO" not in response.read()
        assert http_json(f"{server.url}/api/v1/fleet")[0] == 401
        token = setup.run("token", "create", *setup.repo.args, "--name", "ops").out.strip()
        status, modules = http_json(f"{server.url}/api/v1/fleet?product=v3.3-5", token=token)
        assert status == 200 and {m["vehicle_id"] for m in modules} == {"DEMO", ""}
    finally:
        server.stop()  # a clean stop flushes the batch
    r = setup.repo.repository()
    try:
        downloads = r.db.execute("SELECT module, bytes, completed FROM downloads").fetchall()
        counts = dict(r.db.execute("SELECT kind, count FROM request_counts").fetchall())
    finally:
        r.close()
    assert downloads == [("DEMO", SIZE, 1)]
    assert counts == {"ovms3.ver": 1}


# -- serving during a rollout --------------------------------------------------------------------------------------


def test_cohorts_pause_resume_abort_force_and_the_api(setup: Setup) -> None:
    server = OvotaServer(setup.repo)
    api = f"{server.url}/api/v1/rollouts"
    try:
        ids = [f"CAR{i:02d}" for i in range(20)]
        for vehicle_id in ids:
            assert ver(server, agent(vehicle_id)) == A
        wait_for(lambda: len(json.loads(setup.run("fleet", "list", *setup.repo.args, "--json").out)) == 20,
                 "20 modules registered")  # fmt: skip
        run = setup.run("release", "publish", setup.builds[B], *setup.repo.args, "--tag", "main",
                        "--rollout", "50,100")  # fmt: skip
        assert f"Rollout 1 of v3.3-5/main: {A} -> {B}, steps 50,100, now running at 50%" in run.out

        def offered() -> set[str]:
            return {v for v in ids if ver(server, agent(v)) == B}

        wait_for(lambda: len(offered()) == 10, "half of the 20 modules offered the new build")
        cohort = offered()
        assert offered() == cohort  # the same modules, request after request
        assert ver(server, agent("")) == A  # no vehicle id: only at 100%
        c_build = setup.builds[A].with_name("c.bin")
        c_build.write_bytes(image("3.3.008", SIZE))
        refused = setup.ovota("release", "publish", c_build, *setup.repo.args, "--tag", "main")
        assert refused.code == 2
        assert refused.err == (
            "Error: v3.3-5/main has a running rollout (id 1): abort it first, or force the change (the CLI's --force, "
            'the API\'s "force": true), which aborts it\n'
        )

        token = setup.run("token", "create", *setup.repo.args, "--name", "ci").out.strip()
        assert http_json(api + "/v3.3-5/main")[0] == 401
        status, body = http_json(api + "/v3.3-5/main", token=token)
        assert status == 200 and body["state"] == "running" and body["steps"][0]["cohort"] == 10
        assert body["steps"][0]["pending"] == 10 and body["to"]["version"] == B
        assert http_json(api + "/v3.3-5/main/pause", "POST", token)[1]["state"] == "paused"
        assert offered() == cohort
        assert http_json(api + "/v3.3-5/main/pause", "POST", token)[0] == 400
        assert http_json(api + "/v3.3-5/main/resume", "POST", token)[1]["state"] == "running"
        assert http_json(api + "/v3.3-5/main/abort", "POST", token)[1]["state"] == "aborted"
        wait_for(lambda: not offered(), "nobody offered the new build after abort")
        assert http_json(api + "/v3.3-5/main/abort", "POST", token)[0] == 404

        sha = json.loads(setup.run("rollout", "status", *setup.repo.args, "--product", "v3.3-5", "--tag", "main",
                                   "--json").out)["to"]["sha256"]  # fmt: skip
        start = {"product": "v3.3-5", "tag": "main", "build": sha[:12], "steps": "25,100", "grace": "1m"}
        status, body = http_json(api, "POST", token, start)
        assert status == 201 and body["id"] == 2 and body["steps"][0]["cohort"] == 5
        wait_for(lambda: len(offered()) == 5, "a quarter offered the new build")
        assert http_json(api, "POST", token, start)[0] == 400  # one active rollout per channel
        assert http_json(api, "POST", token, {**start, "build": "9.9.9"})[0] == 404
        bad = http_json(api, "POST", token, {**start, "steps": "50,10"})
        assert bad[0] == 400 and "percentages must increase and end at 100" in bad[1]["error"]
        listed = http_json(api, token=token)[1]
        assert [(r["id"], r["state"]) for r in listed] == [(1, "aborted"), (2, "running")]

        forced = setup.run("release", "publish", c_build, *setup.repo.args, "--tag", "main", "--force")
        assert forced.out.startswith("Published 3.3.008 to v3.3-5/main")
        wait_for(lambda: {ver(server, agent(v)) for v in ids} == {"3.3.008"}, "the forced build for everyone")
        assert http_json(api + "/v3.3-5/main", token=token)[1]["state"] == "aborted"
    finally:
        server.stop()


# -- simulated fleets ---------------------------------------------------------------------------------------------


def _cumulative_cohorts(status: dict[str, Any]) -> list[float]:
    total, shares = 0, []
    for step in status["steps"]:
        total += step["cohort"]
        shares.append(total * 100 / FLEET)
    return shares


def test_healthy_rollout_reaches_the_whole_fleet(embedded: Setup, driven: OvotaServer) -> None:
    setup = embedded
    first = setup.simulate(driven, 1)  # every module checks in once: the server knows the fleet
    assert first["summary"]["checkins"] == FLEET and first["summary"]["downloads"] == 0
    setup.run("release", "publish", setup.builds[B], *setup.repo.args, "--tag", "edge")
    setup.run("rollout", "start", *setup.repo.args, "--product", "v3.3-5", "--tag", "main", "--build", B)
    report = setup.simulate(driven, 10)
    assert report["days"][-1]["versions"] == {B: FLEET}
    assert report["summary"]["errors"] == 0 and report["summary"]["failed"] == 0
    status = setup.status()
    assert status["state"] == "completed"
    assert status["step"] == 4 and status["percent"] == 100
    for share, percent in zip(_cumulative_cohorts(status), (1, 10, 50, 100), strict=True):
        assert abs(share - percent) <= 2, (share, percent)
    assert [day["exposed"] for day in report["days"]] == sorted(day["exposed"] for day in report["days"])
    assert setup.run("release", "list", *setup.repo.args).out.split()[2] == B


def test_failing_build_halts_the_rollout_early(embedded: Setup, driven: OvotaServer) -> None:
    setup = embedded
    hook = RawServer(b"HTTP/1.0 204 No Content\r\n\r\n")
    try:
        setup.simulate(driven, 1)
        setup.run("release", "publish", setup.builds[B], *setup.repo.args, "--tag", "main",
                  "--rollout", "1,10,50,100", "--notify-url", f"http://127.0.0.1:{hook.port}/ovota-hook")  # fmt: skip
        report = setup.simulate(driven, 8, "--fail", f"{B}:0.3")
        wait_for(lambda: bool(hook.requests), "the notify URL to be called")
    finally:
        hook.stop()
    status = setup.status()
    assert status["state"] == "halted" and status["step"] in (1, 2), status
    assert status["reason"].startswith("failed ")
    assert report["summary"]["exposed_share"] < 0.12, report["summary"]
    assert status["counts"]["failed"] >= 1
    notices = [json.loads(r.partition(b"\r\n\r\n")[2]) for r in hook.requests]
    assert all(r.startswith(b"POST /ovota-hook ") for r in hook.requests)
    assert [n["event"] for n in notices] == ["advanced"] * (status["step"] - 1) + ["halted"]
    assert notices[-1]["state"] == "halted" and notices[-1]["to"]["version"] == B
    assert notices[-1]["message"] == status["reason"]
    # Halted: modules already running the new build keep it, nobody else is offered it.
    assert ver(driven, agent("SIM00001")) == A
    updated = next(v for v in (f"SIM{i:05d}" for i in range(1, FLEET + 1)) if ver(driven, agent(v, B)) == B)
    assert updated
    assert setup.run("release", "list", *setup.repo.args).out.split()[2] == A


def test_server_killed_mid_rollout_carries_on(embedded: Setup, driven: OvotaServer) -> None:
    setup = embedded
    setup.simulate(driven, 1)
    setup.run("release", "publish", setup.builds[B], *setup.repo.args, "--tag", "main", "--rollout", "1,10,50,100")
    start = http_json(f"{driven.url}/clock")[1]["now"]
    report = setup.work / "long.json"
    script = Path(sys.executable).with_name("ovota")
    simulation = subprocess.Popen(
        [str(script), "fleet", "simulate", "--server", driven.base, "--modules", str(FLEET), "--days", "10",
         "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: http_json(f"{driven.url}/clock")[1]["now"] > start + 3.5 * 86400, "3.5 simulated days", 60)
        driven.stop(signal.SIGKILL)  # a crash: no clean shutdown, no final flush
        before = setup.status()
        assert before["state"] == "running" and before["step"] >= 2
        restarted = OvotaServer(setup.repo, extra=("--driven-clock",), port=driven.port)
        try:
            assert simulation.wait(timeout=120) == 0, simulation.stderr.read() if simulation.stderr else ""
        finally:
            restarted.stop()
    finally:
        if simulation.poll() is None:
            simulation.kill()
        if simulation.stderr:
            simulation.stderr.close()
    after = setup.status()
    assert after["id"] == before["id"] and after["state"] == "completed"
    # Cohorts are kept: each step reached before the crash has the same members.
    for old, new in zip(before["steps"], after["steps"], strict=False):
        assert (old["percent"], old["cohort"]) == (new["percent"], new["cohort"])
    assert after["counts"]["updated"] >= before["counts"]["updated"]
    final = json.loads(report.read_text())
    assert final["days"][-1]["versions"] == {B: FLEET}


def test_simulation_follows_a_scaled_clock(embedded: Setup) -> None:
    setup = embedded
    server = OvotaServer(setup.repo, extra=("--time-scale", "86400"))  # a simulated day per real second
    try:
        first = http_json(f"{server.url}/clock")[1]
        assert first["scale"] == 86400 and not first["driven"]
        assert http_json(f"{server.url}/clock", "POST", body={"to": 0})[0] == 405  # only a driven clock moves
        report = setup.simulate(server, 2)
        assert [day["checkins"] for day in report["days"]] == [FLEET, FLEET]
        assert http_json(f"{server.url}/clock")[1]["now"] >= first["now"] + 2 * 86400
    finally:
        server.stop()

"""Running a fleet day to day (issue #19): token roles, the audit log, metrics and health, who failed, evidence
before widening, and the command line's manners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovota.server.fleet.rollouts import Rollouts
from ovota.server.store.backends import Backends
from ovota.server.store.channels import history
from ovota.server.store.tokens import create_token
from tests.conftest import CliRunner
from tests.hostile import get
from tests.module_helpers import image, new_module
from tests.servers import OvotaServer
from tests.signing import Keys
from tests.stores import Store
from tests.test_fleet import A, B, Setup, agent, http_json, make_setup, ver

OVOTA = str(Path(sys.executable).with_name("ovota"))


@pytest.fixture
def site(tmp_path: Path, ovota: CliRunner) -> Setup:
    return make_setup(Store("folder", Backends(folder=tmp_path / "repo")), tmp_path, ovota)


def _advance(server: OvotaServer, seconds: float) -> None:
    now = float(http_json(f"{server.url}/clock")[1]["now"])
    assert http_json(f"{server.url}/clock", "POST", body={"to": now + seconds})[0] == 200


# -- roles and the audit log ----------------------------------------------------------------------------------


def test_roles_allow_what_they_say_and_the_audit_log_names_who(site: Setup) -> None:
    args = site.repo.args
    admin = site.run("token", "create", *args, "--name", "ops").out.strip()
    ci = site.run("token", "create", *args, "--name", "ci", "--role", "release").out.strip()
    dashboard = site.run("token", "create", *args, "--name", "dashboard", "--role", "read").out.strip()
    site.run("release", "publish", site.builds[B], *args, "--tag", "edge")
    server = OvotaServer(site.repo)
    try:
        promote = {"product": "v3.3-5", "from": "edge", "to": "eap"}
        status, body = http_json(f"{server.url}/api/v1/promote", "POST", dashboard, promote)
        assert status == 403 and body["error"] == "token 'dashboard' has the role read: this needs release"
        assert http_json(f"{server.url}/api/v1/channels", token=dashboard)[0] == 200
        assert http_json(f"{server.url}/api/v1/promote", "POST", ci, promote)[0] == 200
        status, body = http_json(f"{server.url}/api/v1/tokens", "POST", ci, {"name": "x", "role": "admin"})
        assert status == 403
        status, body = http_json(f"{server.url}/api/v1/tokens", "POST", admin, {"name": "robot", "role": "read"})
        assert status == 201 and body["token"].startswith("ovota_")
        assert http_json(f"{server.url}/api/v1/channels", token=body["token"])[0] == 200
        listed = http_json(f"{server.url}/api/v1/tokens", token=admin)[1]
        assert {(t["name"], t["role"]) for t in listed} >= {("ci", "release"), ("robot", "read"), ("ops", "admin")}
        assert all("token" not in t for t in listed)
        assert http_json(f"{server.url}/api/v1/tokens/robot", "DELETE", admin)[0] == 200
        # A refusal is recorded too: promoting a channel that does not exist.
        bad = {"product": "v3.3-5", "from": "nope", "to": "main"}
        assert http_json(f"{server.url}/api/v1/promote", "POST", ci, bad)[0] == 404
        audit = http_json(f"{server.url}/api/v1/audit", token=dashboard)[1]
    finally:
        server.stop()
    user = site.run("audit", *args, "--json").out
    entries = json.loads(user)
    seen = {(e["actor"], e["action"], e["target"], e["outcome"].split(":")[0]) for e in entries}
    me = next(e["actor"] for e in entries if e["actor"].startswith("cli:"))
    assert (me, "publish", "v3.3-5/edge", "ok") in seen and (me, "token create", "ci", "ok") in seen
    assert ("ci", "promote", "v3.3-5/eap", "ok") in seen
    assert ("ops", "token create", "robot", "ok") in seen and ("ops", "token revoke", "robot", "ok") in seen
    assert ("ci", "promote", "v3.3-5/main", "refused") in seen
    assert len(audit) == len(entries)  # the API gives the same log (reading it changes nothing)
    by_ci = json.loads(site.run("audit", *args, "--json", "--actor", "ci").out)
    assert {e["actor"] for e in by_ci} == {"ci"} and len(by_ci) == 2
    lines = site.run("audit", *args, "--since", "1h").out.splitlines()
    assert any(" ci " in line and "promote" in line for line in lines)


def test_channel_history_and_rollout_log_name_the_actor(site: Setup) -> None:
    args = site.repo.args
    site.run("release", "publish", site.builds[B], *args, "--tag", "edge")
    site.run("rollout", "start", *args, "--product", "v3.3-5", "--tag", "main", "--build", B)
    site.run("rollout", "pause", *args, "--product", "v3.3-5", "--tag", "main")
    r = site.repo.repository()
    try:
        moves = history(r.db, "v3.3-5", "edge")
        events = Rollouts(r).events(1)
    finally:
        r.close()
    assert moves[0].actor.startswith("cli:") and moves[0].action == "publish"
    assert [(message.split(":")[0], actor.startswith("cli:")) for _, message, actor in events] == [
        ("started", True),
        ("pause", True),
    ]


# -- metrics and health -------------------------------------------------------------------------------------------


def test_metrics_health_and_readiness(site: Setup) -> None:
    token = site.run("token", "create", *site.repo.args, "--name", "prometheus", "--role", "read").out.strip()
    server = OvotaServer(site.repo)
    try:
        assert get(server.port, "/healthz")[2] == b"ok\n" and get(server.port, "/readyz")[2] == b"ready\n"
        assert get(server.port, "/metrics")[0] == 401
        assert ver(server, agent("SECRETCAR")) == A
        get(server.port, "/firmware/ota/v3.3-5/main/ovms3.bin", f"User-Agent: {agent('SECRETCAR')}".encode())
        assert get(server.port, "/firmware/ota/v9/main/ovms3.ver")[0] == 404
        time.sleep(1.2)  # one registry flush
        status, headers, body = get(server.port, "/metrics", f"Authorization: Bearer {token}".encode())
        assert status == 200 and headers["content-type"].startswith("text/plain")
        text = body.decode()
        assert 'ovota_device_requests_total{file="ver",status="200"} 1.0' in text
        assert 'ovota_device_requests_total{file="bin",status="200"} 1.0' in text
        assert 'ovota_device_requests_total{file="ver",status="404"} 1.0' in text
        assert "ovota_device_bytes_sent_total 65536.0" in text
        assert 'ovota_fleet_modules{product="v3.3-5",tag="main"} 1.0' in text
        assert "ovota_registry_batch_events_count" in text and "ovota_device_request_seconds_bucket" in text
        assert "SECRETCAR" not in text  # never a vehicle id in a label
    finally:
        server.stop()


# -- who failed, and evidence before widening ------------------------------------------------------------------------


@pytest.fixture
def driven(site: Setup) -> Iterator[OvotaServer]:
    server = OvotaServer(site.repo, extra=("--driven-clock",))
    yield server
    server.stop()


def _status(site: Setup) -> dict[str, Any]:
    return site.status()


def test_a_rollout_whose_modules_are_offline_does_not_widen(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    for n in range(30):
        assert ver(driven, agent(f"CAR{n:02d}")) == A
    _advance(driven, 60)
    site.run("release", "publish", site.builds[B], *args, "--tag", "edge")
    site.run("rollout", "start", *args, "--product", "v3.3-5", "--tag", "main", "--build", B, "--steps", "20,100",
             "--step-interval", "1h", "--min-sample", "5")  # fmt: skip
    for _ in range(6):
        _advance(driven, 12 * 3600)  # three days, and no module is heard from
    status = _status(site)
    assert status["state"] == "running" and status["step"] == 1, status


def test_who_failed_resume_keeps_the_step_and_its_interval(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    cars = [f"CAR{n:02d}" for n in range(40)]
    for car in cars:
        assert ver(driven, agent(car)) == A
    _advance(driven, 60)
    site.run("release", "publish", site.builds[B], *args, "--tag", "edge")
    site.run("rollout", "start", *args, "--product", "v3.3-5", "--tag", "main", "--build", B, "--steps", "25,100",
             "--step-interval", "1h", "--min-sample", "4", "--grace", "10m")  # fmt: skip
    members = [car for car in cars if ver(driven, agent(car)) == B]
    assert len(members) >= 4
    for car in members:
        assert get(driven.port, "/firmware/ota/v3.3-5/main/ovms3.bin", f"User-Agent: {agent(car)}".encode())[0] == 200
    _advance(driven, 3600)
    ver(driven, agent(members[0]))  # still on A after the grace period: failed
    for car in members[1:]:
        ver(driven, agent(car, B))  # updated
    _advance(driven, 600)
    status = _status(site)
    assert status["state"] == "halted" and status["reason_at"], status
    failed = site.run("rollout", "status", *args, "--product", "v3.3-5", "--tag", "main", "--modules", "failed").out
    assert f"{members[0]:<16} failed" in failed and "1 modules" in failed
    token = site.run("token", "create", *args, "--name", "ci").out.strip()
    modules = http_json(f"{driven.url}/api/v1/rollouts/v3.3-5/main/modules?state=failed", token=token)[1]
    assert [(m["vehicle_id"], m["state"], m["from_version"]) for m in modules] == [(members[0], "failed", A)]
    assert http_json(f"{driven.url}/api/v1/rollouts/v3.3-5/main/modules?state=bogus", token=token)[0] == 400
    site.run("rollout", "resume", *args, "--product", "v3.3-5", "--tag", "main")
    _advance(driven, 600)  # ten minutes later: the step's interval started again at the resume
    assert _status(site)["step"] == 1
    _advance(driven, 3600)
    assert _status(site)["state"] == "completed"  # its failures were judged: it widens to 100%


# -- the command line's manners -------------------------------------------------------------------------------------


def test_command_line_manners(site: Setup, tmp_path: Path, ovota: CliRunner) -> None:
    args = site.repo.args
    again = ovota("release", "publish", site.builds[A], *args, "--tag", "main")
    assert again.code == 0 and again.out.startswith("Nothing to do: already published 3.3.006 to v3.3-5/main")
    r = site.repo.repository()
    try:
        assert r.db.execute("SELECT count(*) FROM history").fetchone()[0] == 1  # make run twice adds nothing
    finally:
        r.close()
    missing = tmp_path / "nowhere"
    for command in (("release", "list"), ("fleet", "list"), ("rollout", "list"), ("token", "list"), ("audit",),
                    ("rollout", "status", "--product", "v3.3-5", "--tag", "main")):  # fmt: skip
        run = ovota(*command, "--repo", missing)
        assert run.code == 2 and f"no repository at {missing}" in run.err, (command, run.err)
        assert not missing.exists()
    r = site.repo.repository()
    try:
        for n in range(1000):  # made here, not by 1,000 commands: enough output (~70 KB) to outlast a pipe's buffer
            create_token(r.db, f"t{n:04d}")
    finally:
        r.close()
    piped = subprocess.run(f"{OVOTA} token list --repo {site.repo.backends.folder} | head -1", shell=True,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert piped.stdout.startswith("t0000") and "Error" not in piped.stderr and "Broken pipe" not in piped.stderr
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(3072))
    shown = ovota("parttable", "show", zeros)
    assert shown.code == 2 and "neither a binary partition table (those start with bytes AA 50) nor CSV" in shown.err


def test_one_module_process_holds_a_flash_file(tmp_path: Path, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img", version=A, size=65536)
    shell = subprocess.Popen([OVOTA, "module", "shell", str(flash)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write("ota status nocheck\n")
        shell.stdin.flush()
        assert shell.stdout.readline()  # it has powered on the module: it holds the flash file now
        run = ovota("module", "run", flash, "--", "ota status nocheck")
        assert run.code == 1 and "in use by another ovota module process (module run, shell or web)" in run.err
        assert ovota("module", "dump", flash, "--partition", "ota_0", tmp_path / "x.bin").code == 1
    finally:
        assert shell.stdin is not None
        shell.communicate("exit\n", timeout=20)
    assert ovota("module", "run", flash, "--", "ota status nocheck").code == 0


def test_a_signed_image_dumps_with_its_signature_sector(tmp_path: Path, ovota: CliRunner, keys: Keys) -> None:
    unsigned = tmp_path / "fw.bin"
    unsigned.write_bytes(image(A, 65536))
    signed = tmp_path / "signed.bin"
    assert ovota("image", "sign", "--key", keys.signing, unsigned, signed).code == 0
    flash = tmp_path / "m.img"
    assert ovota("module", "create", flash, "--layout", "v3-35", "--firmware", signed).code == 0
    dumped = tmp_path / "dumped.bin"
    run = ovota("module", "dump", flash, "--partition", "ota_0", dumped)
    assert run.code == 0, run.err
    assert dumped.read_bytes() == signed.read_bytes()  # the README's cmp


def test_the_readme_sd_card_example(tmp_path: Path, ovota: CliRunner) -> None:
    fw = tmp_path / "fw.bin"
    fw.write_bytes(image("3.3.005", 65536))
    module_img = tmp_path / "module.img"
    assert ovota("module", "create", module_img, "--layout", "v3-35", "--firmware", fw).code == 0
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "firmware.bin").write_bytes(image("3.3.006", 65536))
    run = ovota("module", "run", module_img, "--sd", tmp_path / "sd", "--", "ota flash vfs /sd/firmware.bin")
    assert run.code == 0 and "OTA flash was successful" in run.out, run.out + run.err


def test_the_simulator_report_fits_when_piped(site: Setup, driven: OvotaServer) -> None:
    run = subprocess.run([OVOTA, "fleet", "simulate", "--server", driven.base, "--modules", "5", "--days", "1"],
                         capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "80"})  # fmt: skip
    assert run.returncode == 0, run.stderr
    header = next(line for line in run.stdout.splitlines() if "Day" in line)
    assert "Ever received new" in header  # one line, not cut or wrapped


def test_api_unknown_paths_are_json(site: Setup) -> None:
    token = site.run("token", "create", *site.repo.args, "--name", "ci").out.strip()
    server = OvotaServer(site.repo)
    try:
        status, body = http_json(f"{server.url}/api/v1/nothing-here", token=token)
        assert status == 404 and isinstance(body, dict) and "no such API" in body["error"]
        status, body = http_json(f"{server.url}/api/v1/rollouts/v3.3-5/main/explode", "POST", token)
        assert status == 404 and "no rollout action" in body["error"]
        request = urllib.request.Request(f"{server.url}/api/v1/channels", method="PUT",
                                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as err:
            assert (
                err.code == 404
                and json.loads(err.read())["error"] == "no such API: PUT /api/v1/channels (see the README's API list)"
            )
    finally:
        server.stop()

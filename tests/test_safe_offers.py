"""Never offer a module a build it should not run (issue 25's six reproductions), against a real server on a
driven clock with OVMS's plain HTTP/1.0 requests: failed builds are not offered again until retried, pins cannot
cross products or slots, one byte is no download, a crash loses no outcome, a typo makes no channel, a target
that matches nobody does not start."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ovota.formats.image_builder import build_app_image
from ovota.server.store.backends import Backends
from tests.conftest import CliRunner
from tests.hostile import get
from tests.module_helpers import BUILT, image
from tests.servers import OvotaServer, raw_get
from tests.stores import Store
from tests.test_fleet import SIZE, A, B, Setup, agent, make_setup, ver, wait_for
from tests.test_targeting import advance, fleet

CHANNEL = ("--product", "v3.3-5", "--tag", "main")
BIN = "/firmware/ota/v3.3-5/main/ovms3.bin"


@pytest.fixture
def site(tmp_path: Path, ovota: CliRunner) -> Setup:
    setup = make_setup(Store("folder", Backends(folder=tmp_path / "repo")), tmp_path, ovota)
    setup.run("release", "publish", setup.builds[B], *setup.repo.args, "--tag", "edge")
    return setup


@pytest.fixture
def driven(site: Setup) -> Iterator[OvotaServer]:
    server = OvotaServer(site.repo, extra=("--driven-clock",))
    yield server
    server.stop()


def download(server: OvotaServer, car: str, version: str = A, *extra: bytes) -> tuple[int, bytes]:
    answer = get(server.port, BIN, f"User-Agent: {agent(car, version)}".encode(), *extra)
    return answer[0], answer[2]


def refused(site: Setup, *args: str | Path) -> str:
    """Run a command that must be refused: a non-zero exit and one line on stderr."""
    result = site.ovota(*args)
    assert result.code != 0, result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.err
    return lines[0]


def start(site: Setup, *extra: str) -> dict[str, Any]:
    site.run("rollout", "start", *site.repo.args, *CHANNEL, "--build", B, *extra)
    return site.status()


def test_a_module_that_failed_a_build_is_not_offered_it_again_until_retried(site: Setup, driven: OvotaServer) -> None:
    cars = [f"M{n:04d}" for n in range(40)]
    for car in cars:
        ver(driven, agent(car))
    advance(driven, 60)
    start(site, "--steps", "50,100", "--halt-failed", "90%", "--min-sample", "20", "--grace", "10m")
    cohort = [car for car in cars if ver(driven, agent(car)) == B]
    failing = cohort[:5]
    for car in failing:
        status, body = download(driven, car)
        assert status == 200 and len(body) == SIZE
    advance(driven, 11 * 60)  # past the grace period: they still report A
    # The very check-in that shows the failure is answered without B (and so is every later one).
    assert {car: ver(driven, agent(car)) for car in failing} == dict.fromkeys(failing, A)
    advance(driven, 86400)
    assert {car: ver(driven, agent(car)) for car in failing} == dict.fromkeys(failing, A)
    summary = site.status()
    assert summary["state"] == "running" and summary["counts"]["failed"] == 5  # below the halt threshold
    listed = json.loads(site.run("rollout", "status", *site.repo.args, *CHANNEL, "--modules", "failed", "--json").out)
    assert sorted(m["vehicle_id"] for m in listed["modules"]) == sorted(failing)
    why = fleet(site)[failing[0]]
    assert why["offered"] == A and "this module failed on 3.3.007" in why["why"]
    # The rest of the cohort is still offered B; the operator retries one module, which gets B again.
    assert ver(driven, agent(cohort[5])) == B
    out = site.run("fleet", "retry", *site.repo.args, failing[0]).out
    assert f"Retrying {B}" in out and "still reported 3.3.006" in out
    assert ver(driven, agent(failing[0])) == B and ver(driven, agent(failing[1])) == A
    line = refused(site, "fleet", "retry", *site.repo.args, failing[0])  # nothing left to retry: changes nothing
    assert "has not failed on any build" in line
    audit = site.run("audit", *site.repo.args).out
    assert f"fleet retry  {failing[0]}" in audit or f"fleet retry {failing[0]}" in " ".join(audit.split())


def test_a_failed_channel_build_leaves_the_module_with_nothing_new(site: Setup, driven: OvotaServer) -> None:
    site.run("release", "promote", *site.repo.args, "--product", "v3.3-5", "--from", "edge", "--to", "main")
    assert ver(driven, agent("SOLO")) == B
    assert download(driven, "SOLO")[0] == 200
    advance(driven, 601)
    # Nothing else to offer: .ver names what it runs (OVMS then has nothing newer), .bin is not found.
    assert ver(driven, agent("SOLO")) == A
    status, body = download(driven, "SOLO")
    assert status == 404 and b"failed on 3.3.007" in body
    # A module that went back after running B has failed on it too.
    assert download(driven, "BACK")[0] == 200
    assert ver(driven, agent("BACK", B)) == B
    advance(driven, 60)
    assert ver(driven, agent("BACK", A)) == A
    wait_for(lambda: "BACK" in fleet(site), "the registry")
    assert fleet(site)["BACK"]["why"].startswith("nothing; channel skipped: this module failed on 3.3.007")
    assert "went back to 3.3.006 after running it" in site.run("fleet", "retry", *site.repo.args, "BACK").out


def test_pins_cannot_cross_products_or_slots(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    old = site.work / "old.bin"
    old.write_bytes(image("3.3.005-2-gccccccc", SIZE))
    site.run("release", "publish", old, *args, "--product", "v3.3", "--tag", "main")
    big = site.work / "big.bin"
    big.write_bytes(image("3.3.008", 5_000_000))
    site.run("release", "publish", big, *args, "--product", "v3.3-5", "--tag", "eap")
    ver(driven, agent("M0200"))  # a v3.3-5 module
    head, _ = raw_get(driven.port, "/firmware/ota/v3.3/main/ovms3.ver", "ovms/v3.3 (OLD1 3.3.004/ota_0/main)")
    assert head.startswith(b"HTTP/1.0 200")
    wait_for(lambda: "OLD1" in site.run("fleet", "list", *args).out, "the registry")
    line = refused(site, "fleet", "pin", *args, "M0200", "--build", "3.3.005-2-gccccccc")
    assert "is a build for v3.3, not v3.3-5" in line
    assert "is a build for v3.3-5, not v3.3" in refused(site, "fleet", "pin", *args, "OLD1", "--build", "3.3.008")
    assert "No pins" in site.run("fleet", "pins", *args).out or site.run("fleet", "pins", *args).out.count("\n") == 1
    # A vehicle the registry does not know yet can be pinned; when it shows up as another product, the pin is
    # skipped and why says so.
    site.run("fleet", "pin", *args, "NEWCAR", "--build", "3.3.005-2-gccccccc")
    assert ver(driven, agent("NEWCAR")) == A
    wait_for(lambda: "NEWCAR" in fleet(site), "the registry")
    assert fleet(site)["NEWCAR"]["why"] == "channel; pin skipped: build is for v3.3"


def test_a_partial_fetch_is_no_download_and_a_resumed_one_is(site: Setup, driven: OvotaServer) -> None:
    cars = [f"C{n:03d}" for n in range(100)]
    for car in cars:
        ver(driven, agent(car))
    advance(driven, 60)
    start(site, "--steps", "50,100", "--min-sample", "10", "--halt-failed", "5%")
    cohort = [car for car in cars if ver(driven, agent(car)) == B]
    for car in cohort:  # the last byte of B under every cohort vehicle id: a few bytes in all
        status, body = download(driven, car, A, b"Range: bytes=-1")
        assert status == 206 and len(body) == 1
    advance(driven, 15 * 60)
    for car in cohort:
        ver(driven, agent(car))  # the old version, past the grace period
    advance(driven, 1)
    summary = site.status()
    assert summary["state"] == "running" and summary["counts"]["failed"] == 0 and summary["counts"]["updating"] == 0
    # A download broken after half and resumed from there counts once the ranges cover the image.
    assert download(driven, cohort[0], A, f"Range: bytes=0-{SIZE // 2 - 1}".encode())[0] == 206
    advance(driven, 1)
    assert site.status()["counts"]["updating"] == 0
    assert download(driven, cohort[0], A, f"Range: bytes={SIZE // 2}-".encode())[0] == 206
    advance(driven, 1)
    assert site.status()["counts"]["updating"] == 1


def test_a_crash_leaves_no_module_pending_for_ever(site: Setup, tmp_path: Path) -> None:
    server = OvotaServer(site.repo, extra=("--driven-clock",))
    cars = [f"K{n:03d}" for n in range(30)]
    for car in cars:
        ver(server, agent(car))
    advance(server, 60)
    start(site, "--steps", "50,100", "--watch", "2d", "--min-sample", "50")
    cohort = [car for car in cars if ver(server, agent(car)) == B]
    time.sleep(1.2)  # the offers are written (the registry's batch window is 0.5 s)
    for car in cohort[:3]:
        assert download(server, car)[0] == 200
    server.stop(signal.SIGKILL)  # at once: the downloads (and perhaps the offers) were not written
    server = OvotaServer(site.repo, extra=("--driven-clock",))
    try:
        for car in cohort[:3]:
            assert ver(server, agent(car, B)) == B  # they rebooted into B
        advance(server, 3600)
        modules = json.loads(site.run("rollout", "status", *site.repo.args, *CHANNEL, "--modules", "all", "--json").out)
        by_car = {m["vehicle_id"]: m for m in modules["modules"]}
        assert all(by_car[car]["state"] == "updated" and by_car[car]["from_version"] == A for car in cohort[:3])
        # What the table counts per state is exactly who --modules STATE lists.
        for state in ("pending", "updated", "silent"):
            listed = json.loads(site.run("rollout", "status", *site.repo.args, *CHANNEL, "--modules", state,
                                         "--json").out)  # fmt: skip
            assert len(listed["modules"]) == sum(s[state] for s in listed["steps"]), state
        # Cohort modules that were offered B and never came back go silent after --watch.
        advance(server, 3 * 86400)
        assert site.status()["counts"]["silent"] == len(cohort) - 3
    finally:
        server.stop()


def test_a_typo_makes_no_channel(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    before = site.run("release", "list", *args).out
    line = refused(site, "release", "publish", site.builds[B], *args, "--tag", "mian")
    assert "has no channel 'mian'" in line and "did you mean main?" in line and "--new-channel" in line
    assert "did you mean edge?" in refused(site, "release", "promote", *args, "--product", "v3.3-5", "--from", "main",
                                           "--to", "edgy")  # fmt: skip
    assert site.run("release", "list", *args).out == before
    assert raw_get(driven.port, "/firmware/ota/v3.3-5/mian/ovms3.ver")[0].startswith(b"HTTP/1.0 404")
    out = site.run("release", "publish", site.builds[B], *args, "--tag", "nightly", "--new-channel").out
    assert "Published 3.3.007 to v3.3-5/nightly" in out
    site.run("release", "publish", site.builds[A], *args, "--tag", "nightly")  # it exists now: no flag needed
    token = site.run("token", "create", *args, "--name", "ci", "--role", "release").out.strip()
    url = f"{driven.url}/api/v1/publish?tag=maim&product=v3.3-5"
    status, body = http_post(url, token, site.builds[B].read_bytes())
    assert status == 400 and "did you mean main?" in body["error"]
    assert http_post(url + "&new_channel=true", token, site.builds[B].read_bytes())[0] == 201


def http_post(url: str, token: str, data: bytes) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_targeted_rollout_that_matches_nobody_does_not_start(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    for car in ("TEST1", "TEST2", "CAR1"):
        ver(driven, agent(car))
    advance(driven, 60)
    line = refused(site, "rollout", "start", *args, *CHANNEL, "--build", B, "--vehicles", "NOSUCH*")
    assert "matches no module of v3.3-5/main" in line and "--allow-empty" in line
    assert "no rollout" in site.ovota("rollout", "status", *args, *CHANNEL).err
    out = site.run("rollout", "start", *args, *CHANNEL, "--build", B, "--vehicles", "TEST*", "--steps", "50,100").out
    assert "matches 2 known modules" in out
    site.run("rollout", "abort", *args, *CHANNEL)
    out = site.run("rollout", "start", *args, *CHANNEL, "--build", B, "--vehicles", "NOSUCH*", "--allow-empty").out
    assert "matches 0 known modules" in out


def test_anti_rollback_floor(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    ver(driven, agent("CAR1"))
    wait_for(lambda: "CAR1" in site.run("fleet", "list", *args).out, "the registry")
    line = refused(site, "release", "min-secure-version", *args, "--product", "v3.3-5", "2")
    assert "main serves 3.3.006 (secure version 0)" in line
    secure = site.work / "secure.bin"
    secure.write_bytes(build_app_image("3.3.010", size=SIZE, secure_version=2, built=BUILT))
    for tag in ("main", "edge"):
        site.run("release", "publish", secure, *args, "--tag", tag)
    assert "below secure version 2" in site.run("release", "min-secure-version", *args, "--product", "v3.3-5", "2").out
    low = site.work / "low.bin"
    low.write_bytes(build_app_image("3.3.011", size=SIZE, secure_version=1, built=BUILT))
    assert "anti-rollback floor 2" in refused(site, "release", "publish", low, *args, "--tag", "eap")
    assert "anti-rollback floor 2" in refused(site, "fleet", "pin", *args, "CAR1", "--build", B)
    assert ver(driven, agent("CAR1", "3.3.010")) == "3.3.010"

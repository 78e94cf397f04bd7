"""Targeting and pacing against a real server on a driven clock: groups, vehicle patterns, versions, windows,
rates, waypoints, pins and their precedence, through the CLI and the API; what ``fleet list`` says and what
modules are answered always agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ovota.server.store.backends import Backends
from tests.conftest import CliRunner
from tests.hostile import get
from tests.module_helpers import image
from tests.servers import OvotaServer
from tests.stores import Store
from tests.test_fleet import SIZE, A, B, Setup, agent, http_json, make_setup, ver

C = "3.3.008"
CHANNEL = ("--product", "v3.3-5", "--tag", "main")


@pytest.fixture
def site(tmp_path: Path, ovota: CliRunner) -> Setup:
    setup = make_setup(Store("folder", Backends(folder=tmp_path / "repo")), tmp_path, ovota)
    setup.builds[C] = tmp_path / f"{C}.bin"
    setup.builds[C].write_bytes(image(C, SIZE))
    setup.run("release", "publish", setup.builds[B], *setup.repo.args, "--tag", "edge")
    return setup


@pytest.fixture
def driven(site: Setup) -> Iterator[OvotaServer]:
    server = OvotaServer(site.repo, extra=("--driven-clock",))
    yield server
    server.stop()


def now(server: OvotaServer) -> float:
    return float(http_json(f"{server.url}/clock")[1]["now"])


def advance(server: OvotaServer, seconds: float) -> None:
    assert http_json(f"{server.url}/clock", "POST", body={"to": now(server) + seconds})[0] == 200


def offers(server: OvotaServer, cars: list[str], version: str = A) -> dict[str, str]:
    return {car: ver(server, agent(car, version)) for car in cars}


def update(server: OvotaServer, car: str) -> None:
    """The module downloads the new build and comes back running it."""
    head = f"User-Agent: {agent(car)}".encode()
    assert get(server.port, "/firmware/ota/v3.3-5/main/ovms3.bin", head)[0] == 200
    ver(server, agent(car, B))


def fleet(site: Setup) -> dict[str, dict[str, Any]]:
    return {m["vehicle_id"]: m for m in json.loads(site.run("fleet", "list", *site.repo.args, "--json").out)}


def test_a_group_rollout_offers_the_build_to_the_group_only_and_leaves_it_assigned(
    site: Setup, driven: OvotaServer
) -> None:
    args = site.repo.args
    cars = [f"CAR{n:02d}" for n in range(20)]
    offers(driven, cars)
    advance(driven, 60)
    group = ["CAR01", "CAR02", "CAR03", "CAR04", "NEW01"]  # NEW01: not seen yet
    added = site.run("fleet", "group", "add", *args, "canaries", *group[:3])
    assert "3 added" in added.out
    csv = site.work / "more.csv"
    csv.write_text("vehicle_id,note\nCAR04,x\nNEW01,y\nCAR01,again\n")
    assert "2 added, 1 already in it, 5 vehicles" in site.run("fleet", "group", "add", *args, "canaries",
                                                               "--from-file", csv).out  # fmt: skip
    assert "canaries" in site.run("fleet", "group", "list", *args).out
    site.run("rollout", "start", *args, *CHANNEL, "--build", B, "--group", "canaries", "--steps", "50,100",
             "--step-interval", "1h", "--min-sample", "1")  # fmt: skip
    advance(driven, 1)
    answered = offers(driven, cars)
    offered = sorted(car for car, version in answered.items() if version == B)
    assert len(offered) == 2 and set(offered) <= set(group)  # half of the group's 4 known modules; nobody else
    status = site.status()
    assert status["target"] == "group canaries" and status["step"] == 1
    why = fleet(site)
    assert why[offered[0]]["why"] == f"rollout {status['id']}, step 1 (50%)" and why[offered[0]]["offered"] == B
    assert why["CAR10"]["why"] == f"channel (not in rollout {status['id']}'s target)" and why["CAR10"]["offered"] == A
    for car in offered:
        update(driven, car)
    advance(driven, 3600)
    status = site.status()
    assert status["state"] == "completed", status
    # The channel keeps its build; the group (even the vehicle not seen yet) is assigned to the new one.
    assert ver(driven, agent("CAR10")) == A and ver(driven, agent("OTHER")) == A
    # (the modules that updated report B: one that went back to A would have failed on B, and not get it again)
    assert {car: ver(driven, agent(car, B if car in offered else A)) for car in group} == dict.fromkeys(group, B)
    assigned = json.loads(site.run("fleet", "assignments", *args, "--json").out)
    assert sorted(a["vehicle_id"] for a in assigned) == sorted(group) and {a["version"] for a in assigned} == {B}
    assert fleet(site)["CAR04"]["why"] == "assigned by a targeted rollout"
    site.run("fleet", "unassign", *args, "CAR04")
    assert ver(driven, agent("CAR04")) == A


def test_patterns_and_versions_choose_the_modules(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    offers(driven, ["TEST1", "TEST2", "CAR1", "CAR2"])
    offers(driven, ["OLD1", "OLD2"], "3.3.005")
    advance(driven, 60)
    site.run("rollout", "start", *args, *CHANNEL, "--build", B, "--vehicles", "TEST*", "--steps", "99,100")
    advance(driven, 1)
    assert offers(driven, ["TEST1", "TEST2", "CAR1", "CAR2"]) == {"TEST1": B, "TEST2": B, "CAR1": A, "CAR2": A}
    assert offers(driven, ["OLD1"], "3.3.005") == {"OLD1": A}
    site.run("rollout", "abort", *args, *CHANNEL)
    site.run("rollout", "start", *args, *CHANNEL, "--build", B, "--versions", "<3.3.006", "--steps", "99,100")
    advance(driven, 1)
    assert offers(driven, ["OLD1", "OLD2"], "3.3.005") == {"OLD1": B, "OLD2": B}
    assert offers(driven, ["TEST1", "CAR1"]) == {"TEST1": A, "CAR1": A}
    assert site.status()["target"] == "versions <3.3.006"
    bad = site.ovota("rollout", "start", *args, *CHANNEL, "--build", B, "--group", "nobody")
    assert bad.code != 0 and "a active" not in bad.err


def _window_from(server: OvotaServer, zone: str, hours_ahead: int, length: int) -> str:
    local = datetime.fromtimestamp(now(server), ZoneInfo(zone))
    start = (local + timedelta(hours=hours_ahead)).replace(minute=0)
    end = start + timedelta(hours=length)
    return f"{start:%H:%M}-{end:%H:%M}"


def test_a_closed_window_offers_nobody_then_opens(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    cars = [f"CAR{n:02d}" for n in range(10)]
    offers(driven, cars)
    advance(driven, 60)
    window = _window_from(driven, "America/New_York", 3, 2)
    site.run("rollout", "start", *args, *CHANNEL, "--build", B, "--steps", "50,100", "--window", window,
             "--timezone", "America/New_York", "--step-interval", "2h", "--min-sample", "1")  # fmt: skip
    advance(driven, 1)
    assert set(offers(driven, cars).values()) == {A}  # closed: nobody is offered the build
    assert sum("outside its windows" in m["why"] for m in fleet(site).values()) == 5  # the step's half
    advance(driven, 3 * 3600)
    opened = [car for car, version in offers(driven, cars).items() if version == B]
    assert len(opened) == 5
    update(driven, opened[0])
    advance(driven, 600)  # over 3 h since the start, under 2 h of window time: the step's interval has not passed
    assert site.status()["step"] == 1
    advance(driven, 2 * 3600)  # the window closed after 2 h of window time, with an outcome: the last step
    status = site.status()
    assert (status["state"], status["step"]) == ("running", 2)
    assert ver(driven, agent(opened[0], B)) == B and ver(driven, agent(opened[1])) == A  # closed: nobody new
    advance(driven, 20 * 3600)  # a day of wall time and no window time: the 100% step has not run yet
    assert site.status()["state"] == "running"
    advance(driven, 2 * 3600)  # into the next night's window (opened[0] runs B: it would fail reporting A)
    assert set(offers(driven, [c for c in cars if c != opened[0]]).values()) == {B}
    assert ver(driven, agent(opened[0], B)) == B


def test_a_rate_offers_at_most_n_per_period_and_grows(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    cars = [f"CAR{n:02d}" for n in range(30)]
    offers(driven, cars)
    advance(driven, 60)
    site.run("rollout", "start", *args, *CHANNEL, "--build", B, "--steps", "50,100", "--rate", "4/h",
             "--rate-growth", "2", "--step-interval", "1h")  # fmt: skip
    offered = []
    for _ in range(5):  # evaluations within the first period
        advance(driven, 60)
        offered = [car for car, version in offers(driven, cars).items() if version == B]
        assert len(offered) <= 4
    assert len(offered) == 4
    assert "waiting for its rate" in " ".join(m["why"] for m in fleet(site).values())
    for car in offered:
        update(driven, car)  # four outcomes, as many as were offered: not yet the step's evidence
    running = {car: B if car in offered else A for car in cars}  # what each module reports from now on

    def offered_now() -> list[str]:
        return [ver(driven, agent(car, version)) for car, version in running.items()]

    advance(driven, 3600)
    assert offered_now().count(B) == 4 + 8
    assert site.status()["step"] == 1  # the interval passed, but the rate has not let the whole step in
    advance(driven, 3600)
    assert offered_now().count(B) == 15  # the step's half of 30, no more
    status = site.status()
    assert status["step"] == 1 and status["state"] == "running" and status["admitted"] == 15
    # A paced rollout's 100% step is paced too: a single-step rollout at 5/h does not complete at its start.
    site.run("rollout", "abort", *args, *CHANNEL)
    site.run("release", "publish", site.builds[C], *args, "--tag", "edge")
    site.run("rollout", "start", *args, *CHANNEL, "--build", C, "--steps", "100", "--rate", "5/h")
    advance(driven, 60)
    assert list(offers(driven, cars).values()).count(C) == 5 and site.status()["state"] == "running"
    advance(driven, 3600)
    assert list(offers(driven, cars).values()).count(C) == 10


def test_waypoints_pins_and_their_precedence(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    site.run("release", "publish", site.builds[C], *args, "--tag", "main")
    site.run("release", "waypoint", *args, "--product", "v3.3-5", "--version", B)
    assert B in site.run("release", "waypoint", *args, "--product", "v3.3-5", "--list").out
    assert ver(driven, agent("OLD", "3.3.005")) == B  # older than the waypoint: through it first
    assert ver(driven, agent("MID", A)) == B
    assert ver(driven, agent("AT", B)) == C  # at the waypoint: the channel's build
    assert ver(driven, agent("NEWER", "3.3.009")) == C
    site.run("fleet", "pin", *args, "OLD", "--build", A)
    assert ver(driven, agent("OLD", "3.3.005")) == A  # the pin beats the waypoint
    advance(driven, 60)
    why = fleet(site)
    assert (why["OLD"]["offered"], why["OLD"]["why"]) == (A, "pinned")
    assert (why["MID"]["offered"], why["MID"]["why"]) == (B, f"waypoint {B}")
    assert (why["AT"]["offered"], why["AT"]["why"]) == (C, "channel")
    assert "OLD" in site.run("fleet", "pins", *args).out
    site.run("fleet", "unpin", *args, "OLD")
    assert ver(driven, agent("OLD", "3.3.005")) == B
    site.run("release", "waypoint", *args, "--product", "v3.3-5", "--version", B, "--remove")
    assert ver(driven, agent("OLD", "3.3.005")) == C
    assert site.ovota("fleet", "unpin", *args, "OLD").code != 0
    audit = site.run("audit", *args).out
    assert "fleet pin" in audit and "release waypoint" in audit and "fleet unpin" in audit


def test_the_api_targets_and_paces(site: Setup, driven: OvotaServer) -> None:
    args = site.repo.args
    ci = site.run("token", "create", *args, "--name", "ci", "--role", "release").out.strip()
    dashboard = site.run("token", "create", *args, "--name", "dash", "--role", "read").out.strip()
    offers(driven, ["CAR1", "CAR2", "CAR3"])
    advance(driven, 60)
    api = f"{driven.url}/api/v1"
    assert http_json(f"{api}/groups/fleet-a", "POST", dashboard, {"vehicles": ["CAR1"]})[0] == 403
    assert http_json(f"{api}/groups/fleet-a", "POST", ci, {"vehicles": ["CAR1", "CAR2"]}) == (
        200, {"name": "fleet-a", "added": 2})  # fmt: skip
    assert http_json(f"{api}/groups/fleet-a", token=dashboard)[1]["vehicles"] == ["CAR1", "CAR2"]
    assert http_json(f"{api}/groups/bad%20name", "POST", ci, {"vehicles": ["CAR1"]})[0] == 400
    assert http_json(f"{api}/groups/fleet-a", "POST", ci, {"vehicles": "CAR1"})[0] == 400
    start = {
        "product": "v3.3-5",
        "tag": "main",
        "build": B,
        "groups": ["fleet-a"],
        "steps": "99,100",
        "windows": ["Mon-Sun 00:00-24:00"],
        "timezone": "Europe/Berlin",
        "rate": "10/h",
        "rate_growth": 1.5,
    }
    for field, value in (("windows", ["Mon 25:00-26:00"]), ("timezone", "Nowhere/City"), ("rate", "fast"),
                         ("rate_growth", "x"), ("groups", "fleet-a")):  # fmt: skip
        status, body = http_json(f"{api}/rollouts", "POST", ci, start | {field: value})
        assert status == 400 and body["error"], (field, body)
    status, body = http_json(f"{api}/rollouts", "POST", ci, start)
    assert status == 201, body
    assert (
        body["target"] == "group fleet-a"
        and body["pacing"] == "Mon-Sun 00:00-24:00 (Europe/Berlin); 10/h, x1.5 per period"
    )
    advance(driven, 60)
    assert offers(driven, ["CAR1", "CAR2", "CAR3"]) == {"CAR1": B, "CAR2": B, "CAR3": A}
    modules = http_json(f"{api}/fleet", token=dashboard)[1]
    assert {m["vehicle_id"]: m["why"].split(",")[0] for m in modules}["CAR3"].startswith("channel (not in")
    assert http_json(f"{api}/pins/CAR3", "PUT", ci, {"build": B})[0] == 200
    assert ver(driven, agent("CAR3")) == B
    assert [p["vehicle_id"] for p in http_json(f"{api}/pins", token=dashboard)[1]] == ["CAR3"]
    assert http_json(f"{api}/pins/CAR3", "DELETE", ci)[0] == 200 and ver(driven, agent("CAR3")) == A
    assert http_json(f"{api}/waypoints/v3.3-5", "POST", ci, {"build": "9.9.9"})[0] == 404


def test_the_simulator_checks_at_auto_hour_in_its_time_zone(site: Setup, driven: OvotaServer) -> None:
    site.run("fleet", "simulate", "--server", driven.base, "--modules", "20", "--days", "1", "--auto-hour", "2",
             "--timezone", "America/New_York")  # fmt: skip
    modules = fleet(site)
    assert len(modules) == 20
    zone = ZoneInfo("America/New_York")
    assert {datetime.fromtimestamp(m["last_seen"], zone).hour for m in modules.values()} == {2}
    bad = site.ovota("fleet", "simulate", "--server", driven.base, "--auto-hour", "25")
    assert bad.code == 2 and "invalid auto.hour '25'" in bad.err

"""Power loss during a delta update and during a resumed download: a cut at every flash operation, plain and
torn, boots the old or the new image, never none, and /store keeps its config."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovota.device.module import create_module
from tests.conftest import CliRunner, ovota_runner
from tests.module_helpers import run_commands
from tests.real_builds import real_shaped_build
from tests.servers import CuttingProxy, OvotaServer
from tests.test_power_loss import cut_everywhere

OLD, NEW = b"3.3.005-922-g1a3378f1b", b"3.3.006-12-gabcdef"


def delta_server(work: Path, new_rodata: int) -> OvotaServer:
    """A server with OLD and NEW published (same filler; NEW has ``new_rodata`` bytes of it), NEW's patch made."""
    ovota: CliRunner = ovota_runner()
    for version, rodata in ((OLD, 20_000), (NEW, new_rodata)):
        (work / "x.bin").write_bytes(real_shaped_build(version, rodata=rodata, seed=b"tree"))
        assert ovota("release", "publish", work / "x.bin", "--repo", work / "repo", "--tag", "main",
                     "--product", "v3.3-5").code == 0  # fmt: skip
    srv = OvotaServer(work / "repo", deltas=True)
    wait_for_delta(srv)
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvotaServer]:
    srv = delta_server(tmp_path_factory.mktemp("repo"), 20_000)
    yield srv
    srv.stop()


def wait_for_delta(srv: OvotaServer) -> None:
    deadline = time.monotonic() + 60
    while True:
        request = urllib.request.Request(f"{srv.url}/firmware/ota/v3.3-5/main/", headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            if json.loads(response.read())[0].get("deltas"):
                return
        assert time.monotonic() < deadline, "no delta patch was made"
        time.sleep(0.2)


def pristine(tmp_path: Path, base: str, *settings: str) -> Path:
    flash = tmp_path / "pristine.img"
    create_module(flash, "v3-35", real_shaped_build(OLD, rodata=20_000, seed=b"tree"))
    run_commands(
        flash, f"config set ota server {base}", "config set ota tag main", "config set vehicle id DEMO", *settings
    )
    return flash


def check_then_cut(flash: Path, commands: list[str], expected: list[str]) -> None:
    """Run ``commands`` once on a copy to see the flow under test happen, then cut power at every operation."""
    work = flash.with_name("check.img")
    work.write_bytes(flash.read_bytes())
    run = run_commands(work, *commands)
    assert all(text in run.output for text in expected), run.output
    covered = cut_everywhere(flash, [*commands, "module reset"], {OLD.decode(), NEW.decode()}, {"main"}, NEW.decode())
    assert covered > 20


def test_delta_update(tmp_path: Path, server: OvotaServer) -> None:
    flash = pristine(tmp_path, server.base, "config set ota delta yes")
    check_then_cut(flash, ["ota flash http"], ["Delta applied:"])


def test_resumed_download(tmp_path: Path, server: OvotaServer) -> None:
    proxy = CuttingProxy(server.port, 12_000, cuts=1_000_000, fresh_only=True)  # first attempts break at 12 kB
    try:
        flash = pristine(tmp_path, proxy.base, "config set ota resume yes")
        check_then_cut(flash, ["ota flash http", "ota flash http"], ["bytes kept", "Resuming download at 8192 of"])
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def larger_delta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvotaServer]:
    """A server whose patch is several sectors long: the new build adds 8 kB of data to the old one."""
    srv = delta_server(tmp_path_factory.mktemp("repo-larger"), 36_000)
    yield srv
    srv.stop()


def test_resumed_delta_download(tmp_path: Path, larger_delta: OvotaServer) -> None:
    proxy = CuttingProxy(larger_delta.port, 6_000, cuts=1_000_000, fresh_only=True)  # delta downloads break at 6 kB
    try:
        flash = pristine(tmp_path, proxy.base, "config set ota delta yes", "config set ota resume yes")
        check_then_cut(
            flash, ["ota flash http", "ota flash http"], ["Resuming delta download at 4096 of", "Delta applied:"]
        )
    finally:
        proxy.stop()

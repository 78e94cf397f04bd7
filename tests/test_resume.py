"""Resumable downloads: a download cut mid-way continues from the last verified sector with Range/If-Range."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovota.device.module import create_module
from tests.conftest import CliRunner
from tests.module_helpers import run_commands
from tests.real_builds import real_shaped_build
from tests.servers import CuttingProxy, OvotaServer

A, B, C = b"3.3.006", b"3.3.007", b"3.3.008"
CUT = 300_000


@pytest.fixture
def served(tmp_path: Path, ovota: CliRunner) -> Iterator[tuple[OvotaServer, CuttingProxy, dict[bytes, bytes]]]:
    images = {v: real_shaped_build(v, rodata=1_000_000) for v in (A, B, C)}
    (tmp_path / "b.bin").write_bytes(images[B])
    assert ovota("release", "publish", tmp_path / "b.bin", "--repo", tmp_path / "repo", "--tag", "main").code == 0
    server = OvotaServer(tmp_path / "repo", extra=("--delta-bases", "0"))
    proxy = CuttingProxy(server.port, CUT)
    yield server, proxy, images
    proxy.stop()
    server.stop()


def module(tmp_path: Path, image: bytes, proxy: CuttingProxy, resume: bool) -> Path:
    flash = tmp_path / "module.img"
    create_module(flash, "v3-35", image)
    run_commands(flash, f"config set ota server {proxy.base}", f"config set ota resume {'yes' if resume else 'no'}")
    return flash


def test_cut_download_resumes_with_range(
    tmp_path: Path, served: tuple[OvotaServer, CuttingProxy, dict[bytes, bytes]], ovota: CliRunner
) -> None:
    _, proxy, images = served
    flash = module(tmp_path, images[A], proxy, resume=True)
    first = run_commands(flash, "ota flash http")
    kept = re.search(r"OTA Flash HTTP: (\d+) bytes kept", first.output)
    assert kept and "Download complete (at " in first.output, first.output  # the proxy closed: OVMS sees EOF
    done = int(kept.group(1))
    assert done % 4096 == 0 and CUT - 70_000 < done <= CUT
    run = ovota("module", "run", flash, "--", "ota flash http", "module reset", "ota status nocheck")
    assert run.code == 0, run.out
    assert f"Resuming download at {done} of {len(images[B])} bytes\n" in run.out
    resumed = proxy.requests[-1].decode()
    assert f"\r\nRange: bytes={done}-\r\n" in resumed and '\r\nIf-Range: "' in resumed
    assert "Running partition: ota_1" in run.out and f"OTA_1 image:       {B.decode()}" in run.out
    assert ovota("module", "dump", flash, "--partition", "ota_1", tmp_path / "slot.bin").code == 0
    assert (tmp_path / "slot.bin").read_bytes() == images[B]
    assert "resume.progress" not in ovota("module", "run", flash, "--", "config list ota").out


def test_changed_file_starts_from_zero(
    tmp_path: Path, served: tuple[OvotaServer, CuttingProxy, dict[bytes, bytes]], ovota: CliRunner
) -> None:
    server, proxy, images = served
    flash = module(tmp_path, images[A], proxy, resume=True)
    assert "bytes kept" in run_commands(flash, "ota flash http").output
    (tmp_path / "c.bin").write_bytes(images[C])
    assert ovota("release", "publish", tmp_path / "c.bin", "--repo", server.repo, "--tag", "main").code == 0
    run = run_commands(flash, "ota flash http", "module reset", "ota status nocheck")
    assert "The file on the server changed, or it cannot resume: downloading from the start" in run.output
    assert f"Expected file size is {len(images[C])}" in run.output and "Resuming" not in run.output
    assert f"OTA_1 image:       {C.decode()}" in run.output


def test_without_resume_the_second_attempt_starts_over(
    tmp_path: Path, served: tuple[OvotaServer, CuttingProxy, dict[bytes, bytes]]
) -> None:
    _, proxy, images = served
    flash = module(tmp_path, images[A], proxy, resume=False)
    assert "does not match expected" in run_commands(flash, "ota flash http").output
    run = run_commands(flash, "ota flash http")
    assert "OTA flash was successful" in run.output and "Resuming" not in run.output
    assert b"Range:" not in proxy.requests[-1]

"""Delta updates end to end: the server makes patches in the background and negotiates them (RFC 3229);
a module with ``ota delta yes`` updates by delta, and falls back once to the whole image when it must."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovota.device.module import create_module
from tests.conftest import CliRunner
from tests.module_helpers import run_commands
from tests.real_builds import real_shaped_build
from tests.servers import CuttingProxy, OvotaServer

SEED = b"ovms3-tree"
A, B, C = b"3.3.006", b"3.3.006-12-g0123abc", b"3.3.007"


@pytest.fixture
def server(tmp_path: Path, ovota: CliRunner) -> Iterator[tuple[OvotaServer, dict[bytes, bytes]]]:
    images = {v: real_shaped_build(v, rodata=400_000, seed=SEED) for v in (A, B)}
    repo = tmp_path / "repo"
    for version in (A, B):
        (tmp_path / "x.bin").write_bytes(images[version])
        assert ovota("release", "publish", tmp_path / "x.bin", "--repo", repo, "--tag", "main").code == 0
    srv = OvotaServer(repo, deltas=True)
    deadline = time.monotonic() + 60
    while not listing(srv)[0].get("deltas"):  # the background worker makes A -> B
        assert time.monotonic() < deadline, "no delta patch was made"
        time.sleep(0.2)
    yield srv, images
    srv.stop()


def listing(srv: OvotaServer) -> list[dict[str, object]]:
    request = urllib.request.Request(f"{srv.url}/firmware/ota/v3.3-5/main/", headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read()))


def get(srv: OvotaServer, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{srv.url}/firmware/ota/v3.3-5/main/ovms3.bin", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def test_negotiation(server: tuple[OvotaServer, dict[bytes, bytes]]) -> None:
    srv, images = server
    base = images[A][-32:].hex()
    delta = listing(srv)[0]["deltas"][0]  # type: ignore[index]
    assert delta["base_hash"] == base and delta["size"] < len(images[B]) // 20
    status, headers, body = get(srv, {"A-IM": "esp-delta-ota", "If-None-Match": f'"{base}"'})
    assert status == 226 and headers["IM"] == "esp-delta-ota"
    assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"' == f'"{delta["sha256"]}"'
    assert len(body) == delta["size"] and body[:4] == (0xFCCDDE10).to_bytes(4, "little")
    status, headers, part = get(srv, {"A-IM": "esp-delta-ota", "If-None-Match": f'"{base}"', "Range": "bytes=10-19"})
    assert status == 206 and part == body[10:20] and headers["IM"] == "esp-delta-ota"
    # OVMS's plain request, another base, or no A-IM: the whole image, as ever.
    for headers_sent in ({}, {"A-IM": "esp-delta-ota", "If-None-Match": '"' + "0" * 64 + '"'},
                         {"If-None-Match": f'"{base}"'}):  # fmt: skip
        status, headers, body = get(srv, headers_sent)
        assert status == 200 and body == images[B] and "IM" not in headers


def module_on(tmp_path: Path, image: bytes, srv: OvotaServer) -> Path:
    flash = tmp_path / "module.img"
    create_module(flash, "v3-35", image)
    run_commands(flash, f"config set ota server {srv.base}", "config set ota delta yes")
    return flash


def test_module_updates_by_delta(
    tmp_path: Path, server: tuple[OvotaServer, dict[bytes, bytes]], ovota: CliRunner
) -> None:
    srv, images = server
    flash = module_on(tmp_path, images[A], srv)
    run = ovota("module", "run", flash, "--", "ota flash http", "module reset", "ota status nocheck")
    assert run.code == 0, run.out
    size = listing(srv)[0]["deltas"][0]["size"]  # type: ignore[index]
    assert f"Download delta from {srv.base}/v3.3-5/main/ovms3.bin (base {images[A][-32:].hex()[:16]})" in run.out
    assert f"Expected delta size is {size}\n" in run.out
    assert f"Delta applied: {len(images[B])} bytes written to ota_1\n" in run.out
    assert "Running partition: ota_1" in run.out and f"OTA_1 image:       {B.decode()}" in run.out
    assert ovota("module", "dump", flash, "--partition", "ota_1", tmp_path / "slot.bin").code == 0
    assert (tmp_path / "slot.bin").read_bytes() == images[B]


def test_no_patch_for_this_base_gets_the_whole_image(
    tmp_path: Path, server: tuple[OvotaServer, dict[bytes, bytes]]
) -> None:
    srv, images = server
    other = real_shaped_build(C, rodata=400_000, seed=b"another tree")
    flash = module_on(tmp_path, other, srv)
    run = run_commands(flash, "ota flash http")
    assert "no delta for this base, the server sent the whole image" in run.output
    assert f"Expected file size is {len(images[B])}" in run.output and "OTA flash was successful" in run.output


def test_bad_patch_falls_back_once_to_the_whole_image(
    tmp_path: Path, server: tuple[OvotaServer, dict[bytes, bytes]]
) -> None:
    srv, images = server
    delta = listing(srv)[0]["deltas"][0]  # type: ignore[index]
    assert isinstance(srv.repo, Path)
    blob = srv.repo / "blobs" / str(delta["sha256"])[:2] / str(delta["sha256"])
    # The server checks a blob when it first opens it and never serves a damaged one: let it open the patch
    # (a delta request), then damage it in place, as a bad disk or a bad link could once it was checked.
    base = str(delta["base_hash"])
    request = urllib.request.Request(
        f"{srv.url}/firmware/ota/v3.3-5/main/ovms3.bin", headers={"A-IM": "esp-delta-ota", "If-None-Match": f'"{base}"'}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 226
    data = bytearray(blob.read_bytes())
    data[200] ^= 0x55  # corrupt the patch body in place (the server keeps the file open)
    blob.write_bytes(bytes(data))
    flash = module_on(tmp_path, images[A], srv)
    running_before = flash.read_bytes()[0x10000 : 0x10000 + len(images[A])]
    run = run_commands(flash, "ota flash http", "module reset", "ota status nocheck")
    assert "delta not applied" in run.output
    assert "Delta update failed: downloading the whole image" in run.output
    assert f"Expected file size is {len(images[B])}" in run.output and "OTA flash was successful" in run.output
    assert "Running partition: ota_1" in run.output
    assert flash.read_bytes()[0x10000 : 0x10000 + len(images[A])] == running_before  # never the running slot


def test_delta_is_off_by_default(tmp_path: Path, server: tuple[OvotaServer, dict[bytes, bytes]]) -> None:
    srv, images = server
    flash = tmp_path / "module.img"
    create_module(flash, "v3-35", images[A])
    run = run_commands(flash, f"config set ota server {srv.base}", "ota flash http")
    assert "delta" not in run.output.lower() and f"Expected file size is {len(images[B])}" in run.output


def test_automatic_update_uses_the_delta(tmp_path: Path, server: tuple[OvotaServer, dict[bytes, bytes]]) -> None:
    srv, images = server
    flash = module_on(tmp_path, images[A], srv)
    run = run_commands(flash, "time advance 24h", "ota status nocheck")
    assert f"AutoFlash: Download delta (base {images[A][-32:].hex()[:16]})" in run.output
    assert f"Delta applied: {len(images[B])} bytes written to ota_1" in run.output
    assert "Running partition: ota_1" in run.output and f"OTA_1 image:       {B.decode()}" in run.output


def test_broken_delta_download_resumes(tmp_path: Path, server: tuple[OvotaServer, dict[bytes, bytes]]) -> None:
    srv, images = server
    size = int(listing(srv)[0]["deltas"][0]["size"])  # type: ignore[index]
    assert size > 6000
    proxy = CuttingProxy(srv.port, 6000)  # the first delta download breaks after 6,000 bytes
    try:
        flash = tmp_path / "module.img"
        create_module(flash, "v3-35", images[A])
        run_commands(
            flash, f"config set ota server {proxy.base}", "config set ota delta yes", "config set ota resume yes"
        )
        first = run_commands(flash, "ota flash http")
        assert "Error: Delta download failed - 'ota flash http' again continues it" in first.output
        assert "4096 bytes kept for the next attempt" in first.output
        second = run_commands(flash, "ota flash http", "module reset", "ota status nocheck")
        assert f"Resuming delta download at 4096 of {size} bytes" in second.output, second.output
        assert b"\r\nRange: bytes=4096-\r\n" in proxy.requests[-1] and b"A-IM: esp-delta-ota" in proxy.requests[-1]
        assert f"OTA_1 image:       {B.decode()}" in second.output and "Running partition: ota_1" in second.output
    finally:
        proxy.stop()

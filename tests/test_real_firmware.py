"""Real firmware and real tools: builds shaped like OVMS's, flash files from esptool merge-bin, slot dumps."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovota.formats.app_image import AppDescriptor
from ovota.formats.image_builder import assemble_image
from ovota.formats.version_marker import marker
from ovota.server.store.repository import Repository
from tests.conftest import CliRunner
from tests.module_helpers import run_commands
from tests.real_builds import real_shaped_build
from tests.servers import OvotaServer, RawServer
from tests.test_app_image import esptool_info, esptool_verdicts

OLD = b"3.3.003-551-g8ef86968-dirty"
NEW = b"3.3.006-12-g0123abcd"


def merge_bin(tmp_path: Path, table: Path, app: bytes, name: str = "flash.img") -> Path:
    """A 16 MB flash file as esptool writes it: bootloader at 0x1000, table at 0x8000, app at 0x10000."""
    (tmp_path / "app.bin").write_bytes(app)
    boot = tmp_path / "bootloader.bin"
    boot.write_bytes(real_shaped_build(b"bootloader", rodata=2048))
    out = tmp_path / name
    command = [sys.executable, "-m", "esptool", "--chip", "esp32", "merge-bin", "--pad-to-size", "16MB"]
    parts = ["0x1000", str(boot), "0x8000", str(table), "0x10000", str(tmp_path / "app.bin")]
    proc = subprocess.run(
        [*command, "-o", str(out), *parts],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.stat().st_size == 16 * 1024 * 1024
    return out


def repo_state(repo: Path) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    r = Repository(repo)
    try:
        channels = [(c.product, c.tag, c.build.sha256, c.build.version) for c in r.channels()]
    finally:
        r.close()
    return channels, sorted(p.name for p in (repo / "blobs").rglob("*") if p.is_file())


@pytest.fixture
def old_build(tmp_path: Path) -> Path:
    path = tmp_path / "old.bin"
    path.write_bytes(real_shaped_build(OLD))
    return path


# -- image info and publishing ------------------------------------------------------------------------------


def test_image_info_reads_a_real_shaped_build_like_ovms_and_esptool(old_build: Path, ovota: CliRunner) -> None:
    run = ovota("image", "info", old_build)
    assert run.code == 0, run.err
    assert "OVMS version: 3.3.003-551-g8ef86968-dirty\n" in run.out
    assert "Checksum: " in run.out and "(valid)" in run.out
    code, output = esptool_info(old_build)
    assert code == 0 and esptool_verdicts(output) == ("valid", "valid")


def test_publish_of_a_real_shaped_build_serves_its_version(tmp_path: Path, old_build: Path, ovota: CliRunner) -> None:
    repo = tmp_path / "repo"
    run = ovota("release", "publish", old_build, "--repo", repo, "--tag", "main")
    assert run.code == 0, run.err
    assert run.out.startswith("Published 3.3.003-551-g8ef86968-dirty to v3.3/main ")
    assert repo_state(repo)[0][0][3] == OLD.decode()


@pytest.mark.parametrize(
    ("version", "descriptor", "message"),
    [
        (b"3.3.003\x01-dirty", None, 'version "3.3.003\\x01-dirty" has byte 0x01 at offset 7'),
        (b"3.3.006\xff", None, 'version "3.3.006\\xff" has byte 0xff at offset 7'),
        (b"3.3.006 beta", None, 'version "3.3.006 beta" has a space at offset 7'),
        (b"", "3.3.006\tx", 'version "3.3.006\\x09x" has byte 0x09 at offset 7'),  # empty marker: the descriptor's
    ],
)
def test_publish_refuses_versions_with_odd_bytes(
    tmp_path: Path, ovota: CliRunner, version: bytes, descriptor: str | None, message: str
) -> None:
    repo = tmp_path / "repo"
    good = tmp_path / "good.bin"
    good.write_bytes(real_shaped_build(NEW))
    assert ovota("release", "publish", good, "--repo", repo, "--tag", "edge").code == 0
    before = repo_state(repo)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(real_shaped_build(version, descriptor_version=descriptor))
    run = ovota("release", "publish", bad, "--repo", repo, "--tag", "edge")
    assert run.code == 2, run.out
    assert run.err.count("\n") == 1 and run.err.startswith("Error: firmware image has an unusable version: ")
    assert message in run.err
    assert repo_state(repo) == before


def test_api_publish_refuses_odd_versions(tmp_path: Path, ovota: CliRunner) -> None:
    repo = tmp_path / "repo"
    good = tmp_path / "good.bin"
    good.write_bytes(real_shaped_build(NEW))
    assert ovota("release", "publish", good, "--repo", repo, "--tag", "edge").code == 0
    token = ovota("token", "create", "--repo", repo, "--name", "ci").out.strip()
    before = repo_state(repo)
    server = OvotaServer(repo)
    try:
        request = urllib.request.Request(
            f"{server.url}/api/v1/publish?tag=edge",
            method="POST",
            headers={"Authorization": f"Bearer {token}"},
            data=real_shaped_build(b"3.3.007\x1b[1m"),
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 400
        assert "has byte 0x1b at offset 7" in json.loads(err.value.read())["error"]
        with urllib.request.urlopen(f"{server.url}/firmware/ota/v3.3-5/edge/ovms3.ver", timeout=30) as resp:
            assert resp.read() == NEW + b"\n"
    finally:
        server.stop()
    assert repo_state(repo) == before


# -- the emulator with odd bytes on its flash -----------------------------------------------------------------


def test_module_shows_odd_versions_escaped_and_sends_a_clean_user_agent(tmp_path: Path, vectors: Path) -> None:
    odd = b"3.3.003\x07\x1b[2J\xc3\xa9"
    flash = merge_bin(tmp_path, vectors / "partition_tables" / "ovms_v3-30_factory_ota.bin", real_shaped_build(odd))
    served = real_shaped_build(NEW)
    response = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(served) + served
    server = RawServer(response)
    try:
        run = run_commands(flash, "ota status nocheck", f"ota flash http 127.0.0.1:{server.port}/ovms3.bin")
    finally:
        server.stop()
    escaped = "3.3.003\\x07\\x1b[2J\\xc3\\xa9"
    assert f"Firmware:          {escaped}/factory/main (build idf " in run.output
    assert f"Factory image:     {escaped}\n" in run.output
    assert "OTA flash was successful" in run.output, run.output
    assert len(server.requests) == 1
    head = server.requests[0]
    agent = next(line for line in head.split(b"\r\n") if line.startswith(b"User-Agent: "))
    assert all(0x20 <= b < 0x7F for b in agent), agent
    assert f"ovms/v3.3 ( {escaped}/factory/main (build idf ".encode() in agent


# -- flash files made by esptool merge-bin --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "first", "product"),
    [("ovms_v3-30_factory_ota.bin", "factory", "v3.3"), ("ovms_v3-35_ota_only.bin", "ota_0", "v3.3-5")],
)
def test_merge_bin_flash_boots(
    tmp_path: Path, vectors: Path, ovota: CliRunner, table: str, first: str, product: str
) -> None:
    flash = merge_bin(tmp_path, vectors / "partition_tables" / table, real_shaped_build(NEW))
    store = (0xC10000, 0x100000) if first == "factory" else (0xE10000, 0x1F0000)
    assert flash.read_bytes()[store[0] : store[0] + store[1]] == b"\xff" * store[1]  # a blank /store
    run = ovota("module", "run", flash, "--", "ota status nocheck", "config list vehicle")
    assert run.code == 0, run.out + run.err
    assert f"Firmware:          {NEW.decode()}/{first}/main (build idf v3.3.4-854-g9063c8662c May 13 2026" in run.out
    assert f"product {product})" in run.out
    assert f"Running partition: {first}\nBoot partition:    {first}\n" in run.out
    assert run.out.endswith("OVMS# config list vehicle\nvehicle (readable writeable)\n")  # an empty config
    run = ovota("module", "run", flash, "--", "config set ota tag edge", "module reset", "ota status nocheck")
    assert run.code == 0, run.out + run.err
    assert f"Firmware:          {NEW.decode()}/{first}/edge (build" in run.out


# -- the whole story: a real-shaped build on an esptool flash updates from ovota server ---------------------------


@pytest.fixture
def published(tmp_path: Path, ovota: CliRunner) -> Iterator[tuple[OvotaServer, bytes]]:
    new = tmp_path / "new.bin"
    new.write_bytes(real_shaped_build(NEW, rodata=600_000))
    repo = tmp_path / "repo"
    assert ovota("release", "publish", new, "--repo", repo, "--tag", "main", "--product", "v3.3").code == 0
    server = OvotaServer(repo)
    try:
        yield server, new.read_bytes()
    finally:
        server.stop()


def test_real_shaped_module_updates_from_ovota_server_and_dump_matches(
    tmp_path: Path, vectors: Path, ovota: CliRunner, old_build: Path, published: tuple[OvotaServer, bytes]
) -> None:
    server, new_image = published
    flash = merge_bin(tmp_path, vectors / "partition_tables" / "ovms_v3-30_factory_ota.bin", old_build.read_bytes())
    run = ovota(
        "module", "run", flash, "--", f"config set ota server {server.base}", "ota status", "ota flash http",
        "module reset", "ota status nocheck",
    )  # fmt: skip
    assert run.code == 0, run.out + run.err
    assert "Factory image:     3.3.003-551-g8ef86968-dirty\n" in run.out
    assert f"Server Available:  {NEW.decode()} (is newer)" in run.out
    assert f"Running partition: ota_0\nBoot partition:    ota_0\nFactory image:     {OLD.decode()}\n" in run.out
    assert f"OTA_O image:       {NEW.decode()}\n" in run.out
    with urllib.request.urlopen(f"{server.url}/firmware/ota/v3.3/main/ovms3.bin", timeout=30) as resp:
        served = resp.read()
    assert served == new_image
    dumped = tmp_path / "ota_0.bin"
    run = ovota("module", "dump", flash, "--partition", "ota_0", dumped)
    assert run.code == 0, run.err
    assert run.out.startswith(f"Wrote {dumped}: ota_0 at 0x410000, app image of {len(served)} bytes, sha256 ")
    assert dumped.read_bytes() == served
    code, output = esptool_info(dumped)
    assert code == 0 and esptool_verdicts(output) == ("valid", "valid")
    factory = tmp_path / "factory.bin"
    assert ovota("module", "dump", flash, "--partition", "factory", factory).code == 0
    assert factory.read_bytes() == old_build.read_bytes()


def test_dump_of_other_partitions_and_bad_names(tmp_path: Path, vectors: Path, ovota: CliRunner) -> None:
    flash = merge_bin(tmp_path, vectors / "partition_tables" / "ovms_v3-35_ota_only.bin", real_shaped_build(NEW))
    raw = flash.read_bytes()
    before = raw
    out = tmp_path / "ota_1.bin"
    run = ovota("module", "dump", flash, "--partition", "ota_1", out)
    assert run.code == 0, run.err
    assert "whole partition, 7340032 bytes (no valid image: not an ESP32 image: first byte 0xff" in run.out
    assert out.read_bytes() == raw[0x710000 : 0x710000 + 0x700000]
    store = tmp_path / "store.bin"
    assert ovota("module", "dump", flash, "--partition", "store", store).code == 0
    assert store.read_bytes() == raw[0xE10000 : 0xE10000 + 0x1F0000]
    run = ovota("module", "dump", flash, "--partition", "ota_2", tmp_path / "x.bin")
    assert (run.code, run.err) == (
        2,
        "Error: no partition 'ota_2' in the table (it has nvs, otadata, phy_init, ota_0, ota_1, store)\n",
    )
    assert not (tmp_path / "x.bin").exists()
    assert flash.read_bytes() == before  # dumping never powers the module on


def test_odd_descriptor_bytes_are_shown_escaped(tmp_path: Path, vectors: Path) -> None:
    descriptor = bytearray(AppDescriptor("x", "ovms3", "20:13:48", "May 13 2026", "v3.3.4").to_bytes())
    idf_at = 4 + 4 + 8 + 32 + 32 + 16 + 16  # magic, secure_version, reserved, version, project, time, date
    descriptor[idf_at : idf_at + 8] = b"v3\x1b]\xff\xfe\x07\0"
    drom = bytes(descriptor) + marker(NEW)
    app = assemble_image([(0x3F400020, drom + b"\0" * (-len(drom) % 4)), (0x40080000, b"\0" * 64)])
    flash = merge_bin(tmp_path, vectors / "partition_tables" / "ovms_v3-35_ota_only.bin", app)
    run = run_commands(flash, "ota status nocheck", "ota partitions list")
    assert "Firmware:          3.3.006-12-g0123abcd/ota_0/main (build idf v3\\x1b]\\xef\\xbf\\xbd" in run.output
    assert all(c == "\n" or " " <= c <= "~" for c in run.output), run.output

"""``https://`` URLs, as OVMS 3.3.006 fetches them: the scheme is stripped and the download is plain HTTP, to the
URL's port (80 when it has none). OTA never uses TLS on OVMS; signed firmware and the server's checks protect it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.module_helpers import image, new_module
from tests.servers import OvotaServer, StaticServer

OLD = "3.3.005"
NEW = "3.3.006"
SIZE = 8192


@pytest.fixture
def static(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "www"
    (root / "fw").mkdir(parents=True)
    (root / "fw" / "ovms3.bin").write_bytes(image(NEW, SIZE))
    server = StaticServer(root)
    yield server
    server.stop()


def test_an_https_url_is_fetched_over_plain_http(tmp_path: Path, static: StaticServer, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img", version=OLD)
    url = f"https://127.0.0.1:{static.port}/fw/ovms3.bin"
    run = ovota("module", "run", flash, "--", f"ota flash http {url}", "module reset", "ota status nocheck")
    assert run.code == 0, run.out + run.err
    assert "OTA flash was successful" in run.out
    assert f"  Flashed {SIZE} bytes from {url}" in run.out
    assert "Running partition: ota_1" in run.out


def test_an_https_server_setting_reaches_a_plain_ovota_server(tmp_path: Path, ovota: CliRunner) -> None:
    (tmp_path / "new.bin").write_bytes(image(NEW, SIZE))
    published = ovota("release", "publish", tmp_path / "new.bin", "--repo", tmp_path / "repo", "--tag", "main")
    assert published.code == 0, published.err
    server = OvotaServer(tmp_path / "repo")
    try:
        flash = new_module(tmp_path / "m.img", version=OLD)
        base = f"https://127.0.0.1:{server.port}/firmware/ota"
        run = ovota("module", "run", flash, "--", f"config set ota server {base}", "ota status", "ota flash http",
                    "module reset", "ota status nocheck")  # fmt: skip
        assert run.code == 0, run.out + run.err
        assert f"Server Available:  {NEW} (is newer)" in run.out
        assert f"Download firmware from {base}/v3.3-5/main/ovms3.bin to ota_1" in run.out
        assert "OTA flash was successful" in run.out
        assert f"Firmware:          {NEW}/ota_1/main" in run.out
    finally:
        server.stop()

"""The daily automatic update, driven by fast-forwarding the emulated clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.module_helpers import image, new_module, run_commands
from tests.servers import StaticServer

OLD = "3.3.005"
NEW = "3.3.006"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "www"
    root.mkdir()
    srv = StaticServer(root)
    srv.publish("v3.3-5", "main", image(NEW, 8192), f"{NEW}\nRelease notes\n")
    yield srv
    srv.stop()


def test_daily_check_installs_a_newer_build_on_wifi(tmp_path: Path, server: StaticServer, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img", version=OLD)
    run_commands(flash, f"config set ota server {server.base}")
    run = ovota("module", "run", flash, "--", "time advance 24h", "ota status nocheck")
    assert run.code == 0, run.out
    assert f"I (ota) AutoFlash: Update ota_1 to {NEW} ({server.base}/v3.3-5/main/ovms3.bin)" in run.out
    assert f"Notification info/ota.update: OTA firmware {NEW} has been updated (OVMS will restart)" in run.out
    assert "Running partition: ota_1" in run.out
    assert f"Firmware:          {NEW}/ota_1/main" in run.out
    # The next day's check finds the running build current.
    again = ovota("module", "run", flash, "--", "time advance 24h")
    assert f"AutoFlash: No new firmware available ({NEW} is current)" in again.out


def test_modem_only_needs_allow_modem(tmp_path: Path, server: StaticServer, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img", version=OLD)
    run_commands(flash, f"config set ota server {server.base}")
    run = ovota("module", "run", flash, "--", "network wifi off", "network modem on", "time advance 24h")
    assert "I (ota) AutoFlash: Cannot flash without wifi connection, or auto.allow.modem" in run.out
    assert f"Notification info/ota.update: New firmware {NEW} is available. Connect to WIFI to update" in run.out
    assert run_commands(flash, "ota status nocheck").output.count(f"OTA_1 image:       {NEW}") == 0
    allowed = ovota(
        "module", "run", flash, "--",
        "network wifi off", "network modem on", "config set ota auto.allow.modem yes", "time advance 24h",
    )  # fmt: skip
    assert "Notification info/ota.update: OTA firmware 3.3.006 has been updated (OVMS will restart)" in allowed.out


def test_auto_disabled_and_force(tmp_path: Path, server: StaticServer, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img", version=NEW)
    run_commands(flash, f"config set ota server {server.base}", "config set auto ota no")
    quiet = ovota("module", "run", flash, "--", "time advance 48h")
    assert "AutoFlash" not in quiet.out
    forced = ovota("module", "run", flash, "--", "ota flash auto force", "ota status nocheck")
    assert "Triggering automatic firmware update..." in forced.out
    assert "Running partition: ota_1" in forced.out
    plain = ovota("module", "run", flash, "--", "ota flash auto")
    assert f"AutoFlash: No new firmware available ({NEW} is current)" in plain.out

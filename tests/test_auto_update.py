"""The daily automatic update, driven by fast-forwarding the emulated clock."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ovota.device.console.shell import Shell
from ovota.device.console.writer import Writer
from ovota.device.flash import Flash
from ovota.device.module import Module
from tests.conftest import CliRunner
from tests.module_helpers import image, logged, new_module, run_commands
from tests.servers import GatedServer, StaticServer

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
    assert logged(run.out, f"AutoFlash: Update ota_1 to {NEW} ({server.base}/v3.3-5/main/ovms3.bin)"), run.out
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
    assert logged(run.out, "AutoFlash: Cannot flash without wifi connection, or auto.allow.modem", "W"), run.out
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
    # The AutoFlash task runs beside the console; `time advance` waits for it (and its reboot) first.
    forced = ovota("module", "run", flash, "--", "ota flash auto force", "time advance 1s", "ota status nocheck")
    assert forced.out.startswith("OVMS# ota flash auto force\nTriggering automatic firmware update...\n")
    assert forced.out.rsplit("OVMS# ota status nocheck\n", 1)[1].splitlines()[4] == "Running partition: ota_1"
    plain = ovota("module", "run", flash, "--", "ota flash auto")
    assert f"AutoFlash: No new firmware available ({NEW} is current)" in plain.out


@contextlib.contextmanager
def halfway_through_an_auto_flash(tmp_path: Path) -> Iterator[tuple[Shell, io.StringIO, GatedServer]]:
    """A module whose AutoFlash task has downloaded half of a newer image and waits for the rest (the server's
    gate): the console, what it printed so far, and the server."""
    files = {"/fw/v3.3-5/main/ovms3.ver": f"{NEW}\n".encode(), "/fw/v3.3-5/main/ovms3.bin": image(NEW, 40960)}
    server = GatedServer(files)
    stream = io.StringIO()
    device = Module(Flash(new_module(tmp_path / "m.img", version=OLD)))
    try:
        shell = Shell(device, Writer(stream))
        shell.execute(f"config set ota server 127.0.0.1:{server.port}/fw")
        shell.execute("ota flash auto")
        deadline = time.monotonic() + 20
        while shell.status.perc < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        yield shell, stream, server
    finally:
        device.close()
        server.stop()


def test_auto_flash_is_a_task_beside_the_console(tmp_path: Path) -> None:
    """`ota flash auto` returns at once; while its task downloads, `ota status` shows the Status line, a second
    start and a console flash are refused, and the module restarts by itself when the task has flashed."""
    with halfway_through_an_auto_flash(tmp_path) as (shell, stream, server):
        device = shell.module
        mark = len(stream.getvalue())
        for command in ("ota status nocheck", "ota flash auto", "ota flash http"):
            shell.execute(command)
        during = stream.getvalue()[mark:].splitlines()
        assert during[5:7] == [
            "Boot partition:    ota_0",
            "Status:            OTA Auto Flash: Downloading OTA image... (50%)",
        ]
        assert "Triggering automatic firmware update..." in during
        assert logged("\n".join(during), "AutoFlash: Task already running (cannot launch new)", "W")
        assert during[-1] == "Error: Flash operation already in progress - cannot flash again"
        server.gate.set()
        shell.settle()
        out = stream.getvalue()
        progress = [line for line in out.splitlines() if "Downloading OTA image... " in line and "ota: " in line]
        assert [line.split("ota: ", 1)[1] for line in progress] == [
            f"OTA Auto Flash: Downloading OTA image... {perc}%" for perc in range(10, 101, 10)
        ]
        assert logged(out, "AutoFlash OTA: Task is running")
        assert logged(out, "AutoFlash OTA: Task complete. Requesting restart...")
        assert device.running.name == "ota_1" and device.running_version == NEW
        shell.execute("ota status nocheck")
        assert "Status:" not in stream.getvalue().rsplit("Boot partition:", 1)[1]


def test_a_reboot_kills_the_task_and_the_partition_table_waits_for_it(tmp_path: Path) -> None:
    with halfway_through_an_auto_flash(tmp_path) as (shell, stream, server):
        device = shell.module
        mark = len(stream.getvalue())
        shell.execute("ota partitions list")
        assert (
            stream.getvalue()[mark:] == "Error: Flash operation already in progress - cannot access partition table\n"
        )
        shell.execute("module reset")  # the reset kills the task at its next flash write
        server.gate.set()
        assert not shell.task.running and not shell.flashing.locked()
        shell.execute("ota status nocheck")
        after = stream.getvalue().rsplit("OTA_O image:", 1)[0].splitlines()
        assert after[-2:] == ["Running partition: ota_0", "Boot partition:    ota_0"]  # no Status: line
        shell.settle()
        assert device.running.name == "ota_0" and device.boot_partition is not None
        assert device.boot_partition.name == "ota_0"  # the killed task set nothing


def test_ticks_missed_while_idle_run_at_the_time_they_fell_due(tmp_path: Path) -> None:
    """A module left alone past its update hour checks at that hour when it next looks, not at the later one."""
    flash = new_module(tmp_path / "m.img", version=OLD)
    stream = io.StringIO()
    device = Module(Flash(flash))
    try:
        shell = Shell(device, Writer(stream))
        in_an_hour = (device.clock.now + timedelta(hours=1)).hour
        shell.execute(f"config set ota auto.hour {in_an_hour}")
        shell.execute("config set ota server 127.0.0.1:1/none")
        device.clock.advance(timedelta(hours=3))  # the clock ran on; no command, no tick yet
        shell.idle()
        shell.settle()
        assert logged(stream.getvalue(), "AutoFlash: Server version could not be determined", "W"), stream.getvalue()
    finally:
        device.close()

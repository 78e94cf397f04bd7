"""The console as OVMS 3.3.006's OvmsCommand parses and answers it: prefixes, `?`, usage lines generated from the
command tree, echo and sleep, config's messages, protected paths, the boot-time m.version and local time.

Expected strings are the real source's (ovms_command.cpp, ovms_config.cpp, ovms_ota.cpp), at the real tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovota.device.console.line import SPLIT_ERROR, SplitError, split_line
from tests.conftest import CliRunner
from tests.module_helpers import new_module, run_commands

OTA_CHILDREN = ["boot", "copy", "erase", "flash", "partitions", "rollback", "status"]
TITLES = {
    "boot": "OTA boot",
    "copy": "OTA copy",
    "erase": "OTA erase",
    "flash": "OTA flash",
    "partitions": "OTA partitions",
    "rollback": "App rollback (emulator; off by default, as on OVMS)",
    "status": "Show OTA status",
}


def transcript(flash: Path, *commands: str) -> dict[str, list[str]]:
    """Each command's output lines, in-process."""
    out: dict[str, list[str]] = {}
    for command in commands:
        out[command] = run_commands(flash, command).output.splitlines()
    return out


@pytest.fixture(scope="module")
def flash(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return new_module(tmp_path_factory.mktemp("grammar") / "m.img", version="3.3.006")


def test_question_mark_lists_children_with_titles(flash: Path) -> None:
    out = transcript(flash, "ota ?", "ota flash", "ota flash ?", "ota flash auto ?", "ota status nocheck ?")
    assert out["ota ?"] == [f"Usage: ota [{'|'.join(OTA_CHILDREN)}]"] + [
        f"{name:<20} {TITLES[name]}" for name in OTA_CHILDREN
    ]
    assert out["ota flash"] == ["Subcommand required", "Usage: ota flash auto|http|vfs"]
    # A node without a handler and an empty template prints no usage line before its children.
    assert out["ota flash ?"] == [
        "auto                 Automatic regular OTA flash (over web)",
        "http                 OTA flash http",
        "vfs                  OTA flash vfs",
    ]
    assert out["ota flash auto ?"] == [
        "Usage: ota flash auto [force]",
        "force                …force update (even if server version older)",
    ]
    # One space after the name, then the (empty) template: OVMS's trailing space.
    assert out["ota status nocheck ?"] == ["Usage: ota status nocheck "]


def test_unique_prefixes_select_and_ambiguous_ones_do_not(flash: Path) -> None:
    out = transcript(flash, "ota st nocheck", "ota status nocheck", "config r", "con l ot", "o", "xyz")
    assert out["ota st nocheck"] == out["ota status nocheck"]
    assert out["ota st nocheck"][4] == "Running partition: ota_0"
    assert out["config r"] == ["Unrecognised command", "Usage: config backup|list|restore|rm|set"]
    assert out["con l ot"] == ["ot (readable writeable)"]  # the param as typed, as OVMS prints argv[0]
    assert out["o"][0] == "Hardware:          OVMS WIFI BLE BT cores=2 rev=ESP32/3"  # `o` = `ota` alone
    assert out["xyz"] == ["Unrecognised command"]  # no usage line at the root


def test_argument_counts_and_usage_lines(flash: Path) -> None:
    out = transcript(flash, "config set ota", "config rm ota", "ota flash vfs", "ota boot", "ota copy ota_0 ?")
    assert out["config set ota"] == ["Usage: config set <param> <instance> <value>"]
    assert out["config rm ota"] == ["Usage: config rm <param> {<instance> | *}"]
    assert out["ota flash vfs"] == ["Usage: ota flash vfs <file>"]
    assert out["ota boot"] == ["Subcommand required", "Usage: ota boot ota_0|ota_1"]
    assert out["ota copy ota_0 ?"] == ["ota_1                Copy ota_0 to ota_1 image"]


def test_exit_code_counts_failures_not_help(tmp_path: Path, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img")
    assert ovota("module", "run", flash, "--", "ota ?", "echo ?", "ota flash auto ?").code == 0
    assert ovota("module", "run", flash, "--", "ota flash").code == 1  # Subcommand required
    assert ovota("module", "run", flash, "--", "echo 'open").code == 1


def test_echo_and_sleep(flash: Path) -> None:
    out = transcript(flash, 'echo one "two words" three', "echo", "echo ?", "sleep 0.01", "sleep", "sleep ?")
    assert out['echo one "two words" three'] == ["one", "two words", "three"]
    assert out["echo"] == [""]
    assert out["echo ?"] == [
        "Usage: echo [<text>] […]",
        "Outputs up to 10 arguments as separate lines, just a newline if no text is given.",
    ]
    assert run_commands(flash, "echo " + " ".join(["x"] * 11)).output.splitlines()[0] == "Usage: echo [<text>] […]"
    assert out["sleep 0.01"] == []
    assert (
        out["sleep"]
        == out["sleep ?"]
        == [
            "Usage: sleep <seconds>",
            "Fractions of seconds are supported, e.g. 0.2 = 200 ms",
        ]
    )


def test_config_messages(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img")
    out = transcript(
        flash,
        "config set ota tag edge",
        "config list ota",
        "config rm ota tag",
        "config rm ota tag",
        "config set nosuch x y",
        "config set password module secret",
        "config list password",
    )
    assert out["config set ota tag edge"] == ["Parameter has been set."]
    assert out["config list ota"] == ["ota (readable writeable)", "  tag: edge"]
    # The first rm removes the instance; the second, of an instance no longer there, prints nothing.
    assert run_commands(flash, "config set ota tag x", "config rm ota tag").output.splitlines()[-1] == (
        "Instance tag has been removed."
    )
    assert out["config rm ota tag"] == []
    assert out["config set nosuch x y"] == ["Error: parameter not found"]
    assert out["config list password"] == ["password (protected writeable)", "  module"]
    listing = run_commands(flash, "config list").output.splitlines()
    assert f"{'ota':<20} OTA setup and status" in listing
    assert f"{'password':<20} Password store" in listing
    assert (
        run_commands(flash, "config set ota a 1", "config set ota b 2", "config rm ota *").output.splitlines()[-1]
        == "Parameter ota has been removed."
    )
    assert run_commands(flash, "config list ota").output.splitlines() == ["ota (readable writeable)"]
    unmounted = run_commands(flash, "store unmount", "config list", "store mount", "config list ota").output
    assert unmounted.splitlines() == ["Unmounted STORE", "Mounted STORE", "ota (readable writeable)"]


def test_protected_paths_and_factory_erase(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img")
    for path in ("/store/ovms_config/ota", "/sd/../store/./ovms_config/password", "store/ovms_config"):
        lines = run_commands(flash, f"ota flash vfs {path}").output.splitlines()
        assert lines == ["Current running partition is: ota_0", "Target partition is: ota_1", "Error: protected path"]
    old = new_module(tmp_path / "old.img", layout="v3-30", version="3.3.005")
    run_commands(old, "ota copy factory ota_0", "ota boot ota_0")  # run from ota_0: factory may be erased
    lines = run_commands(old, "ota erase factory", "ota status nocheck").output.splitlines()
    assert lines[:2] == ["OTA Erase: Erasing partition...", "Error: ESP32 error #258 starting OTA operation"]
    assert "Factory image:     3.3.005" in lines


def test_firmware_line_keeps_the_boot_time_tag(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img", version="3.3.006")
    out = run_commands(flash, "config set ota tag edge", "ota status nocheck", "module reset", "ota status nocheck")
    firmware = [line for line in out.output.splitlines() if line.startswith("Firmware:")]
    assert firmware[0].startswith("Firmware:          3.3.006/ota_0/main ")
    assert firmware[1].startswith("Firmware:          3.3.006/ota_0/edge ")


def test_daily_check_runs_at_the_local_hour(tmp_path: Path) -> None:
    """`ota auto.hour` is local time under `vehicle timezone`: 02:00 in UTC+10 is 16:00 UTC."""
    flash = new_module(tmp_path / "m.img", version="3.3.006")
    run_commands(flash, "config set ota server 127.0.0.1:1/none", "config set vehicle timezone AEST-10")
    lines = run_commands(flash, *["time advance 1h"] * 25).output.splitlines()
    fired = next(i for i, line in enumerate(lines) if "AutoFlash: Server version could not be determined" in line)
    clock = next(line for line in lines[fired:] if line.startswith("Time: "))
    # Time: 2026-12-03 16:40:00 UTC, local 2026-12-04 02:40:00 (AEST-10) — within the hour after the tick.
    utc_hour, local_hour = (int(hour) for hour in re.findall(r" (\d\d):\d\d:\d\d", clock))
    assert (local_hour, utc_hour) in ((2, 16), (3, 17)), clock
    assert sum("Server version could not be determined" in line for line in lines) >= 1
    bad_hour = run_commands(flash, "config set ota auto.hour abc", *["time advance 1h"] * 25).output.splitlines()
    fired = next(i for i, line in enumerate(bad_hour) if "Server version could not be determined" in line)
    clock = next(line for line in bad_hour[fired:] if line.startswith("Time: "))
    assert re.findall(r" (\d\d):\d\d:\d\d", clock)[1] in ("00", "01"), clock  # atoi("abc") is 0: midnight


@given(st.lists(st.text(alphabet="ab c'\"", max_size=8), max_size=6))
@settings(max_examples=300, deadline=None)
def test_split_words_round_trip(words: list[str]) -> None:
    """Words without spaces or quotes come back as typed; a quoted word keeps its spaces."""
    plain = [w.replace(" ", "").replace("'", "").replace('"', "") for w in words]
    plain = [w for w in plain if w]
    assert split_line("  ".join(plain)) == plain
    line = " ".join(f'"{w}"' if " " in w and '"' not in w else w for w in plain)
    assert split_line(line) == plain


def test_split_refuses_bad_quoting_and_too_many_words() -> None:
    for line in ("echo 'open", 'echo "a"b', " ".join(["x"] * 129), " ".join(["'q'"] * 11), "x" * 801):
        with pytest.raises(SplitError, match=SPLIT_ERROR):
            split_line(line)
    assert split_line("echo 'it''s' \"a b\"") == ["echo", "it''s", "a b"]


def test_vfs_commands_and_protected_paths(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img")
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "notes.txt").write_text("hello\n")
    (sd / "logs").mkdir()
    out = run_commands(
        flash,
        "vfs ls /sd",
        "vfs cat /sd/notes.txt",
        "vfs stat /sd/notes.txt",
        "vfs cp /sd/notes.txt /sd/copy.txt",
        "vfs rm /sd/copy.txt",
        "vfs rm /sd/copy.txt",
        "vfs cat /store/ovms_config/ota",
        "vfs cp /sd/notes.txt /store/../store/ovms_config/ota",
        "vfs ls /store/ovms_config",
        "vfs cat /sd/../../etc/passwd",
        sd=sd,
    ).output.splitlines()
    assert out[0].startswith("[DIR]     ") and out[0].endswith("  logs/")  # "%8.8s  %17.17s  %s%s"
    assert out[1].startswith("      6   ") and out[1].endswith("  notes.txt")
    assert out[2:] == [
        "hello",
        "File /sd/notes.txt size is 6 and digest b1946ac92492d2347c6235b4d2611184",
        "VFS copy complete",
        "VFS File deleted",
        "Error: Could not delete VFS file",
        "Error: protected path",
        "Error: protected path",
        "Error: protected path",
        "Error: VFS file cannot be opened",
    ]
    assert (sd / "notes.txt").read_text() == "hello\n" and not (sd / "copy.txt").exists()


def test_help_and_the_store_listing(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img")
    out = run_commands(flash, "help").output.splitlines()
    assert out[0] == 'Enter a single "?" to get the root command list.' and len(out) == 6
    listing = run_commands(flash, "vfs ls /store").output.splitlines()
    assert len(listing) == 1 and listing[0].startswith("[DIR]     ") and listing[0].endswith("  ovms_config/")


def test_an_esp_error_is_logged_by_esp_ota_ops_before_the_console_line(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img")
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "page.html").write_text("<html>not firmware</html>" * 50)
    lines = run_commands(flash, "ota flash vfs /sd/page.html", sd=sd).output.splitlines()
    assert re.fullmatch(
        r"E \(\d+\) esp_ota_ops: OTA image has invalid magic byte \(expected 0xE9, saw 0x3c\)", lines[-2]
    ), lines
    assert lines[-1] == "Error: ESP32 error #5379 when writing to flash - state is inconsistent"


def test_hostile_arguments_get_an_answer_not_a_traceback(tmp_path: Path) -> None:
    flash = new_module(tmp_path / "m.img")
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "gone").symlink_to(sd / "nowhere")
    out = run_commands(
        flash,
        "sleep 1e400",
        "sleep -5",
        "time advance 999999999999999999999d",
        "time advance 4000d",
        "vfs ls /sd",
        sd=sd,
    ).output.splitlines()
    assert out[0] == "Error: invalid duration '999999999999999999999d' (use e.g. 90s, 15m, 24h, 2d)"
    assert out[1] == "Error: at most 3650d at a time"
    assert out[2].endswith("  gone")


def test_text_a_command_prints_is_not_its_verdict(tmp_path: Path, ovota: CliRunner) -> None:
    flash = new_module(tmp_path / "m.img")
    run = ovota("module", "run", flash, "--", 'echo "Error: only words"')
    assert run.code == 0 and "Error: only words" in run.out

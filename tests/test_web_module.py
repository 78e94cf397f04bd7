"""The module's Firmware page (OVMS 3.3.006's /cfg/firmware), used in headless Chromium as a person would, and
its JSON API as a script would."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, ViewportSize, expect

from ovota.device.module import Module
from tests.browser import screenshot_path
from tests.module_helpers import image, new_module, run_commands, snapshot
from tests.servers import RawServer, StaticServer, free_port, wait_for_port

OLD = "3.3.005"
NEW = "3.3.006"
SIZE = 2100352
SD_IMAGE = "firmware-3.3.007.bin"  # not ovms3.bin: that one the module would auto-flash at power-on
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


def notes(version: str) -> str:
    return f"{version}\nRelease notes for {version}\n- OTA: faster downloads\n"


@pytest.fixture
def firmware_server(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "www"
    root.mkdir()
    srv = StaticServer(root)
    srv.publish("v3.3-5", "main", image(OLD, SIZE), notes(OLD))
    srv.publish("v3.3-5", "eap", image(NEW, SIZE), notes(NEW))
    yield srv
    srv.stop()


class ModuleWeb:
    """``ovota module web`` as a user starts it."""

    def __init__(self, flash: Path, sd: Path | None = None) -> None:
        self.flash = flash
        self.port = free_port()
        script = Path(sys.executable).with_name("ovota")
        extra = ["--sd", str(sd)] if sd else []
        self.proc = subprocess.Popen(
            [str(script), "module", "web", str(flash), "--port", str(self.port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port, self.proc, "ovota module web")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/cfg/firmware"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        if self.proc.stderr:
            self.proc.stderr.close()


def start_module(tmp_path: Path, server: str, *commands: str) -> ModuleWeb:
    flash = new_module(tmp_path / "m.img", version=OLD, size=SIZE)
    run_commands(flash, f"config set ota server {server}", *commands)
    sd = tmp_path / "sd"
    sd.mkdir(exist_ok=True)
    (sd / SD_IMAGE).write_bytes(image("3.3.007", 65536))
    return ModuleWeb(flash, sd)


@pytest.fixture
def module_web(tmp_path: Path, firmware_server: StaticServer) -> Iterator[ModuleWeb]:
    web = start_module(tmp_path, firmware_server.base)
    yield web
    web.stop()


def module_config(flash: Path) -> dict[str, dict[str, str]]:
    """The config params as the module has them in /store (read through a second, in-process module)."""
    module = Module.open(flash)
    try:
        return module.config.snapshot()
    finally:
        module.close()


def post(url: str, fields: dict[str, str]) -> tuple[int, str]:
    """A form post as a script sends it: (status, body)."""
    data = urllib.parse.urlencode(fields).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def keep_posted_pages(page: Page) -> list[str]:
    """The bodies of the pages the form posts get, kept as they arrive: the reboot page navigates away at once,
    after which the browser no longer has the body."""
    bodies: list[str] = []

    def keep(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        response = route.fetch()
        bodies.append(response.text())
        route.fulfill(response=response)

    page.route("**/cfg/firmware", keep)
    return bodies


def desktop(browser: Browser) -> Page:
    page = browser.new_page(viewport=DESKTOP)
    page.on("dialog", lambda d: pytest.fail(f"a script opened a browser dialog: {d.message}"))
    return page


def flash_output(page: Page) -> str:
    """Wait for the flash dialog's command to end (its buttons come back) and return its output."""
    dialog = page.locator("#flash-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Close")).to_be_enabled(timeout=90000)
    return dialog.locator("#output").inner_text()


def close_flash_dialog(page: Page) -> None:
    """The dialog's Close: the page loads again (as OVMS's loaduri GET /cfg/firmware)."""
    page.locator("#flash-dialog").get_by_role("button", name="Close").click()
    expect(page.locator("#flash-dialog")).to_be_hidden()


def test_the_page_has_the_real_fields_and_texts(
    browser: Browser, module_web: ModuleWeb, firmware_server: StaticServer
) -> None:
    page = desktop(browser)
    page.goto(module_web.url)
    expect(page.get_by_role("heading", name="Firmware setup & update")).to_be_visible()
    expect(page.locator("#firmware")).to_contain_text(f"{OLD}/ota_0/main (build idf ")
    expect(page.locator("#firmware")).to_contain_text("product v3.3-5)")
    expect(page.locator("#ota-server-version")).to_have_text(OLD)  # GetStatus's version_server, as is
    for name in ("Setup", "Flash from web", "Flash from file"):
        expect(page.get_by_role("tab", name=name)).to_be_visible()
    expect(page.locator("#running")).to_have_text("ota_0")
    boot = page.get_by_label("Boot from")
    expect(boot).to_have_value("ota_0")
    assert boot.locator("option").all_inner_texts() == [f"OTA_0 image ({OLD})", "OTA_1 image"]
    expect(page.get_by_label("Enable auto update")).to_be_checked()
    expect(page.get_by_label("Auto update hour of day")).to_have_value("2")
    expect(page.get_by_label("Auto update hour of day")).to_have_attribute("placeholder", "0-23, default: 2")
    expect(page.get_by_label("…allow via modem")).not_to_be_checked()
    expect(page.get_by_label("Update server")).to_have_value(firmware_server.base)
    expect(page.get_by_label("Version tag")).to_have_value("")
    expect(page.locator("#hardware")).to_have_text("v3.3-5")
    panel = page.locator(".panel")
    for text in (
        "Strongly recommended: if enabled, the module will perform automatic firmware updates",
        "a single firmware image has a size of around 3 MB",
        "Default is https://api.openvehicles.com/firmware/ota.",
        "Developer builds are meant for development and testing, not for regular daily use!",
        "The module can store up to two firmware images in a the two OTA partitions.",
    ):
        expect(panel).to_contain_text(text)
    for name in ("Set", "Set & reboot", "Reboot", "Update now", "Version info"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
    page.screenshot(path=screenshot_path("module-firmware-page"), full_page=True)

    page.get_by_role("button", name="Version info").click()
    dialog = page.locator("#version-dialog")
    expect(dialog.get_by_role("heading")).to_have_text(f"Version info {OLD}")
    expect(dialog.locator("pre")).to_contain_text(f"Release notes for {OLD}\n- OTA: faster downloads")
    page.screenshot(path=screenshot_path("module-version-info"))
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    page.get_by_role("tab", name="Flash from web").click()
    expect(page.get_by_label("HTTP URL")).to_have_attribute("placeholder", "optional: URL of firmware file")
    expect(page.locator("#tab-flash-http")).to_contain_text(
        "Leave empty to download the latest firmware from the update server. Note: currently only http is supported."
    )
    expect(page.locator("#tab-setup")).to_be_hidden()

    page.get_by_role("tab", name="Flash from file").click()
    vfs = page.locator("#tab-flash-vfs")
    for text in (
        "Place the file ovms3.bin in the SD root directory.",
        "Insert the SD card, wait until the module reboots.",
        "Note: after processing the file will be renamed to ovms3.done.",
        "SD card root: /sd/",
    ):
        expect(vfs).to_contain_text(text)
    expect(page.get_by_label("File path")).to_have_attribute("placeholder", "Path to firmware file")
    expect(page.locator("#files option")).to_have_attribute("value", f"/sd/{SD_IMAGE}")
    expect(page.get_by_label("Upload")).to_have_attribute("type", "file")
    page.screenshot(path=screenshot_path("module-firmware-file-tab"), full_page=True)


def test_set_saves_the_settings(browser: Browser, module_web: ModuleWeb, firmware_server: StaticServer) -> None:
    page = desktop(browser)
    page.goto(module_web.url)
    page.get_by_label("Enable auto update").uncheck()
    page.get_by_label("Auto update hour of day").fill("5")
    page.get_by_label("…allow via modem").check()
    page.get_by_label("Update server").fill(f"http://{firmware_server.base}/")
    page.get_by_label("Version tag").fill("eap")
    page.get_by_role("button", name="Set", exact=True).click()
    alert = page.locator(".alert-success")
    expect(alert).to_contain_text("OK!")
    expect(alert).to_contain_text("Boot partition unchanged.")
    ota = module_config(module_web.flash)
    assert ota["auto"]["ota"] == "no"
    assert {k: ota["ota"][k] for k in ("auto.hour", "auto.allow.modem", "server", "tag")} == {
        "auto.hour": "5",
        "auto.allow.modem": "yes",
        "server": f"http://{firmware_server.base}",  # the emulator drops one trailing "/"
        "tag": "eap",
    }
    # The page is rendered again with the new settings: the server check now asks the eap channel.
    expect(page.locator("#ota-server-version")).to_have_text(NEW)
    expect(page.get_by_label("Version tag")).to_have_value("eap")
    expect(page.get_by_label("Enable auto update")).not_to_be_checked()


def test_a_boot_change_runs_ota_boot_and_an_error_saves_nothing(browser: Browser, module_web: ModuleWeb) -> None:
    before = snapshot(module_web.flash)
    page = desktop(browser)
    page.goto(module_web.url)
    page.get_by_label("Version tag").fill("edge")
    page.get_by_label("Boot from").select_option("ota_1")  # empty: esp_ota_set_boot_partition refuses it
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Set", exact=True).click()
    assert answer.value.status == 400
    alert = page.locator(".alert-danger")
    expect(alert).to_contain_text("Error!")
    expect(alert).to_contain_text("Error: partition contained invalid app image, or signature validation failed")
    assert "tag" not in module_config(module_web.flash).get("ota", {})
    after = snapshot(module_web.flash)
    assert (after.otadata, after.store) == (before.otadata, before.store)


def test_flash_from_file_then_set_reboot_and_boot_back(browser: Browser, module_web: ModuleWeb) -> None:
    page = desktop(browser)
    page.goto(module_web.url)
    page.get_by_role("tab", name="Flash from file").click()
    page.get_by_label("File path").fill(f"/sd/{SD_IMAGE}")
    page.locator("#tab-flash-vfs").get_by_role("button", name="Flash now").click()
    output = flash_output(page)
    assert "OTA Flash VFS: Flashing image partition..." in output
    assert f"Flashed 65536 bytes from /sd/{SD_IMAGE}" in output
    assert "Next boot will be from 'ota_1'" in output
    close_flash_dialog(page)
    expect(page.get_by_label("Boot from")).to_have_value("ota_1")
    expect(page.get_by_label("File path")).to_have_value(f"/sd/{SD_IMAGE}")  # ota vfs.mru

    answers = keep_posted_pages(page)
    page.get_by_role("button", name="Set & reboot").click()
    expect(page.locator("#running")).to_have_text("ota_1", timeout=30000)
    assert "OK!" in answers[0] and "Rebooting now." in answers[0]
    expect(page.locator("#running")).to_have_text("ota_1", timeout=30000)  # reloaded after `module reset`
    expect(page.locator("#firmware")).to_contain_text("3.3.007/ota_1/main")

    page.get_by_label("Boot from").select_option("ota_0")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.locator(".alert-success")).to_contain_text("Boot from ota_0 at 0x")
    expect(page.get_by_label("Boot from")).to_have_value("ota_0")


def test_an_unknown_action_is_refused(browser: Browser, module_web: ModuleWeb) -> None:
    before = snapshot(module_web.flash)
    for action in ("flash-http", "bogus", ""):
        status, body = post(module_web.url, {"action": action, "boot_old": "ota_0", "boot": "ota_1", "tag": "x"})
        assert status == 400, action
        assert "Error!" in body and "Unknown action." in body
    assert snapshot(module_web.flash) == before


def test_update_now_builds_the_url_from_the_fields(
    browser: Browser, module_web: ModuleWeb, firmware_server: StaticServer
) -> None:
    page = desktop(browser)
    page.goto(module_web.url)
    page.get_by_label("Update server").fill(f"http://{firmware_server.base}/")  # not saved: as on OVMS
    page.get_by_label("Version tag").fill("eap")
    page.get_by_role("button", name="Update now").click()
    output = flash_output(page)
    url = f"http://{firmware_server.base}/v3.3-5/eap/ovms3.bin"
    assert f"Download firmware from {url} to ota_1" in output
    assert "OTA flash was successful" in output
    assert "tag" not in module_config(module_web.flash).get("ota", {})
    close_flash_dialog(page)
    expect(page.get_by_label("Boot from")).to_have_value("ota_1")
    expect(page.get_by_label("Boot from").locator("option[value=ota_1]")).to_have_text(f"OTA_1 image ({NEW})")


def test_flash_from_web_shows_the_console_output(
    browser: Browser, module_web: ModuleWeb, firmware_server: StaticServer
) -> None:
    url = f"http://127.0.0.1:{firmware_server.port}/firmware/ota/v3.3-5/eap/ovms3.bin"
    page = desktop(browser)
    page.goto(module_web.url)
    page.get_by_role("tab", name="Flash from web").click()
    page.get_by_label("HTTP URL").fill(url)
    page.locator("#tab-flash-http").get_by_role("button", name="Flash now").click()
    expect(page.get_by_role("heading", name="Flashing…")).to_be_visible()
    output = flash_output(page)
    lines = output.splitlines()
    assert lines[0] == "Processing… (do not interrupt, may take some minutes)"
    for line in (
        "Current running partition is: ota_0",
        "Target partition is: ota_1",
        f"Download firmware from {url} to ota_1",
        f"Expected file size is {SIZE}",
        f"Download complete (at {SIZE} bytes)",
        "OTA flash was successful",
        f"  Flashed {SIZE} bytes from {url}",
        "  Next boot will be from 'ota_1'",
    ):
        assert any(line in shown for shown in lines), line
    assert any("Downloading... " in shown and "% (" in shown for shown in lines)
    page.screenshot(path=screenshot_path("module-flash-dialog"))
    answers = keep_posted_pages(page)
    page.get_by_role("button", name="Reboot now").click()
    expect(page.locator("#running")).to_have_text("ota_1", timeout=30000)
    assert "Rebooting now." in answers[0]  # then it posts `module reset` and loads the page again
    page.get_by_role("tab", name="Flash from web").click()
    expect(page.get_by_label("HTTP URL")).to_have_value(url)  # ota http.mru


def test_upload_is_checked_before_anything_is_erased(browser: Browser, module_web: ModuleWeb, tmp_path: Path) -> None:
    before = snapshot(module_web.flash)
    page = desktop(browser)
    page.goto(module_web.url)
    page.get_by_role("tab", name="Flash from file").click()
    html = tmp_path / "page.bin"
    html.write_text("<html><body>Not firmware</body></html>")
    page.get_by_label("Upload").set_input_files(str(html))
    page.get_by_role("button", name="Upload & flash").click()
    assert "page.bin is not a valid firmware image: not an ESP32 image" in flash_output(page)
    after = snapshot(module_web.flash)
    assert (after.otadata, after.running_image, after.store) == (before.otadata, before.running_image, before.store)
    close_flash_dialog(page)

    firmware = tmp_path / "ovms3.bin"
    firmware.write_bytes(image("3.3.007", 65536))
    page.get_by_role("tab", name="Flash from file").click()
    page.get_by_label("Upload").set_input_files(str(firmware))
    page.get_by_role("button", name="Upload & flash").click()
    output = flash_output(page)
    assert "Flashed 65536 bytes from upload ovms3.bin" in output
    assert "Next boot will be from 'ota_1'" in output


def test_the_json_api_still_works(module_web: ModuleWeb) -> None:
    api = f"{module_web.base}/api/firmware"
    status, body = post(f"{api}/settings", {"auto_enable": "yes", "auto_hour": "3", "tag": "eap", "server": ""})
    assert (status, json.loads(body)) == (200, {"ok": True, "message": "Settings saved."})
    ota = module_config(module_web.flash)["ota"]
    assert (ota["auto.hour"], ota["tag"], "server" in ota) == ("3", "eap", False)
    status, body = post(f"{api}/settings", {"auto_hour": "24"})
    assert status == 400 and "from 0 to 23, not '24'" in json.loads(body)["error"]

    with urllib.request.urlopen(f"{api}/status", timeout=10) as response:
        state = json.load(response)
    assert state["status"]["running"] == "ota_0" and state["status"]["images"] == {"ota_0": OLD, "ota_1": ""}

    status, body = post(f"{api}/flash", {"mode": "vfs", "path": f"/sd/{SD_IMAGE}"})
    assert (status, json.loads(body)) == (200, {"ok": True, "job": "Flash from file"})
    deadline = time.monotonic() + 60
    while not state.get("job", {}).get("done"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
        with urllib.request.urlopen(f"{api}/status", timeout=10) as response:
            state = json.load(response)
    assert state["job"]["ok"] and state["job"]["percent"] == 100
    assert "  Next boot will be from 'ota_1'" in state["job"]["lines"]
    assert state["status"]["boot"] == "ota_1"

    request = urllib.request.Request(f"{module_web.base}/api/execute", data=b"command=ota+status+nocheck")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"  # streamed as it prints
        text = response.read().decode()
    assert "Boot partition:    ota_1" in text and "OTA_1 image:       3.3.007" in text


def test_attacks_get_a_4xx_and_change_nothing(browser: Browser, module_web: ModuleWeb) -> None:
    before = snapshot(module_web.flash)
    setup = {"action": "set", "boot_old": "ota_0", "boot": "ota_0", "auto_hour": "2", "server": "", "tag": "main"}
    for change, status, reason in (
        ({"auto_hour": "abc"}, 400, "Auto update hour of day must be a whole number from 0 to 23, not 'abc'."),
        ({"auto_hour": "25"}, 400, "Auto update hour of day must be a whole number from 0 to 23, not '25'."),
        ({"auto_hour": "٣"}, 400, "Auto update hour of day must be a whole number from 0 to 23"),
        ({"tag": "x" * 50000}, 400, "Version tag is longer than 64 characters (50000 sent)."),
        ({"server": "evil.example/ota'; rm -rf /"}, 400, "Update server must look like [http://]host[:port]/path"),
        ({"boot": "nvs"}, 400, "Boot from must be one of ota_0, ota_1, not 'nvs'."),
        ({"auto_enable": "<b>"}, 400, "Enable auto update must be 'yes' or absent"),
        ({"server": "x" * 70000}, 413, "Form data of"),
    ):
        code, body = post(module_web.url, {**setup, **change})
        assert code == status, change
        assert "Error!" in body and reason in body.replace("&#x27;", "'"), (change, body[-2000:])
    # A script that leaves a field out, or sends JSON, must not clear the settings it did not mention.
    code, body = post(module_web.url, {key: value for key, value in setup.items() if key != "auto_hour"})
    assert code == 400 and "Field 'auto_hour' (Auto update hour of day) is missing." in body.replace("&#x27;", "'")
    for target in (module_web.url, f"{module_web.base}/api/firmware/settings"):
        request = urllib.request.Request(
            target, data=b'{"auto_hour": "3"}', headers={"Content-Type": "application/json", "Origin": module_web.base}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 415
        assert "not 'application/json'" in refused.value.read().decode().replace("&#x27;", "'")
    execute = f"{module_web.base}/api/execute"
    for command, status, reason in (
        ("config set ota server evil.example", 403, "is not run here; only: ota status"),
        ("ota erase ota_1", 403, "is not run here"),
        ("ota flash http http://evil.example/x' ; reboot", 400, "HTTP URL must look like"),
        ("ota flash vfs /sd/../../etc/passwd", 400, "File path must be a path like /sd/ovms3.bin"),
        ("ota boot nvs", 400, "Partition must be one of ota_0, ota_1"),
        ("ota " + "status " * 200, 400, "at most 800"),
    ):
        code, body = post(execute, {"command": command})
        assert (code, body.count("\n")) == (status, 1), command  # one line of reason
        assert reason in body, command

    page = desktop(browser)
    page.goto(module_web.url)
    page.get_by_label("Version tag").fill("<script>alert(1)</script>")
    page.get_by_role("button", name="Set", exact=True).click()
    alert = page.locator(".alert-danger")
    expect(alert).to_contain_text("Version tag may hold only letters, digits, '.', '_' and '-', not '<script>")
    expect(page.get_by_label("Version tag")).to_have_value("<script>alert(1)</script>")  # shown, not run
    page.screenshot(path=screenshot_path("module-bad-input"), full_page=True)
    assert snapshot(module_web.flash) == before


def test_one_command_at_a_time(tmp_path: Path) -> None:
    """While a download stalls, a second command and a Set are refused (OVMS's flashing mutex)."""
    head = f"HTTP/1.0 200 OK\r\nContent-Length: {SIZE}\r\n\r\n".encode()
    stalled = RawServer(head + image(NEW, SIZE)[:8192], stall=True)
    web = start_module(tmp_path, f"127.0.0.1:{stalled.port}/firmware/ota", "config set ota http.timeout 3")
    try:
        first: list[str] = []
        request = urllib.request.Request(f"{web.base}/api/execute", data=b"command=ota+flash+http")
        with urllib.request.urlopen(request, timeout=60) as response:
            first.append(response.readline().decode())  # the command is running
            reader = threading.Thread(target=lambda: first.append(response.read().decode()))
            reader.start()
            status, body = post(f"{web.base}/api/execute", {"command": "ota status"})
            assert (status, body) == (409, "Error: Flash operation already in progress - cannot flash again\n")
            setup = {"action": "set", "boot_old": "ota_0", "boot": "ota_0", "auto_hour": "", "server": "", "tag": "eap"}
            status, body = post(web.url, setup)
            assert status == 409 and "Flash operation already in progress" in body
            reader.join(timeout=30)
        output = "".join(first)
        assert "Download failed (at 8192 bytes)" in output
        assert f"Error: Download file size (8192) does not match expected ({SIZE})" in output
        assert "tag" not in module_config(web.flash)["ota"]
    finally:
        web.stop()
        stalled.stop()


def test_readable_on_a_phone(browser: Browser, module_web: ModuleWeb) -> None:
    page = browser.new_page(viewport=PHONE)
    page.goto(module_web.url)
    expect(page.get_by_role("heading", name="Firmware setup & update")).to_be_visible()
    page.screenshot(path=screenshot_path("module-phone"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
    # Every form control has a label a screen reader can announce.
    unlabeled = page.evaluate(
        "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"
    )
    assert unlabeled == []
    page.get_by_role("tab", name="Flash from file").click()
    page.screenshot(path=screenshot_path("module-phone-file-tab"), full_page=True)
    page.get_by_role("tab", name="Flash from web").click()
    page.get_by_label("HTTP URL").fill("")
    page.locator("#tab-flash-http").get_by_role("button", name="Flash now").click()
    assert "OTA flash was successful" in flash_output(page)  # empty: the update server's image
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=screenshot_path("module-phone-flash-dialog"))

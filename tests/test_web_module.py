"""The module's Firmware page, used in headless Chromium as a person would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import screenshot_path
from tests.module_helpers import image, new_module, run_commands, snapshot
from tests.servers import StaticServer, free_port, wait_for_port

OLD = "3.3.005"
NEW = "3.3.006"
SIZE = 2100352


@pytest.fixture
def firmware_server(tmp_path: Path) -> Iterator[StaticServer]:
    root = tmp_path / "www"
    root.mkdir()
    srv = StaticServer(root)
    for tag in ("main", "eap"):
        srv.publish(
            "v3.3-5", tag, image(NEW if tag == "eap" else OLD, SIZE), f"{NEW if tag == 'eap' else OLD}\nNotes\n"
        )
    yield srv
    srv.stop()


class ModuleWeb:
    def __init__(self, flash: Path) -> None:
        self.flash = flash
        self.port = free_port()
        script = Path(sys.executable).with_name("ovota")
        self.proc = subprocess.Popen(
            [str(script), "module", "web", str(flash), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port, self.proc, "ovota module web")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cfg/firmware"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def module_web(tmp_path: Path, firmware_server: StaticServer) -> Iterator[ModuleWeb]:
    flash = new_module(tmp_path / "m.img", version=OLD, size=SIZE)
    run_commands(flash, f"config set ota server {firmware_server.base}")
    web = ModuleWeb(flash)
    yield web
    web.stop()


def config_value(flash: Path, param: str, instance: str) -> str:
    out = run_commands(flash, f"config get {param} {instance}").output
    return out.strip()


def test_version_tag_and_update_now(browser: Browser, module_web: ModuleWeb) -> None:
    page: Page = browser.new_page()
    page.goto(module_web.url)
    expect(page.locator("#running")).to_have_text("ota_0")
    expect(page.locator("#server-version")).to_have_text(f"{OLD} (no update required)")
    page.screenshot(path=screenshot_path("module-firmware-page"), full_page=True)

    page.get_by_label("Version tag").fill("eap")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#settings-message")).to_have_text("Settings saved.")
    assert config_value(module_web.flash, "ota", "tag") == "eap"

    page.get_by_role("button", name="Update now").click()
    expect(page.locator("#percent")).to_have_text("100%", timeout=60000)
    expect(page.locator("#job-result")).to_have_text("Update now: done")
    expect(page.locator("#boot")).to_have_text("ota_1")
    expect(page.locator("#image-ota_1")).to_have_text(NEW)
    page.screenshot(path=screenshot_path("module-update-done"), full_page=True)
    assert "Next boot will be from 'ota_1'" in page.locator("#job-log").inner_text()


def test_bad_input_is_refused_visibly(browser: Browser, module_web: ModuleWeb, tmp_path: Path) -> None:
    before = snapshot(module_web.flash)
    page = browser.new_page()
    page.goto(module_web.url)
    page.get_by_label("Auto update hour").fill("25")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#settings-message")).to_have_text(
        "Auto update hour must be a whole number from 0 to 23, not '25'."
    )
    expect(page.locator("#settings-message")).to_have_class("error")

    page.get_by_label("Flash from URL").fill("not a url")
    page.get_by_role("button", name="Flash from URL").click()
    expect(page.locator("#url-message")).to_have_text(
        "'not a url' is not a firmware URL: use http(s)://host[:port]/path/ovms3.bin."
    )

    html = tmp_path / "page.bin"
    html.write_text("<html><body>Not firmware</body></html>")
    page.get_by_label("Firmware file to flash").set_input_files(str(html))
    page.get_by_role("button", name="Flash from file").click()
    expect(page.locator("#file-message")).to_contain_text("page.bin is not a valid firmware image: not an ESP32 image")
    page.screenshot(path=screenshot_path("module-bad-input"), full_page=True)
    after = snapshot(module_web.flash)
    assert (after.otadata, after.running_image, after.store) == (before.otadata, before.running_image, before.store)


def test_flash_from_file_and_boot_selection(browser: Browser, module_web: ModuleWeb, tmp_path: Path) -> None:
    firmware = tmp_path / "ovms3.bin"
    firmware.write_bytes(image("3.3.007", 65536))
    page = browser.new_page()
    page.goto(module_web.url)
    page.get_by_label("Firmware file to flash").set_input_files(str(firmware))
    page.get_by_role("button", name="Flash from file").click()
    expect(page.locator("#job-result")).to_have_text("Flash from file: done", timeout=30000)
    expect(page.locator("#boot")).to_have_text("ota_1")
    page.get_by_label("Boot partition").select_option("ota_0")
    page.get_by_role("button", name="Set boot partition").click()
    expect(page.locator("#boot")).to_have_text("ota_0", timeout=15000)  # a job of the module: slower under load


def test_readable_on_a_phone(browser: Browser, module_web: ModuleWeb) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(module_web.url)
    expect(page.get_by_role("heading", name="Firmware")).to_be_visible()
    page.screenshot(path=screenshot_path("module-phone"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    # Every form control has a label a screen reader can announce.
    unlabeled = page.evaluate(
        "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
        ".filter(e => !e.labels || e.labels.length === 0).map(e => e.id)"
    )
    assert unlabeled == []

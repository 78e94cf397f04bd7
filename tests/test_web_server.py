"""The server's download area and release console in headless Chromium."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import screenshot_path
from tests.conftest import CliRunner
from tests.module_helpers import image
from tests.servers import OvotaServer
from tests.signing import Keys, signed, unsigned

MAIN = "3.3.006"
NEW = "3.3.007-12-gabcdef0"


@pytest.fixture
def server(tmp_path: Path, ovota: CliRunner) -> Iterator[tuple[OvotaServer, str]]:
    repo = tmp_path / "repo"
    (tmp_path / "main.bin").write_bytes(image(MAIN, 65536))
    for tag in ("edge", "eap", "main"):
        assert ovota("release", "publish", tmp_path / "main.bin", "--repo", repo, "--tag", tag).code == 0
    token = ovota("token", "create", "--repo", repo, "--name", "release-manager").out.strip()
    srv = OvotaServer(repo)
    yield srv, token
    srv.stop()


def ver(srv: OvotaServer, tag: str) -> str:
    with urllib.request.urlopen(f"{srv.url}/firmware/ota/v3.3-5/{tag}/ovms3.ver") as response:
        return str(response.read().decode().split("\n")[0])


def test_wrong_token_is_refused(browser: Browser, server: tuple[OvotaServer, str]) -> None:
    srv, _ = server
    page = browser.new_page()
    page.goto(f"{srv.url}/console")
    expect(page).to_have_url(f"{srv.url}/console/login")
    page.get_by_label("API token").fill("ovota_not-a-real-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Invalid token.")
    page.screenshot(path=screenshot_path("server-login-refused"), full_page=True)
    page.goto(f"{srv.url}/console")
    expect(page).to_have_url(f"{srv.url}/console/login")


def test_publish_promote_and_download_area(
    browser: Browser,
    server: tuple[OvotaServer, str],
    tmp_path: Path,
) -> None:
    srv, token = server
    firmware = tmp_path / "ovms3.bin"
    firmware.write_bytes(image(NEW, 2100352))
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{srv.url}/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Logged in as release-manager")).to_be_visible()

    page.get_by_label("Firmware image (ovms3.bin)").set_input_files(str(firmware))
    page.get_by_label("Channel", exact=True).fill("edge")
    page.get_by_label("Changelog").fill("New frobnicator")
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#upload-percent")).to_have_text("100%")
    expect(page.get_by_role("status").first).to_have_text(f"Published {NEW} to v3.3-5/edge.")
    expect(page.locator("#channel-v3\\.3-5-edge .version")).to_contain_text(NEW)
    expect(page.locator("#channel-v3\\.3-5-edge .version details")).to_contain_text("New frobnicator")
    assert ver(srv, "edge") == NEW and ver(srv, "main") == MAIN
    page.screenshot(path=screenshot_path("server-console-published"), full_page=True)

    page.get_by_role("button", name="Promote edge → eap").click()
    expect(page.locator("#channel-v3\\.3-5-eap .version")).to_contain_text(NEW)
    page.get_by_role("button", name="Promote eap → main").click()
    expect(page.get_by_role("status").first).to_have_text(f"Promoted {NEW} from eap to v3.3-5/main.")
    expect(page.locator("#channel-v3\\.3-5-main .version")).to_contain_text(NEW)
    assert ver(srv, "main") == NEW

    page.goto(f"{srv.url}/firmware/ota/v3.3-5/")
    expect(page.get_by_role("row", name=f"main/ {NEW}")).to_be_visible()
    page.get_by_role("link", name="main/").click()
    expect(page.get_by_role("cell", name=NEW).first).to_be_visible()
    page.screenshot(path=screenshot_path("server-download-area"), full_page=True)

    page.goto(f"{srv.url}/console")
    page.get_by_role("button", name="Roll back main").click()
    expect(page.locator("#channel-v3\\.3-5-main .version")).to_contain_text(MAIN)
    assert ver(srv, "main") == MAIN


def test_bad_upload_is_refused_visibly(browser: Browser, server: tuple[OvotaServer, str], tmp_path: Path) -> None:
    srv, token = server
    bogus = tmp_path / "page.bin"
    bogus.write_text("<html>not firmware</html>")
    page = browser.new_page()
    page.goto(f"{srv.url}/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Firmware image (ovms3.bin)").set_input_files(str(bogus))
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#publish-message")).to_contain_text("not a valid firmware image: not an ESP32 image")
    expect(page.locator("#publish-message")).to_have_class("error")
    assert ver(srv, "edge") == MAIN


def test_console_publish_follows_trusted_keys(
    browser: Browser, server: tuple[OvotaServer, str], tmp_path: Path, keys: Keys, ovota: CliRunner
) -> None:
    srv, token = server
    trusted = ovota("release", "trust", "--repo", srv.repo, "--product", "v3.3-5", "--key", keys.public)
    assert trusted.code == 0, trusted.err
    (tmp_path / "unsigned.bin").write_bytes(unsigned(NEW))
    (tmp_path / "signed.bin").write_bytes(signed(keys.signing, NEW, secure_version=5))
    page = browser.new_page()
    page.goto(f"{srv.url}/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.get_by_label("Firmware image (ovms3.bin)").set_input_files(str(tmp_path / "unsigned.bin"))
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#publish-message")).to_contain_text(f"only accepts images signed by {keys.digest.hex()}")
    expect(page.locator("#publish-message")).to_have_class("error")
    # The unsigned build edge still points at is not offered any more: the product requires signatures now.
    with pytest.raises(urllib.error.HTTPError) as refused:
        ver(srv, "edge")
    assert refused.value.code == 404 and b"not signed by a key v3.3-5 trusts" in refused.value.read()
    page.get_by_label("Firmware image (ovms3.bin)").set_input_files(str(tmp_path / "signed.bin"))
    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#channel-v3\\.3-5-edge .version")).to_contain_text(NEW)
    page.goto(f"{srv.url}/firmware/ota/v3.3-5/edge/")
    expect(page.get_by_role("cell", name=keys.digest.hex())).to_be_visible()
    expect(page.get_by_role("cell", name="5", exact=True)).to_be_visible()
    page.screenshot(path=screenshot_path("server-download-area-signed"), full_page=True)


def test_download_area_on_a_phone(browser: Browser, server: tuple[OvotaServer, str]) -> None:
    srv, _ = server
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{srv.url}/firmware/ota/v3.3-5/main/")
    expect(page.get_by_role("link", name="ovms3.bin")).to_be_visible()
    page.screenshot(path=screenshot_path("server-download-phone"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

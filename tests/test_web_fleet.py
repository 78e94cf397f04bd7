"""The console's Fleet and Rollouts pages in headless Chromium, over a simulated fleet with a halted rollout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import screenshot_path
from tests.conftest import CliRunner
from tests.module_helpers import image
from tests.servers import OvotaServer

A, B = "3.3.006", "3.3.007"
MODULES = 80


@pytest.fixture
def halted(tmp_path: Path, ovota: CliRunner) -> Iterator[tuple[OvotaServer, str]]:
    """80 simulated modules, and a rollout of B that halted because 40% of modules fall back from it."""
    repo = tmp_path / "repo"
    for version in (A, B):
        (tmp_path / f"{version}.bin").write_bytes(image(version, 65536))
    assert ovota("release", "publish", tmp_path / f"{A}.bin", "--repo", repo, "--tag", "main").code == 0
    token = ovota("token", "create", "--repo", repo, "--name", "fleet-manager").out.strip()
    server = OvotaServer(repo, extra=("--driven-clock",))
    try:
        simulate = ("fleet", "simulate", "--server", server.base, "--modules", str(MODULES))
        assert ovota(*simulate, "--days", "1").code == 0
        run = ovota("release", "publish", tmp_path / f"{B}.bin", "--repo", repo, "--tag", "main",
                    "--rollout", "10,50,100", "--min-sample", "8")  # fmt: skip
        assert run.code == 0, run.err
        assert ovota(*simulate, "--days", "4", "--fail", f"{B}:0.4").code == 0
        yield server, token
    finally:
        server.stop()


def log_in(page: Page, server: OvotaServer, token: str) -> None:
    page.goto(f"{server.url}/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Logged in as fleet-manager")).to_be_visible()


def test_fleet_page(browser: Browser, halted: tuple[OvotaServer, str]) -> None:
    server, token = halted
    page = browser.new_page()
    log_in(page, server, token)
    expect(page.get_by_role("alert")).to_contain_text("Rollout 1 of v3.3-5/main halted")
    page.get_by_role("link", name="Fleet").click()
    expect(page.get_by_role("heading", name=f"{MODULES} modules")).to_be_visible()
    rows = page.locator("#modules tbody tr")
    expect(rows).to_have_count(MODULES)
    chart = page.get_by_role("img", name="Modules per running version")
    expect(chart.locator("g.bar")).to_have_count(2)
    on_a = int(chart.locator("g.bar").filter(has_text=A).locator("text").last.text_content() or "0")
    on_b = int(chart.locator("g.bar").filter(has_text=B).locator("text").last.text_content() or "0")
    assert on_a + on_b == MODULES and 0 < on_b < MODULES // 2
    page.get_by_label("Filter the table").fill("SIM00007")
    expect(page.locator("#modules tbody tr:visible")).to_have_count(1)
    expect(page.locator("#modules tbody tr:visible td").first).to_have_text("SIM00007")
    page.get_by_label("Filter the table").fill(B)
    expect(page.locator("#modules tbody tr:visible")).to_have_count(on_b)
    page.screenshot(path=screenshot_path("server-fleet"), full_page=True)
    page.get_by_label("Product").select_option("v3.3-5")
    page.get_by_label("Channel").fill("edge")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="0 modules")).to_be_visible()


def test_rollouts_page_shows_the_halt_and_aborts(browser: Browser, halted: tuple[OvotaServer, str]) -> None:
    server, token = halted
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, server, token)
    page.get_by_role("link", name="Rollouts").click()
    section = page.locator("#rollout-1")
    expect(section.locator(".rollout-state")).to_contain_text("State: halted, step 1 of 3 (10%)")
    expect(section.get_by_role("status")).to_contain_text("Halted: failed ")
    steps = section.locator("table.steps tbody tr")
    expect(steps).to_have_count(1)
    expect(steps.first.locator("td").nth(1)).to_have_text("8")  # the cohort: 10% of 80 modules
    chart = section.get_by_role("img", name="Rollout 1 over time")
    expect(chart.locator("polyline")).to_have_count(5)
    assert chart.locator("polyline.series-failed").get_attribute("points")
    page.screenshot(path=screenshot_path("server-rollout-halted"), full_page=True)
    section.get_by_role("button", name="Abort").click()
    expect(page.get_by_role("status").first).to_have_text("Rollout 1 of v3.3-5/main is now aborted.")
    expect(page.locator("#rollout-1 .rollout-state")).to_contain_text("State: aborted")
    expect(page.locator(".banner")).to_have_count(0)


def test_rollouts_page_on_a_phone(browser: Browser, halted: tuple[OvotaServer, str]) -> None:
    server, token = halted
    page = browser.new_page(viewport={"width": 390, "height": 844})
    log_in(page, server, token)
    page.goto(f"{server.url}/console/rollouts")
    expect(page.get_by_role("img", name="Rollout 1 over time")).to_be_visible()
    page.screenshot(path=screenshot_path("server-rollouts-phone"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

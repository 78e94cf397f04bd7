"""The console's Targeting page and the targeting fields of its start-rollout form, in headless Chromium."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from tests.browser import screenshot_path
from tests.test_web_fleet import B, Fleet, fleet, log_in  # noqa: F401  (fleet: the fixture)


def test_groups_pins_and_a_paced_group_rollout_from_the_console(browser: Browser, fleet: Fleet) -> None:  # noqa: F811
    assert fleet.ovota("release", "publish", fleet.builds / f"{B}.bin", "--repo", fleet.repo, "--tag", "edge").code == 0
    page = browser.new_page()
    log_in(page, fleet.server, fleet.token)
    page.goto(f"{fleet.server.url}/console/targeting")
    page.get_by_label("Group", exact=True).fill("canaries")
    page.get_by_label("Vehicle ids").fill("SIM00001, SIM00002\nSIM00003")
    page.get_by_role("button", name="Add to the group").click()
    expect(page.get_by_role("status")).to_have_text("Group canaries: 3 added.")
    expect(page.locator("section", has_text="Groups").locator("tbody")).to_contain_text("SIM00001, SIM00002, SIM00003")
    page.get_by_label("Vehicle id", exact=True).fill("SIM00100")
    page.get_by_label("Build", exact=True).first.select_option(
        label=next(o for o in page.locator("#pin-build option").all_inner_texts() if o.startswith(B)))  # fmt: skip
    page.get_by_role("button", name="Pin", exact=True).click()
    expect(page.get_by_role("status")).to_have_text(f"Pinned SIM00100 to {B}.")
    page.get_by_label("Group", exact=True).fill("bad name")
    page.get_by_label("Vehicle ids").fill("X\nY2")
    page.get_by_role("button", name="Add to the group").click()
    # Refused: the reason beside the form, what was typed still in it.
    expect(page.locator("form", has=page.get_by_label("Vehicle ids")).get_by_role("alert")).to_contain_text(
        "invalid group name 'bad name'"
    )
    expect(page.get_by_label("Group", exact=True)).to_have_value("bad name")
    expect(page.get_by_label("Vehicle ids")).to_have_value("X\nY2")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=screenshot_path("server-console-targeting"), full_page=True)

    page.goto(f"{fleet.server.url}/console/rollouts")
    page.get_by_text("Start a rollout").click()
    page.get_by_label("Channel", exact=True).select_option("v3.3-5/main")
    page.get_by_label("Build").select_option(label=next(o for o in page.locator("#build option").all_inner_texts()
                                                        if o.startswith(B)))  # fmt: skip
    page.get_by_label("Steps").fill("50,100")
    page.get_by_label("Only these groups").fill("canaries")
    page.get_by_label("Only in these windows").fill("Mon-Sun 00:00-24:00")
    page.get_by_label("Windows' time zone").fill("Europe/Berlin")
    page.get_by_label("At most this many modules").fill("5/h")
    page.get_by_role("button", name="Start the rollout").click()
    expect(page.get_by_role("status").first).to_have_text(
        re.compile(r"^Rollout 1 of v3\.3-5/main started at 50%; it matches \d+ known modules?\.$")
    )
    expect(page.locator("#rollout-1 .settings")).to_contain_text(
        "For group canaries · offered Mon-Sun 00:00-24:00 (Europe/Berlin) · at most 5/h"
    )
    page.goto(f"{fleet.server.url}/console/fleet?q=SIM0010")
    row = page.locator("#modules tr", has_text="SIM00100")
    expect(row.locator("td.offered")).to_have_text(f"{B} pinned")
    expect(page.locator("#modules tr", has_text="SIM00101")).to_contain_text("not in rollout 1's target")


def test_the_targeting_page_on_a_phone_and_for_a_read_token(browser: Browser, fleet: Fleet) -> None:  # noqa: F811
    assert fleet.ovota("fleet", "group", "add", "--repo", fleet.repo, "canaries", "SIM00001").code == 0
    page = browser.new_page(viewport={"width": 390, "height": 844})
    log_in(page, fleet.server, fleet.viewer, "dashboard")
    page.goto(f"{fleet.server.url}/console/targeting")
    expect(page.locator("section", has_text="Groups").locator("tbody")).to_contain_text("canaries")
    expect(page.get_by_role("button", name="Add to the group")).to_have_count(0)
    page.screenshot(path=screenshot_path("server-console-targeting-phone"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    answer = page.request.post(f"{fleet.server.url}/console/targeting/group-remove", form={"name": "canaries"})
    assert answer.status == 403 and "has the role read" in answer.text()

"""The console's Fleet, module, Rollouts and Audit pages in headless Chromium, over a simulated fleet: paged and
searched in the database, who failed, a halt that appears on an open page, read-only tokens, phone widths."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import screenshot_path
from tests.conftest import CliRunner
from tests.module_helpers import image
from tests.servers import OvotaServer, raw_get
from tests.test_fleet import agent, http_json, ver, wait_for

A, B = "3.3.006", "3.3.007"
MODULES = 150


@dataclass
class Fleet:
    server: OvotaServer
    repo: Path
    builds: Path
    token: str  # admin
    viewer: str  # read-only
    ovota: CliRunner

    def simulate(self, days: int, *extra: str) -> None:
        run = self.ovota("fleet", "simulate", "--server", self.server.base, "--modules", str(MODULES), "--days",
                         str(days), *extra)  # fmt: skip
        assert run.code == 0, run.err


@pytest.fixture
def fleet(tmp_path: Path, ovota: CliRunner) -> Iterator[Fleet]:
    """150 simulated modules on A, on a driven clock; B is in the repository."""
    repo = tmp_path / "repo"
    for version in (A, B):
        (tmp_path / f"{version}.bin").write_bytes(image(version, 65536))
    assert ovota("release", "publish", tmp_path / f"{A}.bin", "--repo", repo, "--tag", "main").code == 0
    token = ovota("token", "create", "--repo", repo, "--name", "fleet-manager").out.strip()
    viewer = ovota("token", "create", "--repo", repo, "--name", "dashboard", "--role", "read").out.strip()
    server = OvotaServer(repo, extra=("--driven-clock",))
    try:
        setup = Fleet(server, repo, tmp_path, token, viewer, ovota)
        setup.simulate(1)
        yield setup
    finally:
        server.stop()


def start_rollout(fleet: Fleet) -> None:
    run = fleet.ovota("release", "publish", fleet.builds / f"{B}.bin", "--repo", fleet.repo, "--tag", "main",
                      "--rollout", "10,50,100", "--min-sample", "8")  # fmt: skip
    assert run.code == 0, run.err


def log_in(page: Page, server: OvotaServer, token: str, name: str = "fleet-manager") -> None:
    page.goto(f"{server.url}/console/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text(f"Logged in as {name}")).to_be_visible()


def test_fleet_page_pages_searches_and_sorts_in_the_database(browser: Browser, fleet: Fleet) -> None:
    page = browser.new_page()
    log_in(page, fleet.server, fleet.token)
    page.get_by_role("link", name="Fleet").click()
    expect(page.get_by_role("heading", name=f"{MODULES} modules")).to_be_visible()
    expect(page.locator("#modules tbody tr")).to_have_count(100)  # one page
    expect(page.locator("#shown")).to_have_text(f"Showing 1 to 100 of {MODULES}")
    page.get_by_role("link", name="Next →").click()
    expect(page.locator("#modules tbody tr")).to_have_count(MODULES - 100)
    page.get_by_label("Search").fill("SIM00007")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#modules tbody tr")).to_have_count(1)
    expect(page.get_by_role("heading", name="1 modules match")).to_be_visible()
    page.goto(f"{fleet.server.url}/console/fleet?sort=vehicle&order=desc")
    expect(page.locator("#modules tbody tr").first.locator("td a").first).to_have_text(f"SIM{MODULES:05d}")
    chart = page.get_by_role("img", name="Modules per running version")
    expect(chart.locator("g.bar")).to_have_count(1)
    page.screenshot(path=screenshot_path("server-fleet"), full_page=True)
    page.locator("#modules tbody tr").first.get_by_role("link").click()
    expect(page.get_by_role("heading", name=f"Module SIM{MODULES:05d}")).to_be_visible()
    expect(page.locator("section").filter(has_text="Versions over time").locator("tbody tr")).to_have_count(1)


def test_the_fleet_page_filters_by_rollout_state_and_pin_and_fits_the_screen(browser: Browser, fleet: Fleet) -> None:
    """The filters live in the URL (shareable), count modules per rollout state, and say so when nothing matches;
    the API takes the same; at 1366 px nothing scrolls sideways and what each module is offered is on screen; on
    a phone the rows are cards."""
    start_rollout(fleet)
    fleet.simulate(2, "--fail", f"{B}:0.4")
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, fleet.server, fleet.token)
    page.goto(f"{fleet.server.url}/console/fleet")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    offered = page.get_by_role("columnheader", name="Offered now").bounding_box()
    assert offered is not None and offered["x"] + offered["width"] <= 1366
    failed_link = page.locator("p.states a.state-failed")
    failed = int(failed_link.inner_text().split()[-1])
    assert failed >= 1
    page.screenshot(path=screenshot_path("server-fleet-desktop"))
    failed_link.click()
    expect(page).to_have_url(re.compile(r"state=failed"))
    expect(page.locator("#modules tbody tr")).to_have_count(failed)
    for cell in page.locator('#modules td[data-label="Rollout"]').all():
        expect(cell).to_have_text("failed")
    expect(page.locator("#modules td.offered").first).not_to_be_empty()
    request = urllib.request.Request(f"{fleet.server.url}/api/v1/fleet?state=failed",
                                     headers={"Authorization": f"Bearer {fleet.viewer}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["X-Total-Count"] == str(failed)
    page.goto(f"{fleet.server.url}/console/fleet?q=nothing-like-this")
    expect(page.locator("#shown")).to_have_text(f"No module matches these filters ({MODULES} registered).")
    # Pin one module from its page: the pinned filter finds it, the module page says so and can unpin.
    page.goto(f"{fleet.server.url}/console/fleet/module/SIM00003")
    sha = page.locator("#pin-build option", has_text=f"{A} for").first.get_attribute("value")
    page.get_by_label("Pin it to a build").select_option(value=sha)
    page.get_by_role("button", name="Pin").click()
    expect(page.get_by_role("status").first).to_have_text(f"Pinned SIM00003 to {A}.")
    expect(page.locator("#overrides")).to_contain_text(f"Pinned to {A}")
    page.goto(f"{fleet.server.url}/console/fleet?override=pinned")
    expect(page.locator("#modules tbody tr")).to_have_count(1)
    expect(page.locator("#modules td.offered")).to_have_text(f"nothing new it runs {A}: pinned")
    page.goto(f"{fleet.server.url}/console/fleet/module/SIM00003")
    page.locator("#overrides").get_by_role("button", name="Unpin").click()
    expect(page.get_by_role("status").first).to_have_text("Unpinned SIM00003.")
    expect(page.locator("#overrides")).to_contain_text("No pin, assignment or waypoint applies to it.")
    # A shared filtered view survives the login of someone not logged in yet.
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(f"{fleet.server.url}/console/fleet?state=failed")
    phone.get_by_label("API token").fill(fleet.token)
    phone.get_by_role("button", name="Log in").click()
    expect(phone).to_have_url(re.compile(r"/console/fleet\?state=failed$"))
    expect(phone.get_by_label("Rollout state", exact=True)).to_have_value("failed")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.locator("#modules thead").is_hidden()  # cards: each cell says what it is
    phone.screenshot(path=screenshot_path("server-fleet-phone"), full_page=True)
    # The API refuses an unknown state with a reason, not a 500.
    bad = urllib.request.Request(f"{fleet.server.url}/api/v1/fleet?state=broken",
                                 headers={"Authorization": f"Bearer {fleet.viewer}"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=10)
    assert refused.value.code == 400 and b"unknown rollout state" in refused.value.read()


def test_who_failed_and_the_halt_on_an_open_page(browser: Browser, fleet: Fleet) -> None:
    start_rollout(fleet)
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, fleet.server, fleet.token)
    page.goto(f"{fleet.server.url}/console/rollouts")
    section = page.locator("#rollout-1")
    expect(section.locator(".rollout-state")).to_contain_text("State: running, step 1 of 3 (10%)")
    expect(section.locator(".settings")).to_contain_text("Steps 10,50,100 · interval 1d · halt at 5% failed")
    # The fleet runs, and the build falls back on 40% of the modules: the open page shows the halt by itself.
    fleet.simulate(4, "--fail", f"{B}:0.4")
    expect(section.locator(".rollout-state")).to_contain_text("State: halted", timeout=15_000)
    expect(page.locator("#banner .banner")).to_contain_text("Rollout 1 of v3.3-5/main halted", timeout=15_000)
    expect(section.get_by_role("status")).to_contain_text("Halted 20")  # with its time
    expect(section.locator(".next-step")).to_contain_text("Next: nothing while halted (since 20")
    for path in ("/console", "/console/targeting", "/console/audit", "/console/fleet/module/SIM00001"):
        other = browser.new_page()
        other.context.add_cookies(page.context.cookies())  # type: ignore[arg-type]
        other.goto(f"{fleet.server.url}{path}")
        expect(other.locator("#banner .banner")).to_contain_text("Rollout 1 of v3.3-5/main halted")  # one frame
        if path == "/console":
            expect(other.locator("#channel-v3\\.3-5-main td.rollout")).to_contain_text("Rollout 1 to 3.3.007: halted")
        other.close()
    failed = section.locator("details.who-failed")
    expect(failed).to_have_attribute("open", "")
    assert failed.locator("tbody tr").count() >= 1
    legend = section.get_by_role("list", name="Legend")
    color = (
        legend.locator("li")
        .filter(has_text="failed")
        .locator(".swatch")
        .evaluate("element => getComputedStyle(element).backgroundColor")
    )
    assert color == "rgb(180, 35, 24)"  # the series' own colour, not the text colour
    assert section.locator("g.mark-halt").count() == 1 and section.locator("g.mark-start").count() == 1
    page.screenshot(path=screenshot_path("server-rollout-halted"), full_page=True)
    section.get_by_role("button", name="Abort").click()
    expect(page.get_by_role("status").first).to_have_text("Rollout 1 of v3.3-5/main is now aborted.")
    expect(page.locator("#rollout-1 .rollout-state")).to_contain_text("State: aborted")
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("tbody tr").filter(has_text="rollout abort").first).to_contain_text("fleet-manager")
    expect(page.locator("tbody tr").filter(has_text="rollout halt").first).to_contain_text("server")


def test_start_a_rollout_from_the_console(browser: Browser, fleet: Fleet) -> None:
    assert fleet.ovota("release", "publish", fleet.builds / f"{B}.bin", "--repo", fleet.repo, "--tag", "edge").code == 0
    page = browser.new_page()
    log_in(page, fleet.server, fleet.token)
    page.goto(f"{fleet.server.url}/console/rollouts")
    page.get_by_text("Start a rollout").click()
    page.get_by_label("Channel", exact=True).select_option("v3.3-5/main")
    page.get_by_label("Build").select_option(label=next(o for o in page.locator("#build option").all_inner_texts()
                                                        if o.startswith(B)))  # fmt: skip
    page.get_by_label("Steps").fill("20,100")
    page.get_by_label("Step interval").fill("2h")
    page.get_by_label("Minimum attempts before halting").fill("ten")
    page.get_by_label("Halt at failed").fill("150%")
    page.get_by_label("Only in these windows").fill("Mon-Fri 01:00-05:00")
    page.get_by_role("button", name="Start the rollout").click()
    # Refused: every wrong field named beside it, everything typed still there, the form open.
    expect(page.get_by_role("alert").first).to_have_text("The rollout was not started: 2 problems below.")
    expect(page.locator("#min_sample-error")).to_contain_text("invalid minimum sample 'ten'")
    expect(page.locator("#halt_failed-error")).to_contain_text("150%")
    expect(page.get_by_label("Minimum attempts before halting")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Steps")).to_have_value("20,100")
    expect(page.get_by_label("Step interval")).to_have_value("2h")
    expect(page.get_by_label("Only in these windows")).to_have_value("Mon-Fri 01:00-05:00")
    expect(page.get_by_label("Channel", exact=True)).to_have_value("v3.3-5/main")
    assert page.locator("#build option:checked").inner_text().startswith(B)
    page.screenshot(path=screenshot_path("server-rollout-form-errors"))
    page.get_by_label("Minimum attempts before halting").fill("20")
    page.get_by_label("Halt at failed").fill("5%")
    page.get_by_label("Only in these windows").fill("")
    page.get_by_role("button", name="Start the rollout").click()
    expect(page.get_by_role("status").first).to_have_text(
        re.compile(r"^Rollout 1 of v3\.3-5/main started at 20%; it matches \d+ known modules?\.$")
    )
    expect(page.locator("#rollout-1 .settings")).to_contain_text("Steps 20,100 · interval 2h")


def test_a_read_only_token_sees_but_cannot_act(browser: Browser, fleet: Fleet) -> None:
    start_rollout(fleet)
    page = browser.new_page()
    log_in(page, fleet.server, fleet.viewer, "dashboard")
    expect(page.get_by_text("Logged in as dashboard (read)")).to_be_visible()
    expect(page.locator("#publish")).to_have_count(0)
    expect(page.get_by_role("button", name="Roll back main")).to_have_count(0)
    page.goto(f"{fleet.server.url}/console/rollouts")
    expect(page.locator("#rollout-1 .rollout-state")).to_contain_text("State: running")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    expect(page.get_by_text("Start a rollout")).to_have_count(0)
    # Forging the form is refused too.
    answer = page.request.post(f"{fleet.server.url}/console/rollouts/abort", form={"product": "v3.3-5", "tag": "main"})
    assert answer.status == 403 and "has the role read" in answer.text()


@pytest.mark.parametrize("path", ["/console/rollouts", "/console/fleet", "/console", "/console/audit"])
def test_console_pages_on_a_phone(browser: Browser, fleet: Fleet, path: str) -> None:
    start_rollout(fleet)
    fleet.simulate(2, "--fail", f"{B}:0.4")
    page = browser.new_page(viewport={"width": 390, "height": 844})
    log_in(page, fleet.server, fleet.token)
    page.goto(f"{fleet.server.url}{path}")
    page.screenshot(path=screenshot_path(f"server-{path.strip('/').replace('/', '-')}-phone"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # wide tables scroll inside their box
    # ... but the ones an operator reads here fit: the steps, who is where, the audit lines, the channels.
    hidden = page.evaluate("""() => [...document.querySelectorAll('table.steps, table.cards')]
        .filter((table) => table.offsetParent && table.parentElement.scrollWidth > table.parentElement.clientWidth + 1)
        .map((table) => table.outerHTML.slice(0, 80))""")
    assert hidden == [], hidden
    smallest = page.evaluate("""() => Math.min(...[...document.querySelectorAll('svg.chart text')].map((text) =>
        text.getBoundingClientRect().height).filter((h) => h > 0), 99)""")
    assert smallest >= 9, f"chart text {smallest} px high"


def test_fleet_api_pages_by_key(fleet: Fleet) -> None:
    url = f"{fleet.server.url}/api/v1/fleet?limit=60"
    seen: list[str] = []
    while url:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {fleet.viewer}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["X-Total-Count"] == str(MODULES)
            seen += [m["vehicle_id"] for m in json.loads(response.read())]
            link = response.headers.get("Link", "")
        url = f"{fleet.server.url}{link[1 : link.index('>')]}" if link else ""
    assert seen == sorted(f"SIM{n:05d}" for n in range(1, MODULES + 1))


def test_a_module_page_says_what_it_is_offered_and_retries_a_failed_build(browser: Browser, fleet: Fleet) -> None:
    assert fleet.ovota("release", "publish", fleet.builds / f"{B}.bin", "--repo", fleet.repo, "--tag", "main").code == 0
    user_agent = agent("SIM00001")
    wait_for(lambda: ver(fleet.server, user_agent) == B, "the new build")  # the server looks every 50 ms
    assert raw_get(fleet.server.port, "/firmware/ota/v3.3-5/main/ovms3.bin", user_agent)[0].startswith(b"HTTP/1.0 200")
    now = float(http_json(f"{fleet.server.url}/clock")[1]["now"])
    assert http_json(f"{fleet.server.url}/clock", "POST", body={"to": now + 700})[0] == 200
    assert ver(fleet.server, user_agent) == A  # it fell back: nothing new for it (OVMS then keeps what it runs)
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, fleet.server, fleet.token)
    page.goto(f"{fleet.server.url}/console/fleet/module/SIM00001")
    expect(page.locator("#offered")).to_contain_text("nothing; channel skipped: this module failed on 3.3.007")
    failed = page.locator("section").filter(has_text="Failed builds")
    expect(failed.locator("tbody tr")).to_have_count(1)
    expect(failed.locator("tbody tr")).to_contain_text("still reported 3.3.006 12 min after receiving it")
    page.screenshot(path=screenshot_path("server-module-failed"), full_page=True)
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    log_in(phone, fleet.server, fleet.token)
    phone.goto(f"{fleet.server.url}/console/fleet/module/SIM00001")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=screenshot_path("server-module-failed-phone"), full_page=True)
    sha = page.locator("#pin-build option", has_text=f"{B} for").first.get_attribute("value")
    page.get_by_label("Pin it to a build").select_option(value=sha)
    page.get_by_role("button", name="Pin").click()  # a pin does not beat a failure: the page says so
    expect(page.get_by_role("status").first).to_contain_text(f"Pinned SIM00001 to {B}, but it is not offered that")
    page.locator("#overrides").get_by_role("button", name="Unpin").click()
    failed = page.locator("section").filter(has_text="Failed builds")
    failed.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status").first).to_have_text("Retrying 3.3.007: it is offered again.")
    expect(page.locator("#offered")).to_have_text("3.3.007 (channel)")
    assert ver(fleet.server, user_agent) == B
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("tbody tr").filter(has_text="fleet retry").first).to_contain_text("fleet-manager")
    # A read-only token sees the failure but no button.
    viewer = browser.new_page()
    log_in(viewer, fleet.server, fleet.viewer, "dashboard")
    viewer.goto(f"{fleet.server.url}/console/fleet/module/SIM00001")
    expect(viewer.get_by_role("button", name="Retry")).to_have_count(0)

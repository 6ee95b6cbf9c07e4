"""The live dashboard in a real browser (issue 16): headless Debian chromium against a
real waitress server. A job submitted through the API appears in the open job list
without a reload, its waiting time ticks, the overview's counters follow, polling
pauses while the tab is hidden, and selected jobs are canceled after a confirmation.
Screenshots are kept in test-artifacts/."""

import json
import urllib.request

import pytest

from qrq.appdb.db import app_db
from qrq.appdb.models import AdminSession
from qrq.queue import huey, jobs
from tests.browsing import browser, console_errors, server, unless_replaced  # noqa: F401
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts"
from selenium.webdriver.common.by import By  # noqa: E402

# Counts the page's fetches (live.js looks fetch up at each call).
COUNT_FETCHES = """
window.qrqSamePage = true;
window.qrqFetches = 0;
var original = window.fetch;
window.fetch = function () { window.qrqFetches += 1; return original.apply(this, arguments); };
"""


def api_submit(server, headers):
    """POST /api/generate-qr-pdf to the running server; the new job's id."""
    request = urllib.request.Request(
        server + "/api/generate-qr-pdf", data=json.dumps({"template_id": 1}).encode(),
        headers={**headers, "Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["job_id"]


def text_of(browser, selector):
    """The text of the first element matching *selector*, or None (absent, or replaced
    by a live refresh while we looked)."""
    return unless_replaced(lambda: browser.find_element(By.CSS_SELECTOR, selector).text)


def same_page(browser):
    return browser.execute_script("return window.qrqSamePage === true;")


def log_in(browser, server, token):
    browser.get(server + "/admin/login")
    browser.find_element(By.ID, "name").send_keys("root")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    wait_until(lambda: text_of(browser, "h1") == "Overview", timeout=30,
               message="the overview after logging in")


def test_the_dashboard_is_live_and_acts_on_selected_jobs(settings, templates, make_user,
                                                         alice, server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    _, headers = make_user("root", admin=True, email="root@example.com")
    log_in(browser, server, headers["Authorization"].split(" ", 1)[1])

    # The overview's counters follow the queue (no consumer runs: jobs stay queued).
    browser.execute_script(COUNT_FETCHES)
    queued_card = "#overview-live .cards .card:first-child .big"
    assert text_of(browser, queued_card) == "0"
    first = api_submit(server, alice[1])
    wait_until(lambda: text_of(browser, queued_card) == "1", timeout=30,
               message="the overview's queued counter to show the new job")
    assert same_page(browser), "the overview reloaded"
    browser.save_screenshot(str(ARTIFACTS / "live-overview.png"))

    # The open job list shows a job submitted through the API, without a reload.
    browser.get(server + "/admin/jobs")
    browser.execute_script(COUNT_FETCHES)
    assert browser.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{first}"]')
    second = api_submit(server, alice[1])
    row = f'tr[data-job-id="{second}"]'
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, row), timeout=30,
               message="the new job's row in the open job list")
    assert same_page(browser), "the job list reloaded"
    rows = browser.find_elements(By.CSS_SELECTOR, "#job-rows tr[data-job-id]")
    assert [r.get_attribute("data-job-id") for r in rows] == [second, first]  # newest first
    assert text_of(browser, "#job-total") == "2"

    # Its waiting time ticks.
    waited = f"{row} td.elapsed [data-since]"
    before = text_of(browser, waited)
    assert before and before.endswith(("ms", " s"))
    wait_until(lambda: text_of(browser, waited) not in (None, before), timeout=30,
               message="the waiting time to tick")
    browser.save_screenshot(str(ARTIFACTS / "live-jobs.png"))

    # Hidden, the tab polls nothing; shown again, it polls at once and catches up.
    browser.execute_script(
        "Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'));"
        "window.qrqHiddenAt = window.qrqFetches; window.qrqWaited = false;"
        "setTimeout(function () { window.qrqWaited = true; }, 3000);")
    third = api_submit(server, alice[1])
    wait_until(lambda: browser.execute_script("return window.qrqWaited;"), timeout=30,
               message="three seconds of the page's time")
    # At most the one poll already on its way when the tab was hidden.
    assert browser.execute_script("return window.qrqFetches - window.qrqHiddenAt;") <= 1
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{third}"]')
    browser.execute_script(
        "Object.defineProperty(document, 'hidden', {value: false, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'));")
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{third}"]'),
               timeout=30, message="the job submitted while hidden, once shown again")
    assert same_page(browser)

    # Select two jobs and cancel them, after a confirmation that says how many.
    for job_id in (first, third):
        browser.find_element(
            By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] input[name=id]').click()
    assert text_of(browser, "[data-role=selected-count]") == "2 selected"
    browser.find_element(By.CSS_SELECTOR, "#bulk button[value=cancel]").click()
    wait_until(lambda: text_of(browser, "#bulk-question") == "Cancel 2 queued jobs?",
               timeout=30, message="the confirmation page")
    assert jobs.get(huey.storage, first)["status"] == "queued"  # nothing happened yet
    browser.save_screenshot(str(ARTIFACTS / "live-bulk-confirm.png"))
    browser.find_element(By.ID, "bulk-confirm").click()
    wait_until(lambda: "2 job(s) canceled." in (text_of(browser, ".flash") or ""),
               timeout=30, message="the job list with the report")
    assert [jobs.get(huey.storage, i)["status"] for i in (first, second, third)] == [
        "canceled", "queued", "canceled"]
    assert text_of(browser, f'[data-role=status][data-job-id="{first}"]') == "canceled"
    browser.save_screenshot(str(ARTIFACTS / "live-bulk-done.png"))

    # The consumers page refreshes itself too (no consumer runs here).
    browser.get(server + "/admin/consumers")
    assert "No consumer is registered" in text_of(browser, "#consumers-live")
    assert console_errors(browser) == []

    # The session ends (it expired): the page stops updating and says so, with a way back.
    with app_db.connection_context():
        AdminSession.delete().execute()
    wait_until(lambda: "session has ended" in (text_of(browser, "#session-ended") or ""),
               timeout=30, message="the page to say the session ended")
    link = browser.find_element(By.CSS_SELECTOR, "#session-ended a")
    assert link.get_attribute("href") == server + "/admin/login?next=%2Fadmin%2Fconsumers"


# Records each fetch's URL (admin.js and live.js look fetch up at each call).
RECORD_FETCHES = """
window.qrqSamePage = true;
window.qrqUrls = [];
var original = window.fetch;
window.fetch = function (url) {
  window.qrqUrls.push(String(url));
  return original.apply(this, arguments);
};
"""


def test_a_filtered_list_drops_jobs_that_left_it_and_banners_follow_the_alerts(
        settings, templates, make_user, alice, server, browser):
    _, headers = make_user("root", admin=True)
    first, second = api_submit(server, alice[1]), api_submit(server, alice[1])
    log_in(browser, server, headers["Authorization"].split(" ", 1)[1])
    browser.get(server + "/admin/jobs?status=queued")
    browser.execute_script(RECORD_FETCHES)
    assert text_of(browser, "#job-total") == "2"
    assert not browser.find_elements(By.CSS_SELECTOR, "#alerts .alert-paused")

    # An alert that starts while the page is open shows without a reload.
    from qrq.queue import pauses
    pauses.pause(huey.storage, "pdf", by="root")
    wait_until(lambda: "Paused:" in (text_of(browser, "#alerts") or ""), timeout=40,
               message="the paused banner on the open page")

    # A listed job canceled elsewhere leaves the list of queued jobs, and its total.
    huey.cancel(first)
    wait_until(lambda: not browser.find_elements(By.CSS_SELECTOR,
                                                 f'tr[data-job-id="{first}"]'),
               timeout=30, message="the canceled job's row to leave the queued list")
    assert browser.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{second}"]')
    assert text_of(browser, "#job-total") == "1"

    # The alert ends: its banner goes.
    pauses.resume(huey.storage, "pdf")
    wait_until(lambda: "Paused:" not in (text_of(browser, "#alerts") or "Paused:"),
               timeout=40, message="the paused banner to go")
    assert same_page(browser), "the job list reloaded"
    urls = browser.execute_script("return window.qrqUrls;")
    # The rows' progress comes with the list's own refresh, not a second poll.
    assert any("/admin/jobs.json" in u for u in urls)
    assert not any("/admin/progress.json" in u for u in urls), urls
    assert console_errors(browser) == []

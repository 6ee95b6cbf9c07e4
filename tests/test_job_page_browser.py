"""The job page in headless chromium (tests/test_job_page.py checks its HTML): the raw
JSON is folded away until its toggle is clicked (a <details>: no script needed), the
attempts and per-type tables fit a phone; screenshots are kept in test-artifacts/."""

import json
import urllib.parse
import urllib.request

import pytest

from qrq.queue import huey, jobs, submit
from tasks.backup import run_backup_task
from tasks.pdf import generate_qr_pdf
from tests import retry_tasks
from tests.browsing import browser, console_errors, server  # noqa: F401  (fixtures)
from tests.conftest import ROOT, wait_until
from tests.test_analytics_api import ARGS, scan_dbs  # noqa: F401  (fixture)
from tests.test_browser import PHONE, log_in, page_overflow

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts"
from selenium.webdriver.common.by import By  # noqa: E402


def run_until_ended(job_id):
    """Run queued work in this process (retries included) until *job_id* has ended."""
    def step():
        if huey.storage.queue_size():
            task = huey.dequeue()
            if task is not None:
                huey.execute(task)
        else:
            huey.read_schedule()
        return jobs.get(huey.storage, job_id)["status"] in jobs.ENDED
    wait_until(step, timeout=60, message=f"job {job_id} to end")


def client_post(server, headers, path, body):
    request = urllib.request.Request(server + path, data=json.dumps(body).encode(),
                                     headers={**headers, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def client_get(server, headers, path, args):
    request = urllib.request.Request(f"{server}{path}?{urllib.parse.urlencode(args)}",
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def shown(element):
    return element.is_displayed() and element.size["height"] > 0


def test_the_raw_toggle_and_the_readable_job_page(settings, templates, make_user, server,
                                                  browser, scan_dbs):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    _, headers = make_user("root", admin=True, email="root@example.com")
    pdf = submit(generate_qr_pdf, 1, {"copies": 12}, owner_id=None,
                 params={"template_id": 1, "options": {"copies": 12}})
    retried = submit(retry_tasks.fails_then_succeeds, 2, owner_id=None)
    backup = submit(run_backup_task, "manual", owner_id=None)
    items = [{"template_id": 3, "data": "z" * 2600}] + [
        {"template_id": 1, "data": f"https://menu.example/{i}"} for i in range(5)]
    batch = client_post(server, headers, "/api/batch/generate-qrs", {"items": items})
    report = client_get(server, headers, "/api/analytics/time-based", ARGS)["job_id"]
    for job_id in (pdf, retried, backup, batch["batch_job_id"], report):
        run_until_ended(job_id)
    log_in(browser, server, "root", headers["Authorization"].split(" ", 1)[1])

    browser.get(f"{server}/admin/jobs/{pdf}")
    toggle = browser.find_element(By.ID, "result-raw")
    raw = toggle.find_element(By.TAG_NAME, "pre")
    assert toggle.get_attribute("open") is None and not shown(raw)  # folded at first
    assert browser.find_element(By.ID, "pdf-pages").text == \
        str(json.loads(jobs.get(huey.storage, pdf)["result"])["pages"])
    browser.save_screenshot(str(ARTIFACTS / "job-page-pdf.png"))
    toggle.find_element(By.TAG_NAME, "summary").click()
    wait_until(lambda: shown(raw), timeout=10, message="the raw JSON to unfold")
    assert json.loads(raw.text)["artifact"] == f"{pdf}.pdf"
    assert not shown(browser.find_element(By.CSS_SELECTOR, "#params-raw pre"))  # its own
    browser.execute_script("arguments[0].scrollIntoView();", toggle)
    browser.save_screenshot(str(ARTIFACTS / "job-page-pdf-raw-open.png"))
    toggle.find_element(By.TAG_NAME, "summary").click()
    wait_until(lambda: not shown(raw), timeout=10, message="the raw JSON to fold again")

    browser.get(f"{server}/admin/jobs/{retried}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
    assert [r.get_attribute("data-attempt") for r in rows] == ["1", "2", "3"]
    assert "attempt 2 failed on purpose" in rows[1].text
    browser.execute_script("arguments[0].scrollIntoView();",
                           browser.find_element(By.ID, "attempts"))
    browser.save_screenshot(str(ARTIFACTS / "job-page-attempts.png"))

    for name, job_id in (("backup", backup), ("batch", batch["batch_job_id"]),
                         ("analytics", report)):
        browser.get(f"{server}/admin/jobs/{job_id}")
        browser.execute_script("arguments[0].scrollIntoView();",
                               browser.find_element(By.ID, "result"))
        browser.save_screenshot(str(ARTIFACTS / f"job-page-{name}.png"))

    browser.set_window_size(*PHONE)
    for name, job_id in (("pdf", pdf), ("attempts", retried), ("backup", backup)):
        browser.get(f"{server}/admin/jobs/{job_id}")
        browser.execute_script("arguments[0].scrollIntoView();",
                               browser.find_element(By.ID, "result"))
        browser.save_screenshot(str(ARTIFACTS / f"phone-job-page-{name}.png"))
        assert page_overflow(browser) <= 0, f"the {name} job page scrolls sideways"
    assert browser.find_elements(By.CSS_SELECTOR, "#backup-databases tbody tr")
    assert console_errors(browser) == []

"""The audit page in a real browser (headless Debian chromium, real waitress server):
an admin's retry appears there with its job, the filters work, it fits a phone, and
an operator sees the pages without any action button. Screenshots go to
test-artifacts/."""

import pytest

from qrq.appdb.db import app_db
from qrq.appdb.models import User
from qrq.queue import audit, huey, jobs, submit
from tasks.pdf import generate_qr_pdf
from tests.browsing import (  # noqa: F401  (fixtures)
    browser,
    console_errors,
    heading,
    server,
    unless_replaced,
)
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.slow

ARTIFACTS = ROOT / "test-artifacts"
PHONE = (390, 844)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


def log_in(browser, server, name, token):
    browser.get(server + "/admin/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    wait_until(lambda: heading(browser) == "Overview", timeout=30,
               message="the overview after logging in")


def failed_pdf_job():
    """A PDF job for a template that does not exist, run here until it failed."""
    job_id = submit(generate_qr_pdf, 999, {}, owner_id=None, params={"template_id": 999})
    while jobs.get(huey.storage, job_id)["status"] not in jobs.ENDED:
        huey.execute(huey.dequeue())
    assert jobs.get(huey.storage, job_id)["status"] == "failed"
    return job_id


def audit_cells(browser):
    """The audit table's rows as lists of cell texts (None while a navigation replaces
    the page under us)."""
    return unless_replaced(lambda: [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "table.audit tbody tr")])


def test_the_audit_page_in_a_real_browser(settings, templates, make_user, server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    _, headers = make_user("root", admin=True)
    with app_db.connection_context():
        _, operator_token = User.create_with_token("olga", operator=True)
    failed = failed_pdf_job()

    # The admin retries the failed job, then follows the navigation to the audit log.
    log_in(browser, server, "root", headers["Authorization"].split(" ", 1)[1])
    browser.get(server + "/admin/failed")
    browser.find_element(By.CSS_SELECTOR, f'button.retry[data-job-id="{failed}"]').click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".flash"), timeout=30,
               message="the failed page after the retry")
    browser.find_element(By.CSS_SELECTOR, 'header.top nav a[href="/admin/audit"]').click()
    wait_until(lambda: heading(browser) == "Audit log", timeout=30, message="the audit page")
    rows = audit_cells(browser)
    assert [(r[1], r[2], r[5]) for r in rows[1:]] == [
        ("root", "session.login", "address: 127.0.0.1")]  # its log-in, below
    when, who, action, count, ids, _ = rows[0]
    assert (who, action, count, ids.strip()) == ("root", "job.retry", "1", failed[:8])
    assert when.endswith("UTC")
    browser.save_screenshot(str(ARTIFACTS / "admin-audit.png"))

    # Filter by action: a purge from the command line shows alone.
    huey.execute(huey.dequeue())  # the retried job fails again
    audit.record(huey.storage, "cli:ops", "jobs.purge", count=12,
                 detail={"older_than": "30d", "status": None})
    browser.refresh()
    assert len(audit_cells(browser)) == 3
    Select(browser.find_element(By.ID, "audit-action")).select_by_value("jobs.purge")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_until(lambda: "action=jobs.purge" in browser.current_url, timeout=30,
               message="the filtered page")
    rows = wait_until(lambda: (cells := audit_cells(browser)) and len(cells) == 1 and cells,
                      timeout=30, message="the filtered rows")
    assert [(r[1], r[2], r[3]) for r in rows] == [("cli:ops", "jobs.purge", "12")]
    assert "older_than: 30d" in rows[0][5]
    browser.save_screenshot(str(ARTIFACTS / "admin-audit-filtered.png"))

    # On a phone the page does not scroll sideways.
    browser.set_window_size(*PHONE)
    browser.get(server + "/admin/audit")
    assert browser.execute_script(
        "return document.documentElement.scrollWidth;") <= PHONE[0]
    browser.save_screenshot(str(ARTIFACTS / "phone-audit.png"))
    browser.set_window_size(1280, 1100)

    # An operator sees the failed job and the audit log, with no button to act.
    browser.find_element(By.ID, "logout").click()
    wait_until(lambda: "/admin/login" in browser.current_url, timeout=30,
               message="the login page")
    log_in(browser, server, "olga", operator_token)
    assert "(operator: read-only)" in browser.find_element(By.CSS_SELECTOR, ".who").text
    browser.get(server + "/admin/failed")
    assert failed[:8] in browser.find_element(By.TAG_NAME, "table").text
    assert not browser.find_elements(By.CSS_SELECTOR, "button.retry, #retry-all, #purge")
    browser.save_screenshot(str(ARTIFACTS / "operator-failed.png"))
    browser.get(server + "/admin/audit")
    assert [(r[1], r[2]) for r in audit_cells(browser)] == [
        ("olga", "session.login"), ("root", "session.logout"), ("cli:ops", "jobs.purge"),
        ("root", "job.retry"), ("root", "session.login")]
    assert console_errors(browser) == []

"""The dashboard in a real browser: headless Debian chromium driven by selenium, against
a real waitress server and a real consumer. Log in, watch a running job's progress bar
move without a reload, retry a failed job, log out; no console errors; screenshots are
kept in test-artifacts/."""

import uuid

import pytest

from qrq import batch
from qrq.appdb.db import app_db
from qrq.appdb.models import Template
from qrq.batch.submit import enqueue_batch
from qrq.queue import huey, jobs, submit
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
from selenium.webdriver.common.by import By  # noqa: E402


def status_of(job_id):
    return jobs.get(huey.storage, job_id)["status"]


def test_dashboard_in_a_real_browser(settings, templates, make_user, consumer, server,
                                     browser):
    ARTIFACTS.mkdir(exist_ok=True)
    _, headers = make_user("root", admin=True, email="root@example.com")
    token = headers["Authorization"].split(" ", 1)[1]
    # Long enough to watch: 3000 one-card pages take several seconds.
    consumer(workers=2, extra_env={"QRQ_MAX_COPIES": "3000"})

    # A job that fails: its template is deleted before it runs.
    with app_db.connection_context():
        saved = Template.get_by_id(2).__data__
        Template.delete_by_id(2)
    failed = submit(generate_qr_pdf, 2, {}, owner_id=None, params={"template_id": 2})
    wait_until(lambda: status_of(failed) == "failed", timeout=60, message="the job to fail")

    # Log in.
    browser.get(server + "/admin/")
    assert "/admin/login" in browser.current_url
    browser.find_element(By.ID, "name").send_keys("root")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    wait_until(lambda: heading(browser) == "Overview", timeout=30,
               message="the overview after logging in")
    assert browser.current_url.rstrip("/").endswith("/admin")

    # Watch a running job's progress bar move, without a reload.
    running = submit(generate_qr_pdf, 1, {"copies": 3000}, owner_id=None,
                     params={"template_id": 1, "options": {"copies": 3000}})
    wait_until(lambda: status_of(running) == "running", timeout=60, message="the job to run")
    browser.get(f"{server}/admin/jobs/{running}")
    browser.execute_script("window.qrqSamePage = true;")
    bar = browser.find_element(By.CSS_SELECTOR, f'.progress[data-job-id="{running}"] progress')
    first = int(bar.get_attribute("value"))

    def moved():
        assert browser.execute_script("return window.qrqSamePage === true;"), "page reloaded"
        return int(bar.get_attribute("value")) > first and int(bar.get_attribute("value"))

    wait_until(moved, timeout=60, interval=0.1, message="the progress bar to move")
    wait_until(lambda: int(bar.get_attribute("value")) >= first + 5, timeout=60,
               interval=0.1, message="the progress bar to move on")
    assert browser.execute_script("return window.qrqSamePage === true;")
    browser.save_screenshot(str(ARTIFACTS / "admin-job-progress.png"))

    # Retry the failed job, now that its template is back; it finishes.
    with app_db.connection_context():
        Template.insert(saved).execute()
    browser.get(server + "/admin/failed")
    browser.save_screenshot(str(ARTIFACTS / "admin-failed-before-retry.png"))
    browser.find_element(By.CSS_SELECTOR, f'button.retry[data-job-id="{failed}"]').click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".flash"), timeout=30,
               message="the failed page after the retry")
    assert f"Job {failed} queued again." in browser.find_element(By.CSS_SELECTOR, ".flash").text
    browser.get(f"{server}/admin/jobs/{failed}")
    wait_until(lambda: status_of(failed) == "finished", timeout=120,
               message="the retried job to finish")

    def shows_finished():  # the page reloads itself once the job ends: look each time
        return unless_replaced(lambda: browser.find_element(
            By.CSS_SELECTOR, f'[data-role=status][data-job-id="{failed}"]').text == "finished",
            False)

    wait_until(shows_finished, timeout=30, message="the job page to show it finished")
    wait_until(lambda: status_of(running) == "finished", timeout=120,
               message="the long job to finish")

    browser.get(server + "/admin/")
    assert browser.find_elements(By.CSS_SELECTOR, "svg rect.bar-finished")
    browser.save_screenshot(str(ARTIFACTS / "admin-overview.png"))
    for page in ("jobs", "failed", "schedule", "consumers"):
        browser.get(f"{server}/admin/{page}")
        assert browser.find_element(By.TAG_NAME, "h1").text, page
        browser.save_screenshot(str(ARTIFACTS / f"admin-{page}.png"))
    from qrq.backup import run_backup

    set_id = run_backup(settings, "manual")["id"]
    browser.get(f"{server}/admin/backups")
    browser.find_element(By.CSS_SELECTOR, "table.backups details summary").click()
    assert set_id in browser.find_element(By.CSS_SELECTOR, "table.backups").text
    browser.save_screenshot(str(ARTIFACTS / "admin-backups.png"))

    # Log out: the dashboard asks for a log-in again.
    browser.find_element(By.ID, "logout").click()
    wait_until(lambda: "/admin/login" in browser.current_url, timeout=30,
               message="the login page after logging out")
    browser.get(server + "/admin/jobs")
    assert "/admin/login" in browser.current_url

    assert console_errors(browser) == []


PHONE = (390, 844)


def log_in(browser, server, name, token):
    browser.get(server + "/admin/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    wait_until(lambda: heading(browser) == "Overview", timeout=30,
               message="the overview after logging in")


def page_overflow(browser):
    """How many CSS pixels the page is wider than the window (0: no sideways scroll)."""
    return browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth;")


def test_every_page_fits_a_phone(settings, templates, make_user, server, browser):
    """At 390 px wide no dashboard page scrolls sideways: wide tables scroll inside
    their own box and the navigation wraps."""
    ARTIFACTS.mkdir(exist_ok=True)
    _, headers = make_user("root", admin=True, email="root@example.com")
    token = headers["Authorization"].split(" ", 1)[1]
    items = [{"template_id": 3, "data": "w" * 2600 if i % 3 == 1
              else f"https://events.example/a-rather-long-path/{i}?with=query&and=more"}
             for i in range(9)]
    batch_id = str(uuid.uuid4())
    with app_db.connection_context():
        checked = batch.parse_request({"items": items}, batch.load_templates, batch_id,
                                      settings.max_batch_items,
                                      margin_mm=settings.print_margin_mm)
    assert enqueue_batch(checked, batch_id, None) == batch_id
    failed = submit(generate_qr_pdf, 999, {}, owner_id=None, params={"template_id": 999})
    for job_id in (batch_id, failed):  # run here, in this process: no consumer needed
        while status_of(job_id) not in jobs.ENDED:
            task = huey.dequeue()
            assert task is not None, "nothing queued"
            huey.execute(task)
    assert status_of(failed) == "failed"

    browser.set_window_size(*PHONE)
    browser.get(server + "/admin/login")
    assert browser.execute_script("return window.innerWidth;") <= PHONE[0]
    assert page_overflow(browser) <= 0, "login"
    log_in(browser, server, "root", token)
    pages = {"overview": "/admin/", "jobs": "/admin/jobs", "failed": "/admin/failed",
             "schedule": "/admin/schedule", "consumers": "/admin/consumers",
             "backups": "/admin/backups", "batch": f"/admin/jobs/{batch_id}",
             "batch-failed-items": f"/admin/jobs/{batch_id}?items=failed#items",
             "failed-job": f"/admin/jobs/{failed}", "not-found": "/admin/jobs/nope"}
    for name, path in pages.items():
        browser.get(server + path)
        assert browser.find_element(By.TAG_NAME, "h1").text, name
        browser.save_screenshot(str(ARTIFACTS / f"phone-{name}.png"))
        assert page_overflow(browser) <= 0, f"{name} scrolls sideways at {PHONE[0]} px"
    # The navigation wrapped onto its own lines instead of running off the screen.
    links = browser.find_elements(By.CSS_SELECTOR, "header.top nav a")
    assert all(0 <= link.rect["x"] and link.rect["x"] + link.rect["width"] <= PHONE[0]
               for link in links)
    assert [e for e in console_errors(browser) if "/admin/jobs/nope" not in e["message"]] == []

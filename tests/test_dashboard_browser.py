"""The dashboard in headless Debian chromium (selenium) against a real waitress server
and, where it matters, a real consumer: pausing a job type holds its queued job until
it is resumed; axe-core, run inside each page, finds no accessibility violation; the
analytics chart works on the admin's log-in and its axis labels do not overlap as a
browser draws them. Screenshots are kept in test-artifacts/."""

import datetime
import json
import os
import uuid

import pytest

from qrq import batch
from qrq.analytics.scans import write_demo_database
from qrq.analytics.svg import render_chart
from qrq.appdb.db import app_db
from qrq.batch.submit import enqueue_batch
from qrq.queue import audit, huey, jobs, pauses, submit
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
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
END = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC).timestamp()
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def status_of(job_id):
    return jobs.get(huey.storage, job_id)["status"]


def log_in(browser, server, make_user):
    _, headers = make_user("root", admin=True, email="root@example.com")
    browser.get(server + "/admin/login")
    browser.find_element(By.ID, "name").send_keys("root")
    browser.find_element(By.ID, "token").send_keys(headers["Authorization"].split()[1])
    browser.find_element(By.ID, "login").click()
    wait_until(lambda: heading(browser) == "Overview", timeout=30,
               message="the overview after logging in")


def confirm(browser):
    """Accept the page's confirmation dialog; its text."""
    def dialog():
        try:
            return browser.switch_to.alert
        except NoAlertPresentException:
            return None

    alert = wait_until(dialog, timeout=10, message="the confirmation dialog")
    text = alert.text
    alert.accept()
    return text


def flash(browser):
    return wait_until(
        lambda: unless_replaced(lambda: browser.find_element(By.CSS_SELECTOR, ".flash").text),
        timeout=30, message="the page's message")


def test_a_paused_types_queued_job_waits_until_resumed(settings, templates, make_user,
                                                       consumer, server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    log_in(browser, server, make_user)
    held = submit(generate_qr_pdf, 1, {}, owner_id=None, params={"template_id": 1})
    browser.get(server + "/admin/")
    browser.find_element(By.CSS_SELECTOR, 'button.pause[data-type="pdf"]').click()
    assert "1 queued job will wait until it is resumed" in confirm(browser)
    assert "pdf paused: 1 queued job waits until it is resumed" in flash(browser)
    banner = browser.find_element(By.CSS_SELECTOR, ".banner.notice")
    assert "pdf (1 queued)" in banner.text
    browser.save_screenshot(str(ARTIFACTS / "admin-paused-overview.png"))

    # A real consumer runs other work (a batch job), but not the paused type's job.
    consumer(workers=2)
    done = batch_job(settings, 2)
    wait_until(lambda: status_of(done) == "finished", timeout=120,
               message="the consumer to run a batch job")
    assert status_of(held) == "queued"
    for page in ("jobs", "consumers"):
        browser.get(f"{server}/admin/{page}")
        assert "pdf" in browser.find_element(By.CSS_SELECTOR, ".banner.notice").text
        browser.save_screenshot(str(ARTIFACTS / f"admin-paused-{page}.png"))
    assert status_of(held) == "queued"

    # Resume from the banner's page: the job runs.
    browser.get(server + "/admin/")
    browser.find_element(By.CSS_SELECTOR, 'button.resume[data-type="pdf"]').click()
    assert "may start at once" in confirm(browser)
    assert "pdf resumed" in flash(browser)
    wait_until(lambda: status_of(held) == "finished", timeout=120,
               message="the held job to run once resumed")
    assert not browser.find_elements(By.CSS_SELECTOR, ".banner.notice")
    assert console_errors(browser) == []


def batch_job(settings, count):
    batch_id = str(uuid.uuid4())
    with app_db.connection_context():
        checked = batch.parse_request(
            {"items": [{"template_id": 1, "data": f"item {i}"} for i in range(count)]},
            batch.load_templates, batch_id, settings.max_batch_items,
            margin_mm=settings.print_margin_mm)
    assert enqueue_batch(checked, batch_id, None) == batch_id
    return batch_id


def axe_source():
    if AXE.exists():
        return AXE.read_text()
    message = f"axe-core is not installed ({AXE}); run `npm ci` (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def axe_violations(browser, source):
    """axe-core's violations on the page shown, each as ``rule: targets``."""
    browser.set_script_timeout(60)
    found = browser.execute_async_script(
        source + "\n;const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(JSON.stringify(r.violations)),"
        " e => done(JSON.stringify([{id: 'axe-error', help: String(e), nodes: []}])));")
    return [f"{v['id']} ({v['help']}): "
            + "; ".join(", ".join(n["target"]) + " " + n.get("failureSummary", "")[:200]
                        for n in v["nodes"][:5])
            for v in json.loads(found)]


def test_axe_finds_no_violation_on_any_dashboard_page(settings, templates, make_user,
                                                      server, browser):
    source = axe_source()
    ARTIFACTS.mkdir(exist_ok=True)
    batch_id = batch_job(settings, 3)
    failed = submit(generate_qr_pdf, 999, {}, owner_id=None, params={"template_id": 999})
    for job_id in (batch_id, failed):  # run here, in this process: no consumer needed
        while status_of(job_id) not in jobs.ENDED:
            huey.execute(huey.dequeue())
    submit(generate_qr_pdf, 1, {}, owner_id=None, params={"template_id": 1})
    pauses.pause(huey.storage, "mail", "root")  # the paused banner, on every page
    audit.record(huey.storage, "root", "job.retry", job_ids=[failed], detail={"note": "x"})

    browser.get(server + "/admin/login")
    problems = {"login": axe_violations(browser, source)}
    log_in(browser, server, make_user)  # no consumer: the "no consumer" alert shows too
    pages = {"overview": "/admin/", "jobs": "/admin/jobs", "failed": "/admin/failed",
             "schedule": "/admin/schedule", "consumers": "/admin/consumers",
             "backups": "/admin/backups", "analytics": "/admin/analytics",
             "audit": "/admin/audit", "batch": f"/admin/jobs/{batch_id}",
             "failed-job": f"/admin/jobs/{failed}", "not-found": "/admin/jobs/nope"}
    for name, path in pages.items():
        browser.get(server + path)
        assert heading(browser), name
        browser.save_screenshot(str(ARTIFACTS / f"axe-{name}.png"))
        problems[name] = axe_violations(browser, source)
    # The pages this issue added to fit a phone too (no sideways page scroll).
    browser.set_window_size(390, 844)
    for name in ("overview", "analytics", "jobs"):
        browser.get(server + pages[name])
        assert heading(browser), name
        browser.save_screenshot(str(ARTIFACTS / f"phone-paused-{name}.png"))
        assert browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth;") <= 0, name
    browser.get(server + "/analytics/chart")
    problems["public-analytics-chart"] = axe_violations(browser, source)
    (ARTIFACTS / "axe-violations.json").write_text(json.dumps(problems, indent=1))
    assert {name: found for name, found in problems.items() if found} == {}


def test_the_analytics_chart_works_on_the_dashboard_session(settings, make_user, consumer,
                                                            server, browser):
    for i in range(2):
        write_demo_database(settings.data_dir / "analytics" / f"scans-{i:03d}.db", i, 500,
                            days=120, end=END)
    consumer(workers=1)
    log_in(browser, server, make_user)
    browser.find_element(By.LINK_TEXT, "Analytics").click()
    wait_until(lambda: heading(browser) == "Scans over time", timeout=30,
               message="the analytics page")
    assert not browser.find_elements(By.NAME, "token")  # the session is enough
    form = browser.find_element(By.ID, "analytics-form")
    browser.find_element(By.NAME, "from").send_keys("08/01/2026")
    browser.find_element(By.NAME, "to").send_keys("11/22/2026")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]:not([name])").click()
    status = browser.find_element(By.ID, "status")
    wait_until(lambda: status.text.startswith("Computed") and "of 2 databases" in status.text,
               timeout=90, message=f"the chart (status: {status.text!r})")
    image = browser.find_element(By.CSS_SELECTOR, "#chart img")
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 960
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tops table")) == 4
    assert status.get_attribute("aria-live") == "polite"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "admin-analytics.png"))
    assert console_errors(browser) == []


@pytest.mark.parametrize("labels", [
    [f"2026-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29)],
    [f"2026-W{w:02d} (Mon {w} Jan to Sun {w + 6} Jan, local)" for w in range(1, 54)],
])
def test_the_charts_axis_labels_do_not_overlap_as_drawn(browser, labels):
    ARTIFACTS.mkdir(exist_ok=True)
    series = [{"label": label, "scans": i % 40, "visitors": i % 15}
              for i, label in enumerate(labels)]
    svg = render_chart({"series": series, "params": {"period": "daily"}})
    path = ARTIFACTS / "analytics-many-labels.svg"
    path.write_text(svg)
    browser.get(path.as_uri())
    boxes = browser.execute_script(
        "return [...document.querySelectorAll('text')]"
        "  .filter(t => t.previousElementSibling && "
        "          t.previousElementSibling.tagName === 'line' && "
        "          t.previousElementSibling.getAttribute('x1') === t.getAttribute('x'))"
        "  .map(t => { const b = t.getBBox(); return [b.x, b.x + b.width, t.textContent]; });")
    assert len(boxes) >= 2, boxes  # the first and the last at least
    for (_, right, _), (left, _, _) in zip(boxes, boxes[1:], strict=False):
        assert right < left, boxes
    assert all(0 <= left and right <= 960 for left, right, _ in boxes), boxes
    browser.save_screenshot(str(ARTIFACTS / f"analytics-labels-{len(labels)}.png"))

"""The analytics chart page in a real browser: headless Debian chromium (selenium), a real
waitress server and a real consumer. The page follows the job and shows the SVG under its
strict Content-Security-Policy, with no console errors; a screenshot is kept in
test-artifacts/."""

import datetime

import pytest

from qrq.analytics.scans import write_demo_database
from tests.browsing import browser, server  # noqa: F401  (fixtures)
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.slow

END = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC).timestamp()
from selenium.webdriver.common.by import By  # noqa: E402


def test_the_chart_page_follows_the_job_and_shows_the_chart(settings, make_user, consumer,
                                                            server, browser):
    web = server
    for i in range(3):
        write_demo_database(settings.data_dir / "analytics" / f"scans-{i:03d}.db", i, 2000,
                            days=120, end=END)
    _, headers = make_user("viewer")
    consumer(workers=1)
    browser.get(web + "/analytics/chart?period=weekly&from=2026-08-01&to=2026-11-22"
                "&tz=Europe/Berlin")
    assert browser.find_element(By.NAME, "tz").get_attribute("value") == "Europe/Berlin"
    browser.find_element(By.NAME, "token").send_keys(headers["Authorization"].split()[1])
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]:not([name])").click()

    status = browser.find_element(By.ID, "status")
    wait_until(lambda: status.text.startswith("Computed"), timeout=60,
               message=f"the chart (status: {status.text!r})")
    image = browser.find_element(By.CSS_SELECTOR, "#chart img")
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 960
    assert "of 3 databases" in status.text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tops table")) == 4
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    browser.save_screenshot(str(ROOT / "test-artifacts" / "analytics-chart.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors

"""The analytics chart page in a real browser: headless Debian chromium (selenium), a real
waitress server and a real consumer. The page follows the job and shows the SVG under its
strict Content-Security-Policy, with no console errors; a screenshot is kept in
test-artifacts/."""

import datetime
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from qrq.scans import write_demo_database
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
END = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC).timestamp()

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)",
                allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture
def web(settings):
    """``waitress-serve web:app`` on 127.0.0.1 in its own process; its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "QRQ_DATA_DIR": str(settings.data_dir)}
    with open(settings.logs_dir / "waitress.log", "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "waitress-serve"),
                                 f"--listen=127.0.0.1:{port}", "--threads=4", "web:app"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            with urllib.request.urlopen(base + "/analytics/chart", timeout=2) as response:
                return response.status == 200
        except OSError:
            return proc.poll() is not None and pytest.fail("waitress exited")

    try:
        wait_until(up, timeout=60, interval=0.1, message="the web server")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--window-size=1200,1000",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_the_chart_page_follows_the_job_and_shows_the_chart(settings, make_user, consumer,
                                                            web, browser):
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

"""What the browser tests share: a real web server and headless Debian chromium.

Test modules import the ``server`` and ``browser`` fixtures from here (pytest
finds fixtures in a module's namespace)."""

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_until

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1100"]

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)",
                allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def unless_replaced(read, default=None):
    """What *read()* returns, or *default* while a navigation or a live refresh replaces
    the page under us: an element of the old page then reads as stale or missing, or, at
    times, as Chrome's inspector error "Node with given id does not belong to the
    document" (SeleniumHQ/selenium#15401)."""
    try:
        return read()
    except (StaleElementReferenceException, NoSuchElementException):
        return default
    except WebDriverException as exc:
        if "does not belong to the document" not in str(exc):
            raise
        return default


def heading(driver):
    """The page's h1, or None while a navigation replaces the page under us."""
    return unless_replaced(lambda: driver.find_element(By.TAG_NAME, "h1").text)


@pytest.fixture
def server(settings):
    """``qrq serve`` (the server users run) on 127.0.0.1, in its own process; its base
    URL."""
    port = free_port()
    env = {**os.environ, "QRQ_DATA_DIR": str(settings.data_dir),
           "QRQ_LEASE_SECONDS": str(settings.lease_seconds)}
    with open(settings.logs_dir / "qrq-serve.log", "ab") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "qrq"), "serve",
                                 "--host=127.0.0.1", f"--port={port}", "--threads=4"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return proc.poll() is not None and pytest.fail("qrq serve exited")

    try:
        wait_until(up, timeout=60, interval=0.1, message="the web server")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def browser(tmp_path):
    """Headless chromium through selenium, with its console log kept."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]

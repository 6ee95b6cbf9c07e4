"""`qrq dev`: one command runs the web app and a consumer; Ctrl-C stops both."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url, token, body=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def serving(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_dev_serves_runs_jobs_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    log = tmp_path / "dev.log"
    qrq = Path(sys.executable).parent / "qrq"
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path / "data")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(qrq), "dev", "--port", str(port), "-w", "2"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: serving(port), timeout=60, message="the web app")
        token = next(line for line in log.read_text().splitlines() if line.startswith("qrq_"))
        base = f"http://127.0.0.1:{port}"
        job = call(f"{base}/api/generate-qr-pdf", token, {"template_id": 2})
        done = wait_until(lambda: (s := call(f"{base}{job['status_url']}", token))["status"]
                          == "finished" and s, timeout=60, message="the job via qrq dev")
        assert done["result"]["pages"] == 1
        # Ctrl-C: the terminal signals the foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not serving(port)
        assert "Consumer exiting" in (tmp_path / "data" / "logs" / "consumer.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

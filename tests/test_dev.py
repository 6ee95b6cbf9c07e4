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

from tests.conftest import ROOT, free_port, wait_until

pytestmark = pytest.mark.slow


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
        printed = log.read_text()
        assert f"dashboard: {base}/admin  (log in as 'demo' with its API token)" in printed
        assert f"API docs:  {base}/api/openapi.json" in printed
        # The demo user of qrq dev is an admin: it may log in to the dashboard.
        assert call(f"{base}/api/me", token)["is_admin"] is True
        with urllib.request.urlopen(f"{base}/", timeout=10) as home:
            assert b'href="/admin"' in home.read()
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


def test_worker_loads_task_modules_from_its_working_directory(tmp_path):
    """`qrq worker` finds a QRQ_TASK_MODULES module next to where it is started, as
    `huey_consumer` does, takes a cap and a role (--types) on its own job type, runs
    its job, and stops on SIGTERM."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "local_tasks.py").write_text(
        "from qrq.queue import job_task\n\n"
        "@job_task('local', name='local.ping')\n"
        "def ping(task=None):\n"
        "    return {'pong': True}\n")
    data = tmp_path / "data"
    # The checkout (huey_app.py, qrq's own tasks) is on the path; local_tasks is not.
    env = {**os.environ, "QRQ_DATA_DIR": str(data), "QRQ_TASK_MODULES": "local_tasks",
           "QRQ_TYPE_CAPS": "local=1,batch=2", "PYTHONPATH": str(ROOT)}
    qrq = str(Path(sys.executable).parent / "qrq")
    subprocess.run([qrq, "init"], env=env, cwd=project, check=True, capture_output=True)
    enqueue = ("import local_tasks; from qrq.config import load_settings; "
               "from qrq.queue import huey, submit; huey.init(load_settings()); "
               "print(submit(local_tasks.ping, owner_id=None))")
    job_id = subprocess.run([sys.executable, "-c", enqueue], env=env, cwd=project,
                            check=True, capture_output=True, text=True).stdout.strip()
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([qrq, "worker", "-w", "1", "--types", "local,pdf"], env=env,
                                cwd=project, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        from qrq.config import load_settings
        from qrq.queue import jobs
        from qrq.queue.sqlite_storage import LeasedSqliteStorage

        storage = LeasedSqliteStorage("qrq", filename=str(load_settings(
            {"QRQ_DATA_DIR": str(data)}).queue_db))
        wait_until(lambda: (jobs.get(storage, job_id) or {}).get("status") == "finished",
                   timeout=60, message=f"the local job to finish; log: {log.read_text()}")
        storage.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
    assert proc.returncode == 0, log.read_text()


def test_files_under_the_data_dir_are_private_whatever_the_umask(tmp_path):
    """Started with umask 022, an installation that has run a PDF job, a backup and its
    mail through a real consumer holds nothing that group or others can read."""
    data = tmp_path / "data"
    env = {**os.environ, "QRQ_DATA_DIR": str(data)}
    qrq = str(Path(sys.executable).parent / "qrq")

    def run(*args):
        return subprocess.run([qrq, *args], env=env, cwd=ROOT, check=True,
                              capture_output=True, text=True, timeout=180,
                              preexec_fn=lambda: os.umask(0o022))

    run("init", "--demo")
    run("users", "create", "root", "--admin", "--email", "root@example.com")
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([qrq, "worker", "-w", "2"], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: os.umask(0o022))
    try:
        run("pdf", "2", "--wait", "--out", str(tmp_path / "card.pdf"))
        run("backup", "run", "--wait")
        wait_until(lambda: list((data / "outbox").glob("*.eml")), timeout=60,
                   message=f"the backup mail; log: {log.read_text()}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
    made = list(data.rglob("*"))
    kinds = {p.relative_to(data).parts[0] for p in made}
    assert {"queue.db", "app.db", "secret.key", "artifacts", "logs", "backups",
            "outbox"} <= kinds, kinds
    assert any(p.name.endswith("-wal") for p in made)
    readable = [f"{p.relative_to(data)} {p.stat().st_mode & 0o777:o}"
                for p in [data, *made] if not p.is_symlink() and p.stat().st_mode & 0o077]
    assert not readable, readable


def children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_dev_stops_both_on_sigterm_and_sighup_and_runs_once_per_data_dir(tmp_path, sig):
    port = free_port()
    log = tmp_path / "dev.log"
    qrq = str(Path(sys.executable).parent / "qrq")
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path / "data")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([qrq, "dev", "--port", str(port), "-w", "1"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: serving(port), timeout=60, message="the web app")
        kids = children(proc.pid)
        assert len(kids) == 2
        second = subprocess.run([qrq, "dev", "--port", str(free_port())], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "already running" in second.stderr and str(proc.pid) in second.stderr
        proc.send_signal(sig)  # to qrq dev alone, as a process manager or a hangup does
        assert proc.wait(timeout=60) == 0
        assert not serving(port)
        assert not [kid for kid in kids if alive(kid)]
        assert "Consumer exiting" in (tmp_path / "data" / "logs" / "consumer.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_dev_on_a_taken_port_fails_before_it_shows_the_demo_token(tmp_path):
    qrq = Path(sys.executable).parent / "qrq"
    env = {**os.environ, "QRQ_DATA_DIR": str(tmp_path / "data")}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run([str(qrq), "dev", "--port", str(port)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "qrq_" not in done.stdout  # the token is shown once: not spent on this run
    for command in ("dev", "serve"):
        wrapped = subprocess.run([str(qrq), command, "--port", "99999"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=60)
        assert wrapped.returncode == 2 and "99999 is not in the range 1<=x<=65535" \
            in wrapped.stderr, wrapped.stderr

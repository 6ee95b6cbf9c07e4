"""Past one machine (issue 15): host roles, and hosts that die.

Host roles: ``qrq worker --types``/``--exclude-types`` (``QRQ_WORKER_JOB_TYPES``,
``QRQ_WORKER_EXCLUDE_JOB_TYPES``) make a consumer take only some job types; its row
shows them, and a type that no live consumer takes raises an alert.

Hosts that die run on real separate hosts (tests/hosts.py: network namespaces joined
by veth links, each with its own data directory and none of the other's files),
with PostgreSQL on this one. Without root they fall back to plain processes with
separate data directories (and say so in the skip reason of the parts that need
namespaces); under CI they must run for real.
"""

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import requests

from qrq import alerts
from qrq.appdb.db import app_db, open_app_db
from qrq.appdb.models import User
from qrq.cli import main
from qrq.config import load_settings
from qrq.demo import create_templates
from qrq.queue import huey, jobs, stats, submit
from qrq.web import create_app
from tests import slow_tasks
from tests.clusters import Cluster
from tests.conftest import ROOT, Consumer, free_port, wait_until
from tests.hosts import Network, can_make_hosts
from tests.s3 import AWS_ENV, S3Server

pytestmark = pytest.mark.slow
SLOW_TASKS = {"QRQ_TASK_MODULES": "tests.slow_tasks"}


def job(job_id):
    return jobs.get(huey.storage, job_id)


def ran_on(job_id, proc):
    """Whether *job_id*'s last run was on the consumer process *proc*."""
    return f":{proc.pid}:" in (job(job_id)["worker"] or "")


# -- host roles -------------------------------------------------------------------------

def test_each_consumer_takes_only_its_hosts_job_types(consumer):
    analytics = [submit(slow_tasks.long_analytics, 2, 0.01, owner_id=None) for _ in range(3)]
    maintenance = [submit(slow_tasks.steps, 2, 0.01, owner_id=None) for _ in range(3)]
    pdfs = [submit(slow_tasks.noop, owner_id=None) for _ in range(3)]
    scans = consumer(workers=2, extra_env={**SLOW_TASKS,
                                           "QRQ_WORKER_JOB_TYPES": "analytics,maintenance"})
    web = consumer(workers=2, extra_env={**SLOW_TASKS,
                                         "QRQ_WORKER_EXCLUDE_JOB_TYPES": "analytics,maintenance"})
    everything = analytics + maintenance + pdfs
    wait_until(lambda: all(job(i)["status"] == "finished" for i in everything), timeout=90,
               message="every job to finish")
    assert all(ran_on(i, scans.proc) for i in analytics + maintenance)
    assert all(ran_on(i, web.proc) for i in pdfs)
    # A consumer's workers may run jobs before its row is written: wait for both rows.
    rows = wait_until(lambda: (found := {c["pid"]: c for c in stats.consumers(huey.storage)})
                      .keys() >= {scans.proc.pid, web.proc.pid} and found, timeout=30,
                      message="both consumers' rows")
    assert rows[scans.proc.pid]["job_types"] == ["analytics", "maintenance"]
    assert rows[scans.proc.pid]["exclude_job_types"] == []
    assert rows[web.proc.pid]["job_types"] == []
    assert rows[web.proc.pid]["exclude_job_types"] == ["analytics", "maintenance"]


def test_a_job_type_no_live_consumer_takes_raises_an_alert(settings):
    consumer = huey.create_consumer(workers=1, worker_type="thread")
    storage = huey.storage
    storage.accept_types, storage.exclude_types = ("pdf", "maintenance"), ("maintenance",)
    try:
        consumer._register()
        submit(slow_tasks.noop, owner_id=None)
        assert "unserved_type" not in [a["kind"] for a in alerts.evaluate(storage, settings)]
        submit(slow_tasks.long_analytics, 1, 0.01, owner_id=None)
        submit(slow_tasks.steps, 1, 0.01, owner_id=None)
        found = {a["kind"]: a for a in alerts.evaluate(storage, settings)}
        assert found["unserved_type"]["types"] == ["analytics", "maintenance"]
        assert "no running consumer takes" in found["unserved_type"]["message"]
        # A consumer without a role takes every type: nothing is unserved then.
        storage.accept_types = storage.exclude_types = ()
        huey.create_consumer(workers=1, worker_type="thread")._register()
        assert "unserved_type" not in [a["kind"] for a in alerts.evaluate(storage, settings)]
    finally:
        storage.accept_types = storage.exclude_types = ()


def test_qrq_status_and_the_api_show_each_consumers_role_and_a_gone_one(runner, client,
                                                                        make_user, settings):
    storage = huey.storage
    storage.accept_types, storage.exclude_types = ("analytics", "maintenance"), ()
    try:
        huey.create_consumer(workers=1, worker_type="thread")._register()
    finally:
        storage.accept_types = storage.exclude_types = ()
    storage.sql("update consumer set heartbeat_at = ?", (time.time() - 3600,), commit=True)
    storage.exclude_types = ("analytics",)
    try:
        huey.create_consumer(workers=2, worker_type="thread")._register()
    finally:
        storage.exclude_types = ()
    _, headers = make_user("root", admin=True)
    listed = client.get("/api/admin/queue-status", headers=headers).get_json()["consumers"]
    lines = [line for line in runner.invoke(main, ["status"]).output.splitlines()
             if line.startswith("consumer ")]
    for consumer in listed:
        lines = [line.replace(consumer["id"], "ID") for line in lines]
    assert sorted(line.split(", heartbeat")[0] for line in lines) == [
        "consumer ID (gone: no heartbeat): 1 workers (only analytics, maintenance)",
        "consumer ID: 2 workers (all types except analytics)"], lines
    assert sorted((c["alive"], c["job_types"], c["exclude_job_types"]) for c in listed) == [
        (False, ["analytics", "maintenance"], []), (True, [], ["analytics"])]


def test_a_job_left_running_by_a_stopped_consumer_of_its_type_raises_an_alert(settings):
    # The host that ran pdf jobs died mid-job; the host still running takes analytics
    # only, so the job would sit "running" until a pdf host starts: say so.
    from qrq.cli.jobs import consumer_missing

    storage = huey.storage
    job_id = submit(slow_tasks.noop, owner_id=None)
    assert huey.dequeue() is not None  # leased, as by the host that died
    storage.sql("update task set lease_until = ? where job_id = ?", (time.time() - 60, job_id),
                commit=True)
    storage.accept_types = ("analytics",)
    try:
        huey.create_consumer(workers=1, worker_type="thread")._register()
        assert stats.lapsed_types(storage) == {"pdf"}
        found = {a["kind"]: a for a in alerts.evaluate(storage, settings)}
        assert found["unserved_type"]["types"] == ["pdf"]
        assert "left running by a consumer that stopped" in found["unserved_type"]["message"]
        # `--wait` on such a job says so too, instead of waiting without a word.
        assert consumer_missing(huey, "pdf").startswith("no running consumer takes pdf jobs")
        assert consumer_missing(huey, "analytics") is None
    finally:
        storage.accept_types = ()


def test_caps_stay_global_across_hosts_with_roles(consumer):
    env = {**SLOW_TASKS, "QRQ_TYPE_CAPS": "analytics=1", "QRQ_LONG_JOB_CAP": "1"}
    ids = [submit(slow_tasks.long_analytics, 15, 0.05, owner_id=None) for _ in range(3)]
    consumer(workers=2, extra_env={**env, "QRQ_WORKER_JOB_TYPES": "analytics"})
    consumer(workers=2, extra_env={**env, "QRQ_WORKER_EXCLUDE_JOB_TYPES": "pdf"})
    most, deadline = 0, time.monotonic() + 90
    while not all(job(i)["status"] == "finished" for i in ids):
        assert time.monotonic() < deadline, "the capped jobs did not finish"
        most = max(most, running(ids))
        time.sleep(0.02)  # sampling, not synchronisation
    assert most == 1


def running(ids) -> int:
    """How many of *ids* are running, in one statement: one snapshot. (Reading them one
    by one can see a job before its end and the next after its start, both running.)"""
    marks = ", ".join("?" * len(ids))
    return huey.storage.sql(f"select count(*) from job where status = 'running' and id in "
                            f"({marks})", tuple(ids), results=True)[0][0]


def test_worker_command_rejects_unknown_job_types(runner, settings):
    # Checked once the task modules are loaded (a custom type of theirs is known:
    # tests/test_dev.py), before the consumer starts.
    qrq = str(Path(sys.executable).parent / "qrq")
    env = {**os.environ, "QRQ_DATA_DIR": str(settings.data_dir)}
    done = subprocess.run([qrq, "worker", "--types", "analytics,backup"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "unknown job type 'backup'" in done.stderr
    assert "known: analytics, batch, mail, maintenance, pdf, webhook" in done.stderr
    result = runner.invoke(main, ["worker", "--exclude-types", " , "])
    assert result.exit_code == 2 and "give one or more job types" in result.output


def test_qrq_worker_types_reach_the_consumers_row(settings):
    """``qrq worker --types`` as a process: its row says what it takes."""
    proc = Consumer(settings, workers=1)
    proc.start = lambda: _start_qrq_worker(proc, ["--types", "pdf,mail",
                                                  "--exclude-types", "mail"])
    proc.start()
    try:
        row = wait_until(lambda: next((c for c in stats.consumers(huey.storage)
                                       if c["pid"] == proc.proc.pid), None), timeout=60,
                         message="the worker's consumer row")
        assert (row["job_types"], row["exclude_job_types"]) == (["pdf", "mail"], ["mail"])
    finally:
        proc.stop()


def _start_qrq_worker(proc, args):
    with open(proc.log, "ab") as log:
        proc.proc = subprocess.Popen([sys.executable, "-m", "qrq", "worker", "-w", "1", *args],
                                     cwd=ROOT, env=proc.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def test_consumers_page_shows_each_hosts_job_types(client, make_user, settings):
    _, headers = make_user("root", admin=True)
    token = headers["Authorization"].split(" ", 1)[1]
    page = client.get("/admin/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert client.post("/admin/login", data={"name": "root", "token": token,
                                             "csrf_token": csrf}).status_code == 302
    storage = huey.storage
    storage.accept_types = ("analytics",)
    try:
        huey.create_consumer(workers=1, worker_type="thread")._register()
    finally:
        storage.accept_types = ()
    storage.exclude_types = ("pdf",)
    try:
        huey.create_consumer(workers=1, worker_type="thread")._register()
    finally:
        storage.exclude_types = ()
    for url in ("/admin/consumers", "/admin/consumers.json"):
        text = client.get(url).get_data(as_text=True)
        assert "only analytics" in text and "all, except pdf" in text, url


# -- separate hosts -----------------------------------------------------------------------

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class LocalHost:
    """A "host" that is only a process group here (no root: no namespaces). Unplugging
    it stops its processes (SIGSTOP) instead of its link."""

    gateway = "127.0.0.1"

    def __init__(self, name: str):
        self.name = name
        self.procs: list[subprocess.Popen] = []

    def popen(self, argv, **kwargs):
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def disconnect(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGSTOP)

    def reconnect(self):
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)


class Site:
    """PostgreSQL on this host, worker hosts each with a data directory of its own
    (hidden from the others), and every process started on them."""

    def __init__(self, tmp_path: Path, names: tuple[str, ...]):
        self.tmp_path = tmp_path
        self.secret = secrets.token_urlsafe(32)  # the one QRQ_SECRET_KEY of every host
        self.dirs = {name: tmp_path / f"host-{name}" for name in names}
        for path in self.dirs.values():
            path.mkdir(mode=0o700)
        own = tmp_path / "db-host"  # this host's data directory
        own.mkdir(mode=0o700)
        self.network = None
        if can_make_hosts():
            self.network = Network()
            self.hosts = {name: self.network.host(name, hidden=(
                own, *(d for other, d in self.dirs.items() if other != name)))
                for name in names}
            listen = ",".join(["127.0.0.1", *self.network.gateways])
        else:
            self.hosts = {name: LocalHost(name) for name in names}
            listen = "127.0.0.1"
        try:
            self.cluster = Cluster(listen=listen)
        except BaseException:  # no PostgreSQL: fails under CI, else skips
            self.close()
            raise
        self.url = self.cluster.url
        self.own_dir = own
        self.procs: list[subprocess.Popen] = []

    def env(self, name: str, **extra) -> dict[str, str]:
        host = self.hosts[name]
        return {**os.environ, "QRQ_DATA_DIR": str(self.dirs[name]),
                "QRQ_DATABASE_URL": self.url.replace("127.0.0.1", host.gateway),
                "QRQ_SECRET_KEY": self.secret, "QRQ_LEASE_SECONDS": "3", **SLOW_TASKS,
                **extra}

    def start(self, name: str, argv: list[str], clock_offset: str = "", **env):
        """Run *argv* on host *name* in a process group of its own; *clock_offset*
        (libfaketime's, e.g. ``-5m``) skews its clock."""
        env = self.env(name, **env)
        if clock_offset:
            env.update(LD_PRELOAD=str(FAKETIME), FAKETIME=clock_offset,
                       DONT_FAKE_MONOTONIC="1", PYTHONPATH=str(ROOT / "tests" / "faketime"))
        log = self.tmp_path / f"{name}-{len(self.procs)}.log"
        with open(log, "ab") as out:
            proc = self.hosts[name].popen(argv, cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = log
        self.procs.append(proc)
        return proc

    def consumer(self, name: str, workers: int = 2, clock_offset: str = ""):
        return self.start(name, [str(Path(sys.executable).parent / "huey_consumer"),
                                 "huey_app.huey", "-w", str(workers), "-k", "process",
                                 "-n", "-g", "TERM"], clock_offset)

    def close(self) -> None:
        for proc in getattr(self, "procs", ()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
        if getattr(self, "cluster", None) is not None:
            self.cluster.close()
        if self.network is not None:
            self.network.close()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Two worker hosts, A and B, and PostgreSQL on this (the database) host; this test
    process submits as a web host would."""
    if not can_make_hosts():
        if os.environ.get("CI"):
            pytest.fail("the multi-host tests must run in network namespaces under CI "
                        "(root and iproute2's ip are needed)")
    built = Site(tmp_path, ("a", "b"))
    monkeypatch.setenv("QRQ_DATA_DIR", str(built.own_dir))
    monkeypatch.setenv("QRQ_DATABASE_URL", built.url)
    monkeypatch.setenv("QRQ_SECRET_KEY", built.secret)
    huey.init(load_settings(lease_seconds=3.0))
    yield built
    huey.storage.dispose()
    built.close()


def separate(site) -> str:
    """How separate the hosts of this run are (for the failure messages)."""
    return "network namespaces" if site.network else "plain processes (not root)"


def test_hosts_are_really_separate_when_root(site):
    if site.network is None:
        pytest.skip("not root: the hosts are plain processes with separate data "
                    "directories, not network namespaces")
    (site.dirs["a"] / "only-a").write_text("a's file")
    look = site.hosts["b"].run(["ls", "-A", str(site.dirs["a"])], capture_output=True,
                               text=True)
    assert look.returncode == 0 and look.stdout == ""


def test_a_worker_host_with_another_key_is_refused_even_on_an_empty_queue(site):
    # The queue recorded its key when this host (the web host) opened it. Host B was
    # set up with a key of its own: it used to start, take the jobs queued later with
    # the right key and fail every one of them ("payload signature mismatch").
    argv = [str(Path(sys.executable).parent / "huey_consumer"), "huey_app.huey", "-w", "1"]
    wrong = site.start("b", argv, QRQ_SECRET_KEY=secrets.token_urlsafe(32))
    assert wrong.wait(timeout=60) == 1
    said = wrong.log.read_text()
    assert "is not this queue's" in said and "qrq key adopt" in said, said
    assert "Traceback" not in said
    site.consumer("a")
    ids = [submit(slow_tasks.noop, owner_id=None) for _ in range(3)]
    wait_until(lambda: all(job(i)["status"] == "finished" for i in ids), timeout=60,
               message=f"host A to run the jobs ({separate(site)})")


def test_killing_every_process_of_a_worker_host_reruns_its_jobs_on_the_other(site):
    ids = [submit(slow_tasks.steps, 20, 0.1, owner_id=None) for _ in range(4)]
    on_a = site.consumer("a")
    wait_until(lambda: any(ran_on(i, on_a) and job(i)["progress"] > 0 for i in ids),
               timeout=90, message=f"a job mid-run on host A ({separate(site)})")
    site.consumer("b")
    os.killpg(on_a.pid, signal.SIGKILL)  # the consumer and its workers: the host died
    on_a.wait(timeout=60)
    killed = [i for i in ids if ran_on(i, on_a) and job(i)["status"] == "running"]
    assert killed, [job(i) for i in ids]
    wait_until(lambda: all(job(i)["status"] == "finished" for i in ids), timeout=120,
               message="every job to finish on host B")
    for job_id in killed:
        record = job(job_id)
        assert not ran_on(job_id, on_a) and record["attempts"] == 2, record
        assert record["progress"] == 100


def test_a_cut_off_host_with_a_skewed_clock_cannot_finish_a_job_taken_over(site):
    if not FAKETIME.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{FAKETIME} is missing: apt-get install faketime")
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    job_id = submit(slow_tasks.steps, 50, 0.2, owner_id=None)
    on_a = site.consumer("a", workers=1, clock_offset="-5m")
    wait_until(lambda: ran_on(job_id, on_a) and job(job_id)["progress"] > 0, timeout=90,
               message="the job mid-run on host A")
    row = next(c for c in stats.consumers(huey.storage) if c["pid"] == on_a.pid)
    assert row["heartbeat_age"] > 200  # A's clock really is minutes behind
    site.hosts["a"].disconnect()
    on_b = site.consumer("b", workers=1)
    taken = wait_until(lambda: ran_on(job_id, on_b) and job(job_id), timeout=90,
                       message="host B to take the job over once A's lease lapsed")
    assert taken["attempts"] == 2
    site.hosts["a"].reconnect()
    wait_until(lambda: "lost its lease" in on_a.log.read_text(errors="replace"),
               timeout=120, message="host A to try to finish the job it lost")
    record = wait_until(lambda: (r := job(job_id))["status"] == "finished" and r,
                        timeout=120, message="host B to finish the job")
    assert ran_on(job_id, on_b) and record["attempts"] == 2, record
    assert "Traceback" not in on_a.log.read_text(errors="replace")


def test_a_pdf_made_on_a_worker_host_is_downloaded_from_the_shared_s3_store(
        site, monkeypatch, tmp_path):
    # The S3 server listens on host A's link only; host B (the worker) reaches it over
    # its own link, and this process (the web host) downloads through a presigned URL.
    s3 = S3Server(tmp_path / "moto.log", address=site.hosts["a"].gateway).start()
    try:
        bucket = s3.make_bucket()
        for name, value in {**AWS_ENV, "QRQ_ARTIFACT_STORE": f"s3://{bucket}/out",
                            "QRQ_S3_ENDPOINT_URL": s3.endpoint}.items():
            monkeypatch.setenv(name, value)
        settings = load_settings(lease_seconds=3.0)
        huey.init(settings)
        open_app_db(settings)
        with app_db.connection_context():
            create_templates()
            _, token = User.create_with_token("alice")
        client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
        headers = {"Authorization": f"Bearer {token}"}
        worker = site.consumer("b", workers=1)
        job_id = client.post("/api/generate-qr-pdf", json={"template_id": 2},
                             headers=headers).get_json()["job_id"]
        record = wait_until(lambda: (r := job(job_id))["status"] in ("finished", "failed")
                            and r, timeout=120, message=f"the PDF job ({separate(site)})")
        assert record["status"] == "finished", (record, worker.log.read_text())
        assert ran_on(job_id, worker)
        assert not list(site.dirs["b"].rglob("*.pdf"))  # nothing of it stays on host B

        answer = client.get(f"/api/jobs/{job_id}/download", headers=headers)
        assert answer.status_code == 302, answer.get_data(as_text=True)
        with urllib.request.urlopen(answer.headers["Location"], timeout=30) as download:
            body = download.read()
        view = client.get(f"/api/jobs/{job_id}", headers=headers).get_json()
        assert body.startswith(b"%PDF") and len(body) == view["result"]["bytes"]
    finally:
        s3.stop()


# -- web hosts are interchangeable ---------------------------------------------------------

def _qrq(env, *args) -> str:
    done = subprocess.run([sys.executable, "-m", "qrq", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def web_hosts(tmp_path, pg_url):
    """Two ``qrq serve`` processes, each with a data directory of its own, on one
    PostgreSQL database and one secret key: web hosts behind a load balancer."""
    secret = secrets.token_urlsafe(32)
    envs, procs, bases = [], [], []
    for name in ("web-a", "web-b"):
        data = tmp_path / name
        envs.append({**os.environ, "QRQ_DATA_DIR": str(data), "QRQ_DATABASE_URL": pg_url,
                     "QRQ_SECRET_KEY": secret, "QRQ_MAX_ACTIVE_JOBS": "2"})
    _qrq(envs[0], "init", "--demo")
    # Users, sessions and the throttle live in PostgreSQL, so the hosts share them.
    assert not (tmp_path / "web-a" / "app.db").exists()
    for env in envs:
        port = free_port()
        log = open(tmp_path / f"serve-{port}.log", "ab")  # noqa: SIM115 (closed below)
        procs.append((subprocess.Popen(
            [sys.executable, "-m", "qrq", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True), log))
        bases.append(f"http://127.0.0.1:{port}")
    for base in bases:
        wait_until(lambda base=base: _answers(base), timeout=60, message=f"{base} to answer")
    try:
        yield envs, bases
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()


def _answers(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=2).status_code < 500
    except requests.ConnectionError:
        return False


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_a_login_csrf_token_idempotency_key_quota_and_throttle_hold_across_web_hosts(
        web_hosts):
    envs, (web_a, web_b) = web_hosts
    root = _qrq(envs[0], "users", "create", "root", "--admin").strip().splitlines()[-1]
    alice = _qrq(envs[1], "users", "create", "alice").strip().splitlines()[-1]
    # One browser behind a load balancer: its requests reach either host.
    browser = requests.Session()
    form = browser.get(f"{web_a}/admin/login", timeout=10)
    logged_in = browser.post(f"{web_b}/admin/login", allow_redirects=False, timeout=10,
                             data={"name": "root", "token": root, "csrf_token": _csrf(form.text)})
    assert logged_in.status_code == 302, logged_in.text  # A's CSRF token, honoured by B
    overview = browser.get(f"{web_a}/admin/", allow_redirects=False, timeout=10)
    assert overview.status_code == 200  # B's login, honoured by A
    logged_out = browser.post(f"{web_a}/admin/logout", allow_redirects=False, timeout=10,
                              data={"csrf_token": _csrf(
                                  browser.get(f"{web_b}/admin/", timeout=10).text)})
    assert logged_out.status_code == 302
    assert browser.get(f"{web_b}/admin/", allow_redirects=False,
                       timeout=10).status_code == 302  # A's logout, honoured by B

    api = {"Authorization": f"Bearer {alice}"}
    body = {"template_id": 1}
    first = requests.post(f"{web_a}/api/generate-qr-pdf", json=body, timeout=10,
                          headers={**api, "Idempotency-Key": "order-1"})
    again = requests.post(f"{web_b}/api/generate-qr-pdf", json=body, timeout=10,
                          headers={**api, "Idempotency-Key": "order-1"})
    assert first.status_code == 202, first.text
    assert again.json()["job_id"] == first.json()["job_id"]  # A's key, honoured by B
    second = requests.post(f"{web_b}/api/generate-qr-pdf", json=body, headers=api, timeout=10)
    assert second.status_code == 202, second.text
    third = requests.post(f"{web_a}/api/generate-qr-pdf", json=body, headers=api, timeout=10)
    assert third.status_code == 429  # the quota of 2 counts the jobs made on both hosts
    assert third.json()["error"]["code"] == "too_many_jobs"

    bad = {"Authorization": "Bearer not-a-token"}
    statuses = [requests.get(f"{(web_a, web_b)[n % 2]}/api/jobs", headers=bad,
                             timeout=10).status_code for n in range(12)]
    # Ten failures in the window, five on each host, block the address on both.
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429], statuses

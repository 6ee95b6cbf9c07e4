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

import re
import subprocess
import sys
import time

import pytest

from qrq import alerts
from qrq.cli import main
from qrq.queue import huey, jobs, stats, submit
from tests import slow_tasks
from tests.conftest import ROOT, Consumer, wait_until

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
    rows = {c["pid"]: c for c in stats.consumers(huey.storage)}
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


def test_caps_stay_global_across_hosts_with_roles(consumer):
    env = {**SLOW_TASKS, "QRQ_TYPE_CAPS": "analytics=1", "QRQ_LONG_JOB_CAP": "1"}
    ids = [submit(slow_tasks.long_analytics, 15, 0.05, owner_id=None) for _ in range(3)]
    consumer(workers=2, extra_env={**env, "QRQ_WORKER_JOB_TYPES": "analytics"})
    consumer(workers=2, extra_env={**env, "QRQ_WORKER_EXCLUDE_JOB_TYPES": "pdf"})
    most, deadline = 0, time.monotonic() + 90
    while not all(job(i)["status"] == "finished" for i in ids):
        assert time.monotonic() < deadline, "the capped jobs did not finish"
        most = max(most, [job(i)["status"] for i in ids].count("running"))
        time.sleep(0.02)  # sampling, not synchronisation
    assert most == 1


def test_worker_command_rejects_unknown_job_types(runner):
    result = runner.invoke(main, ["worker", "--types", "analytics,backup"])
    assert result.exit_code == 2
    assert "unknown job type 'backup'" in result.output
    assert "known: analytics, batch, mail, maintenance, pdf, webhook" in result.output
    result = runner.invoke(main, ["worker", "--exclude-types", " , "])
    assert result.exit_code == 2 and "unknown job type" in result.output


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

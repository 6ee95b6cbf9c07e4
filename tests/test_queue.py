"""Tasks through the real SQLite storage: enqueue, dequeue (unpickle, check the
signature), execute, and the job record each step leaves."""

import ast
import dataclasses
import datetime
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qrq.errors import Conflict, Unavailable, ValidationError
from qrq.queue import catalog, huey, job_task, jobs, progress, signing, submit
from tests.conftest import wait_until

calls = []


@job_task("maintenance", name="test.flaky", retries=2, retry_delay=0.01)
def flaky(fail_times, task=None):
    calls.append(task.id)
    if len(calls) <= fail_times:
        raise sqlite3.OperationalError("database is locked")
    progress(task, 50, "half way")
    return {"attempt": len(calls)}


@job_task("maintenance", name="test.bad_input", retries=3, retry_delay=0.01)
def bad_input(task=None):
    raise ValidationError("no such thing", field="thing")


@job_task("maintenance", name="test.database_away", retries=2, retry_delay=0.01)
def database_away(task=None):
    calls.append(task.id)
    if len(calls) == 1:
        raise Unavailable("the queue database ended a transaction: deadlock detected")
    return {"attempt": len(calls)}


@job_task("maintenance", name="test.returns_none")
def returns_none(task=None):
    return None


@pytest.fixture(autouse=True)
def _reset(settings):
    calls.clear()


def run_next():
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    return task


def run_due_retry(job_id, timeout=5.0):
    """Move the retry from the schedule to the queue once due, then run it."""
    deadline = time.monotonic() + timeout
    while not huey.storage.queue_size():
        for task in huey.read_schedule():
            huey.enqueue(task)
        assert time.monotonic() < deadline, "retry never came due"
        time.sleep(0.01)
    run_next()
    return jobs.get(huey.storage, job_id)


def test_enqueue_writes_the_record_atomically(settings):
    job_id = submit(flaky, 0, owner_id=7, params={"n": 0})
    job = jobs.get(huey.storage, job_id)
    assert (job["status"], job["owner_id"], job["type"], job["attempts"]) == (
        "queued", 7, "maintenance", 0)
    assert huey.storage.queue_size() == 1


def test_transient_errors_retry_with_backoff_then_finish(settings):
    job_id = submit(flaky, 1, owner_id=None)
    before = time.time()
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "retrying"
    assert job["error"] == "OperationalError: database is locked"
    assert job["next_attempt_at"] >= before
    job = run_due_retry(job_id)
    assert (job["status"], job["attempts"]) == ("finished", 2)
    assert jobs.public_view(job)["result"] == {"attempt": 2}
    assert huey.storage.queue_size() == 0 and huey.scheduled_count() == 0


def test_retries_run_out_into_a_visible_failure(settings):
    job_id = submit(flaky, 99, owner_id=None)
    run_next()
    run_due_retry(job_id)
    job = run_due_retry(job_id)
    assert (job["status"], job["attempts"]) == ("failed", 3)
    assert "database is locked" in job["error"]
    assert "Traceback" in job["traceback"]


def test_a_database_out_of_reach_is_retried_not_failed(settings):
    # Unavailable is a 503 for the web and transient for a job: a deadlock the server
    # broke, or a moment without the database, is not the job's input at fault.
    job_id = submit(database_away, owner_id=None)
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "retrying" and "deadlock detected" in job["error"]
    assert run_due_retry(job_id)["status"] == "finished"


def test_bad_input_fails_at_once_without_retry(settings):
    job_id = submit(bad_input, owner_id=None)
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert (job["status"], job["attempts"], job["error"]) == ("failed", 1, "no such thing")
    assert huey.scheduled_count() == 0 and huey.storage.queue_size() == 0


def test_a_task_returning_none_ends_finished(settings):
    job_id = submit(returns_none, owner_id=None)
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "finished" and job["result"] is None


def test_a_job_not_started_in_time_expires(settings):
    job_id = submit(returns_none, owner_id=None, expires=0.01)
    time.sleep(0.05)  # let the expiry pass; nothing is awaited here
    run_next()
    assert jobs.get(huey.storage, job_id)["status"] == "expired"


def test_cancel_while_running_stops_at_the_next_progress_call(settings):
    job_id = submit(flaky, 0, owner_id=None)
    task = huey.dequeue()
    assert huey.cancel(job_id) == "running"
    huey.execute(task)
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "canceled" and job["result"] is None


def test_a_payload_signed_with_another_secret_is_refused(settings):
    from huey.serializer import SignedSerializer

    job_id = submit(returns_none, owner_id=None)
    forged = huey.serialize_task(returns_none.s())
    huey.storage.sql("update task set data = ? where job_id = ?",
                     (SignedSerializer(secret="attacker").serialize(
                         huey.serializer.deserialize(forged)), job_id), commit=True)
    assert huey.dequeue() is None
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "failed" and "signature" in job["error"]
    assert huey.storage.backlog() == 0


def test_cancel_while_waiting_for_a_retry_is_immediate(settings):
    job_id = submit(flaky, 5, owner_id=None)
    run_next()
    assert jobs.get(huey.storage, job_id)["status"] == "retrying"
    assert huey.cancel(job_id) == "canceled"
    assert huey.scheduled_count() == 0 and huey.storage.queue_size() == 0


def test_due_retries_move_to_the_queue_in_one_step(settings):
    job_id = submit(flaky, 1, owner_id=None)
    run_next()
    handed_over = []

    def moved():
        handed_over.extend(huey.read_schedule())
        return huey.storage.queue_size()

    wait_until(moved, timeout=5, message="the retry to come due")
    assert handed_over == []  # nothing left for huey's scheduler to re-enqueue: it moved
    assert huey.scheduled_count() == 0
    run_next()
    assert jobs.get(huey.storage, job_id)["status"] == "finished"


@job_task("maintenance", name="test.odd_result")
def odd_result(task=None):
    import datetime

    return {"when": datetime.date(2026, 1, 2)}


def test_a_result_json_cannot_hold_is_stored_as_text(settings):
    job_id = submit(odd_result, owner_id=None)
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "finished"
    assert jobs.public_view(job)["result"] == {"when": "2026-01-02"}


def test_a_delayed_job_waits_in_the_schedule_as_queued(settings):
    job_id = submit(returns_none, owner_id=None, delay=3600)
    assert huey.storage.queue_size() == 0 and huey.scheduled_count() == 1
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    assert huey.cancel(job_id) == "canceled" and huey.scheduled_count() == 0


# -- deferred initialisation, submit by name, one-way dependencies ----------------------

ROOT = Path(__file__).resolve().parent.parent


def test_importing_the_queue_and_a_task_module_creates_no_file(tmp_path, settings):
    """Nothing is created until the queue is initialised, and a task's limits come from
    the settings it is initialised with, not from those at import. (With the key of
    the queue the fixture opened: on PostgreSQL they share it.)"""
    data = tmp_path / "absent"
    script = (
        "import os, pathlib, qrq.queue, tasks.pdf\n"
        "from qrq.queue import huey, QueueNotInitialised\n"
        "data = pathlib.Path(os.environ['QRQ_DATA_DIR'])\n"
        "assert not data.exists(), sorted(data.rglob('*'))\n"
        "try:\n"
        "    huey.storage.queue_size()\n"
        "except QueueNotInitialised as exc:\n"
        "    assert 'huey.init(settings)' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('usable before init')\n"
        "from qrq.config import load_settings\n"
        "huey.init(load_settings(pdf_timeout=7))\n"
        "task = tasks.pdf.generate_qr_pdf.s(1, {})\n"
        "print(task.timeout, task.retries, data.exists())\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "QRQ_DATA_DIR": str(data),
                                         "QRQ_PDF_RETRIES": "4",
                                         "QRQ_SECRET_KEY": settings.secret_key})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["7", "4", "True"]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_qrq_imports_neither_the_task_modules_nor_huey_app():
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imported_modules(path)
                                            if name.split(".")[0] in ("tasks", "huey_app", "web"))
        for path in (ROOT / "qrq").rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_built_package_holds_only_qrq(tmp_path):
    """A non-editable install gets ``qrq`` alone: no top-level ``web``, ``huey_app`` or
    ``tasks`` (build_py makes exactly what a wheel's purelib holds)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "huey_app.py", "web.py"):
        shutil.copy(ROOT / name, source / name)
    for name in ("qrq", "tasks"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q",
                    "build_py", "-d", str(tmp_path / "built")], cwd=source, check=True,
                   capture_output=True)
    assert sorted(p.name for p in (tmp_path / "built").iterdir()) == ["qrq"]


def test_every_qrq_task_is_registered_as_the_catalog_declares_it(settings):
    import huey_app  # noqa: F401  (registers the tasks, as the consumer does)

    for name, spec in {**catalog.TASKS, **catalog.PERIODIC}.items():
        registered = huey.registered_class(f"qrq.{name}")
        assert registered.__name__ == name
        assert getattr(registered, "job_type", None) == spec.job_type
        assert registered.default_priority == spec.effective_priority
        assert registered.default_timeout == spec.limits(settings)["timeout"]
    registered = {task.name for task in huey.periodic_tasks()}
    assert set(catalog.PERIODIC) <= registered
    for task in catalog.periodic_tasks(settings):  # the dashboard's list
        assert task.priority == catalog.PERIODIC[task.name].effective_priority


def test_a_job_submitted_by_name_runs_with_the_registered_task_defaults(settings, templates):
    job_id = submit("pdf.generate", 1, {}, owner_id=3, params={"template_id": 1})
    task = huey.dequeue()
    assert task.id == job_id and task.name == "pdf.generate"
    assert (task.timeout, task.retries, task.priority) == (
        settings.pdf_timeout, settings.pdf_retries, catalog.PRIORITY["pdf"])
    assert task.expires == settings.job_expiry and task.expires_resolved is not None
    huey.execute(task)
    job = jobs.get(huey.storage, job_id)
    assert (job["status"], job["type"], job["owner_id"]) == ("finished", "pdf", 3)


def test_an_unknown_task_name_is_refused(settings):
    with pytest.raises(ValueError, match="unknown task 'pdf.generat'"):
        submit("pdf.generat", owner_id=None)


def test_the_schedule_is_readable_without_the_task_modules(settings):
    """The web app lists scheduled jobs of tasks it never imported."""
    from huey.registry import Message

    message = Message(id="5f0e4c1e-0000-4000-8000-000000000000", name="qrq.elsewhere.only",
                      args=(), kwargs={}, retries=2)
    huey.storage.add_to_schedule(huey.serializer.serialize(message),
                                 datetime.datetime(2100, 1, 1))
    [task] = huey.scheduled()
    assert (task.id, task.name, task.retries) == (message.id, "elsewhere.only", 2)


# -- retry of a job whose payload cannot be read ----------------------------------------

def test_retry_of_a_payload_signed_with_another_secret_is_a_conflict(settings):
    """After a secret rotation a failed job's stored payload no longer verifies: the
    retry is refused with a reason (409), and the job stays as it was."""
    job_id = submit(bad_input, owner_id=None)
    run_next()
    assert jobs.get(huey.storage, job_id)["status"] == "failed"
    huey.init(dataclasses.replace(settings, secret_key="rotated-" + "x" * 32), key_check=False)
    signing.adopt(huey.storage, huey.serializer)  # qrq key adopt
    with pytest.raises(Conflict, match="signature does not match") as caught:
        huey.retry(job_id)
    assert caught.value.status == 409
    assert jobs.get(huey.storage, job_id)["status"] == "failed"
    assert huey.storage.backlog() == 0


def forget_key():
    """As a queue made before its key was recorded."""
    huey.storage.sql("delete from queue_key", commit=True)


def test_a_key_other_than_the_queues_is_refused_even_when_no_job_waits(settings):
    # The first process recorded its key. A host configured with another one (a new
    # QRQ_SECRET_KEY, or its own secret.key) would fail the jobs it takes, and the jobs
    # it queues would fail on the other hosts.
    assert huey.storage.backlog() == 0
    mine = signing.recorded(huey.storage)
    assert mine["fingerprint"] == signing.fingerprint(settings.secret_key)
    assert mine["host"] and abs(mine["recorded_at"] - time.time()) < 600
    other = dataclasses.replace(settings, secret_key="another-" + "k" * 32)
    with pytest.raises(signing.WrongKey, match=r"is not this queue's \(fingerprint "
                       + mine["fingerprint"] + r", recorded by .*qrq key adopt") as caught:
        huey.init(other)
    assert caught.value.status == 409
    huey.init(settings)
    job_id = submit(bad_input, owner_id=None)
    # Replaced on purpose (qrq key adopt), the new key is the queue's and the old one
    # is refused; the job the old key signed is not lost, it fails when it runs.
    huey.init(other, key_check=False)
    assert signing.adopt(huey.storage, huey.serializer) == mine
    with pytest.raises(signing.WrongKey, match="is not this queue's"):
        huey.init(settings)
    huey.init(other)
    assert huey.dequeue() is None  # refused unread
    assert jobs.get(huey.storage, job_id)["status"] == "failed"
    assert "signature mismatch" in jobs.get(huey.storage, job_id)["error"]


def test_a_process_whose_key_was_replaced_gives_the_jobs_it_reads_back(settings):
    # A consumer started before `qrq key adopt --force` reads a job the new key signed:
    # it fails its check here, but it is not this process's to fail. It goes back
    # unharmed, and this process takes no more (its consumer stops at its heartbeat).
    other = dataclasses.replace(settings, secret_key="another-" + "k" * 32)
    huey.init(other, key_check=False)
    signing.adopt(huey.storage, huey.serializer)
    job_id = submit(bad_input, owner_id=None)  # signed with the new key
    huey.init(settings, key_check=False)  # the old key, as in a process started before
    assert huey.dequeue() is None
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "queued" and not job["error"] and job["attempts"] == 0
    assert huey.storage.sql("select count(*) from task where lease_until is null",
                            results=True) == [(1,)]
    assert huey.dequeue() is None  # takes nothing more
    huey.init(other)
    task = huey.dequeue()
    assert task.id == job_id
    huey.execute(task)
    assert jobs.get(huey.storage, job_id)["attempts"] == 1


def test_after_an_adopt_a_running_consumer_stops_and_healthz_fails_for_the_old_key(
        settings, consumer, client):
    # Processes started before `qrq key adopt --force` keep the old key: a consumer
    # would refuse every job queued with the new one, a web app would queue jobs no
    # consumer can verify. The consumer stops at its next heartbeat; /healthz says so.
    failed = submit(bad_input, owner_id=None)
    run_next()
    running = consumer(workers=1)
    wait_until(lambda: huey.storage.sql("select count(*) from consumer",
                                        results=True)[0][0] == 1, message="registered")
    assert client.get("/healthz").status_code == 200
    adopted = subprocess.run(
        [sys.executable, "-m", "qrq", "key", "adopt", "--yes", "--force"], cwd=ROOT,
        env={**os.environ, "QRQ_DATA_DIR": str(settings.data_dir),
             "QRQ_SECRET_KEY": "another-" + "k" * 32}, capture_output=True, text=True)
    assert adopted.returncode == 0, adopted.stderr
    wait_until(lambda: running.proc.poll() is not None, timeout=60,
               message="the consumer to stop")
    assert "stopping: the secret key in effect" in running.output()
    assert "Traceback" not in running.output()
    answer = client.get("/healthz")
    assert answer.status_code == 503
    assert "signed with another key" in answer.get_json()["error"]["message"]
    # And this process (a web app with the old key) queues nothing no consumer can
    # verify: the client is told to try again (503), no job id handed out.
    huey.key_watch.next_check = 0.0  # as 5 s after this process's last check
    with pytest.raises(Unavailable, match="no longer the queue's"):
        submit(bad_input, owner_id=None)
    with pytest.raises(Unavailable, match="no longer the queue's"):
        huey.retry(failed)  # re-signed with the old key, it would fail again
    assert huey.storage.sql("select id, status from job", results=True) == [(failed, "failed")]


def test_a_key_that_signed_none_of_the_waiting_jobs_is_refused_as_the_queue_opens(settings):
    # An installation whose secret.key signed what waits, started with a new key: every
    # waiting job would fail (payload signature mismatch), so the process refuses. (A
    # queue made before qrq recorded its key: it is checked against what waits.)
    waiting = [submit(bad_input, owner_id=None) for _ in range(3)]
    forget_key()
    with pytest.raises(Conflict, match="did not sign the jobs waiting"):
        huey.init(dataclasses.replace(settings, secret_key="rotated-" + "x" * 32))
    with pytest.raises(Exception, match="init"):
        huey.storage.backlog()  # nothing half-open was left behind
    huey.init(settings)  # the right key opens it again, and is recorded
    assert signing.recorded(huey.storage)["fingerprint"] == signing.fingerprint(
        settings.secret_key)
    assert huey.storage.backlog() == 3
    # A host with another key queued the oldest two: the third, this key's, is enough.
    other = signing.KeySerializer(secret="another-" + "k" * 32, salt="qrq")
    ids = [i for i, in huey.storage.sql("select id from task order by id", results=True)]
    for row in ids[:2]:
        huey.storage.sql("update task set data = ? where id = ?",
                         (other._sign(b"x"), row), commit=True)
    forget_key()
    signing.check_key(huey.storage, huey.serializer)
    forget_key()
    huey.storage.sql("update task set data = ? where id = ?", (other._sign(b"x"), ids[2]),
                     commit=True)
    with pytest.raises(Conflict, match="did not sign the jobs waiting"):
        signing.check_key(huey.storage, huey.serializer)
    huey.storage.sql("delete from task", commit=True)
    signing.check_key(huey.storage, huey.serializer)  # nothing waits, no record: recorded
    assert {jobs.get(huey.storage, j)["status"] for j in waiting} == {"queued"}


def test_retry_of_an_unreadable_payload_is_a_conflict(settings):
    job_id = submit(bad_input, owner_id=None)
    run_next()
    garbage = huey.serializer._sign(b"not a pickle")  # signed, but not a message
    huey.storage.sql("update job set payload = ? where id = ?", (garbage, job_id),
                     commit=True)
    with pytest.raises(Conflict, match="cannot be read"):
        huey.retry(job_id)


def test_retry_runs_a_failed_job_again_in_a_process_without_its_task(settings):
    job_id = submit(bad_input, owner_id=None)
    run_next()
    huey.retry(job_id)
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    task = huey.dequeue()
    assert task.id == job_id and task.retries == 3  # the task's own retries again


def test_webhook_deliveries_are_capped_by_default(settings):
    # A receiver that answers slowly holds a worker up to 60 s an attempt: by default
    # two deliveries run at once, and the third waits, so workers stay free for PDFs.
    import threading

    from tasks.webhook import deliver_webhook

    waiting = [submit(deliver_webhook, f"job-{n}", owner_id=None) for n in range(3)]
    taken = []
    for _ in range(3):  # three workers, each holding what it took
        worker = threading.Thread(target=lambda: taken.append(huey.storage.dequeue()))
        worker.start()
        worker.join()
    assert [data is not None for data in taken] == [True, True, False]
    assert [jobs.get(huey.storage, j)["status"] for j in waiting].count("queued") == 1

"""Tasks through the real SQLite storage: enqueue, dequeue (unpickle, check the
signature), execute, and the job record each step leaves."""

import sqlite3
import time

import pytest

from qrq.errors import ValidationError
from qrq.queue import huey, job_task, jobs, progress, submit
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

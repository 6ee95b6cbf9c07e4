"""A job with a callback gets its delivery queued however it ends (finished, failed,
canceled while queued or while running, expired, refused), exactly once; a job without
one queues none. The statement that records the end tells the end hook whether there is
a callback (issue 18: no lookup per job), so these run through the real storage, on both
databases."""

import datetime
import json

import pytest
from huey.serializer import SignedSerializer

from qrq import webhooks
from qrq.errors import ValidationError
from qrq.queue import huey, job_task, jobs, progress, stats, submit

URL = "https://93.184.215.14/hook"  # never called: the deliveries are only queued here


@job_task("maintenance", name="test.ends.noop")
def noop(task=None):
    return {"ok": True}


@job_task("maintenance", name="test.ends.bad_input", retries=3)
def bad_input(task=None):
    raise ValidationError("no such thing", field="thing")


@job_task("maintenance", name="test.ends.reports")
def reports(task=None):
    progress(task, 50, "half way")  # a cancel asked meanwhile stops the job here


def with_callback(task, **options):
    job_id = submit(task, owner_id=7, **options)
    webhooks.set_target(huey.storage, job_id, 7, URL)
    return job_id


def deliveries():
    """The job ids whose delivery is queued, with the owner and URL each goes to."""
    found, _ = stats.search_jobs(huey.storage, job_type="webhook")
    return [(json.loads(job["params"])["job_id"], job["owner_id"],
             json.loads(job["params"])["callback_url"]) for job in found]


def run_one(job_id):
    task = huey.dequeue()
    assert task is not None and task.id == job_id
    huey.execute(task)
    return jobs.get(huey.storage, job_id)["status"]


def refuse(job_id):
    """Sign the job's queued row with another secret: the dequeue refuses it."""
    message = huey.serializer.deserialize(huey.storage.sql(
        "select data from task where job_id = ?", (job_id,), results=True)[0][0])
    huey.storage.sql("update task set data = ? where job_id = ?", (
        SignedSerializer(secret="attacker").serialize(message), job_id), commit=True)
    assert huey.dequeue() is None
    return jobs.get(huey.storage, job_id)["status"]


def cancel_running(job_id):
    task = huey.dequeue()
    assert huey.cancel(job_id) == "running"
    huey.execute(task)
    return jobs.get(huey.storage, job_id)["status"]


ENDS = {
    "finished": (noop, {}, run_one),
    "failed": (bad_input, {}, run_one),
    "expired": (noop, {"expires": datetime.datetime(2000, 1, 1)}, run_one),
    "canceled while queued": (noop, {}, lambda job_id: huey.cancel(job_id)),
    "canceled while running": (reports, {}, cancel_running),
    "refused": (noop, {}, refuse),
}


@pytest.mark.parametrize("end", ENDS)
def test_every_end_of_a_job_with_a_callback_queues_one_delivery(settings, end):
    task, options, finish = ENDS[end]
    plain = submit(task, owner_id=7, **options)
    job_id = with_callback(task, **options)
    status = {"refused": "failed", "canceled while queued": "canceled",
              "canceled while running": "canceled"}.get(end, end)
    assert finish(plain) == status
    assert deliveries() == []
    assert finish(job_id) == status
    assert deliveries() == [(job_id, 7, URL)]
    # Asking again ends nothing again: no second delivery.
    huey.cancel(job_id)
    assert deliveries() == [(job_id, 7, URL)]


def test_the_end_of_a_delivery_queues_none(settings):
    job_id = with_callback(noop)
    run_one(job_id)
    (delivery,), _ = stats.search_jobs(huey.storage, job_type="webhook")
    webhooks.set_target(huey.storage, delivery["id"], 7, URL)  # never made, but if it were
    assert huey.cancel(delivery["id"]) == "canceled"
    assert [one for one, _, _ in deliveries()] == [job_id]


@pytest.mark.parametrize("fails", [False, True], ids=["finished", "failed"])
def test_a_run_that_lost_its_lease_queues_no_delivery(settings, caplog, fails):
    """Its outcome is dropped (another consumer runs the job now and ends it): only the
    end that is recorded posts, once. (On PostgreSQL a first run that finished ends its
    lease and its job in one statement, one that failed in several: both are fenced.)"""
    job_id = with_callback(bad_input if fails else noop)
    task = huey.dequeue()
    huey.storage.sql("update task set lease_owner = 'another-consumer' where job_id = ?",
                     (job_id,), commit=True)
    huey.execute(task)
    record = jobs.get(huey.storage, job_id)
    assert (record["status"], record["result"], record["error"]) == ("running", None, None)
    assert deliveries() == []
    assert f"job {job_id}: this run lost its lease" in caplog.text
    assert huey.storage.sql("select lease_owner from task where job_id = ?", (job_id,),
                            results=True) == [("another-consumer",)]


def test_the_completion_reads_what_the_end_hooks_need(settings):
    job_id = with_callback(noop)
    plain = submit(noop, owner_id=None)
    assert huey.storage.cancel_queued(job_id) == jobs.EndedJob(
        job_id, "maintenance", "canceled", True)
    assert huey.storage.cancel_queued(job_id) is None  # not waiting any more
    assert huey.dequeue().id == plain
    assert huey.storage.complete(plain, {"status": "finished"}) == [jobs.EndedJob(
        plain, "maintenance", "finished", False)]

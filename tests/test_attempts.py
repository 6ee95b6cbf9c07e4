"""Every attempt of a job is kept (qrq/queue/attempts.py): start, end, worker, outcome and
error, written with the job's state changes; shown by GET /api/jobs/<id> and gone with
the job when retention purges it."""

import datetime
import signal

import pytest

from qrq.artifacts import open_store
from qrq.queue import attempts, huey, jobs, submit
from qrq.queue.retention import purge_jobs
from qrq.web.openapi import SPEC
from tests import retry_tasks, slow_tasks
from tests.conftest import wait_until

TASKS = {"QRQ_TASK_MODULES": "tests.retry_tasks,tests.slow_tasks"}


def history(job_id):
    return attempts.list_attempts(huey.storage, job_id)


def run_next():
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)


def run_until_ended(job_id):
    """Run the job in this process through real storage, retries included, to its end."""
    def step():
        if huey.storage.queue_size():
            run_next()
        else:
            huey.read_schedule()  # a retry moves to the queue once it is due
        return jobs.get(huey.storage, job_id)["status"] in jobs.ENDED
    wait_until(step, timeout=30, message="the job to end")


def test_each_attempt_is_kept_with_its_error_through_real_storage(settings):
    job_id = submit(retry_tasks.fails_then_succeeds, 2, owner_id=None)
    assert history(job_id) == []
    run_until_ended(job_id)
    job = jobs.get(huey.storage, job_id)
    assert (job["status"], job["attempts"], job["error"]) == ("finished", 3, None)
    rows = history(job_id)
    assert [(r["n"], r["outcome"], r["error"]) for r in rows] == [
        (1, "failed", "RuntimeError: attempt 1 failed on purpose"),
        (2, "failed", "RuntimeError: attempt 2 failed on purpose"),
        (3, "finished", None)]
    assert all(r["worker"] == huey.storage.owner for r in rows)
    assert all(r["started_at"] <= r["ended_at"] for r in rows)
    assert rows[0]["ended_at"] <= rows[1]["started_at"] <= rows[2]["started_at"]


def test_a_first_run_that_finishes_writes_no_attempt_row_and_shows_as_one(settings):
    job_id = submit(retry_tasks.fails_then_succeeds, 0, owner_id=None)
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert [tuple(r.values()) for r in history(job_id)] == [
        (1, huey.storage.owner, job["started_at"], job["finished_at"], "finished", None)]
    written = huey.storage.sql("select count(*) from job_attempt", results=True)
    assert written == [(0,)]  # the job row says it all


def test_a_given_back_run_is_kept_as_released_and_a_cancel_while_queued_adds_none(settings):
    job_id = submit(retry_tasks.fails_then_succeeds, 0, owner_id=None)
    assert huey.storage.dequeue() is not None
    assert [r["outcome"] for r in history(job_id)] == [None]  # running
    huey.storage.release(job_id)
    assert [(r["n"], r["outcome"]) for r in history(job_id)] == [(1, "released")]
    assert huey.cancel(job_id) == "canceled"  # canceled while queued: no new attempt
    assert [(r["n"], r["outcome"]) for r in history(job_id)] == [(1, "released")]


def test_a_job_leased_before_it_was_due_goes_back_without_an_attempt(settings):
    job_id = submit(retry_tasks.fails_then_succeeds, 0, owner_id=None, delay=600)
    huey.read_schedule(datetime.datetime.now() + datetime.timedelta(seconds=900))
    run_next()  # not due yet: back into the schedule, not run
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    assert history(job_id) == []


def test_a_retried_failure_starts_a_new_attempt_and_keeps_the_old_ones(settings):
    job_id = submit(retry_tasks.fails_then_succeeds, 99, owner_id=None)
    run_until_ended(job_id)
    assert [r["outcome"] for r in history(job_id)] == ["failed"] * 4
    huey.retry(job_id)  # the operator's retry of a dead letter
    run_next()
    rows = history(job_id)
    assert [r["n"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["outcome"] == "failed"
    assert rows[-1]["error"] == "RuntimeError: attempt 5 failed on purpose"


def test_purging_a_job_deletes_its_attempts_and_no_others(settings):
    gone = submit(retry_tasks.fails_then_succeeds, 1, owner_id=None)
    run_until_ended(gone)
    kept = submit(retry_tasks.fails_then_succeeds, 0, owner_id=None)
    run_until_ended(kept)
    huey.storage.sql("update job set finished_at = 1 where id = ?", (gone,), commit=True)
    assert purge_jobs(huey.storage, open_store(settings), 86400) == 1
    assert history(gone) == [] and len(history(kept)) == 1
    left = huey.storage.sql("select count(*) from job_attempt where job_id = ?", (gone,),
                            results=True)
    assert left == [(0,)]


def test_the_api_shows_each_attempt_admins_see_the_worker(settings, client, make_user):
    owner, headers = make_user("alice")
    _, admin = make_user("root", admin=True)
    job_id = submit(retry_tasks.fails_then_succeeds, 1, owner_id=owner.id)
    run_until_ended(job_id)
    body = client.get(f"/api/jobs/{job_id}", headers=headers).get_json()
    assert body["attempts"] == 2
    mine = body["attempts_history"]
    assert [(a["n"], a["outcome"], a["error"]) for a in mine] == [
        (1, "failed", "RuntimeError: attempt 1 failed on purpose"), (2, "finished", None)]
    assert all(a["started_at"].endswith("Z") and a["ended_at"].endswith("Z") for a in mine)
    assert "worker" not in mine[0]
    seen = client.get(f"/api/job-status/{job_id}", headers=admin).get_json()
    assert seen["attempts_history"][0]["worker"] == huey.storage.owner
    # The list stays light: no history per job.
    listed = client.get("/api/jobs", headers=admin).get_json()["jobs"]
    assert all("attempts_history" not in j for j in listed)


def test_the_document_describes_the_attempts(app):
    job = SPEC["components"]["schemas"]["Job"]["properties"]
    attempt = job["attempts_history"]["items"]
    assert set(attempt["properties"]) == {*attempts.COLUMNS}
    assert "attempts" in job  # the count stays


# -- across processes: a real consumer ---------------------------------------------------

@pytest.mark.slow
def test_a_job_failing_twice_then_succeeding_on_a_real_consumer(consumer):
    job_id = submit(retry_tasks.fails_then_succeeds, 2, owner_id=None)
    worker = consumer(workers=2, extra_env=TASKS)
    wait_until(lambda: jobs.get(huey.storage, job_id)["status"] == "finished", timeout=60,
               message="the job to finish after two failures")
    rows = history(job_id)
    assert [(r["n"], r["outcome"], r["error"]) for r in rows] == [
        (1, "failed", "RuntimeError: attempt 1 failed on purpose"),
        (2, "failed", "RuntimeError: attempt 2 failed on purpose"),
        (3, "finished", None)], worker.output()[-2000:]
    assert all(f":{worker.proc.pid}:" in r["worker"] for r in rows)


@pytest.mark.slow
def test_a_job_failing_on_its_input_is_one_warning_line_a_bug_keeps_its_traceback(consumer):
    bad = submit(retry_tasks.fails_on_its_input, "\a", owner_id=None)
    bug = submit(retry_tasks.fails_then_succeeds, 99, owner_id=None)
    worker = consumer(workers=2, extra_env=TASKS)
    wait_until(lambda: jobs.get(huey.storage, bad)["status"] == "failed" and
               len(history(bug)) >= 2, timeout=60, message="both jobs to fail")
    assert jobs.get(huey.storage, bad)["attempts"] == 1  # not retried
    lines = worker.output().splitlines()
    about_bad = [line for line in lines if bad in line]
    failed = [line for line in about_bad if "failed, not retried" in line]
    assert len(failed) == 1 and "WARNING:huey:" in failed[0], about_bad
    assert failed[0].endswith("failed, not retried: title: cannot print '\\x07'"), failed[0]
    assert not any("ERROR" in line for line in about_bad), about_bad
    traceback_lines = [k for k, line in enumerate(lines) if line.startswith("Traceback")]
    assert traceback_lines and all("RuntimeError" in "".join(lines[k:k + 12])
                                   for k in traceback_lines), worker.output()[-3000:]


@pytest.mark.slow
def test_a_run_whose_consumer_died_ends_lost_when_another_takes_the_job(consumer):
    job_id = submit(slow_tasks.steps, 30, 0.1, owner_id=None)
    first = consumer(workers=1, extra_env=TASKS)
    wait_until(lambda: jobs.get(huey.storage, job_id)["progress"] > 0, timeout=60,
               message="the job to run")
    first.kill(signal.SIGKILL)
    second = consumer(workers=1, extra_env=TASKS)
    wait_until(lambda: jobs.get(huey.storage, job_id)["status"] == "finished", timeout=120,
               message="the job to finish on the second consumer")
    rows = history(job_id)
    assert [r["outcome"] for r in rows] == ["lost", "finished"], second.output()[-2000:]
    assert f":{first.proc.pid}:" in rows[0]["worker"]
    assert f":{second.proc.pid}:" in rows[1]["worker"]
    assert "took the job over" in rows[0]["error"]
    assert rows[0]["ended_at"] == rows[1]["started_at"]

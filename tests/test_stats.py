"""qrq.queue.stats: the read-only figures behind the queue status, the dashboard and /metrics,
over jobs taken through real storage (enqueue, dequeue, execute)."""

import time

import pytest

from qrq.errors import ValidationError
from qrq.queue import huey, job_progress, job_task, jobs, stats, submit


@job_task("batch", name="test.ops_ok")
def ok(task=None):
    return {"ok": True}


@job_task("mail", name="test.ops_bad")
def bad(task=None):
    raise ValidationError("bad input", field="x")


@job_task("analytics", name="test.ops_flaky", retries=1, retry_delay=3600)
def flaky(task=None):
    raise RuntimeError("transient")


def run_next():
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    return task.id


@pytest.fixture
def lifecycle(settings):
    """One job in each state: finished, failed, retrying, scheduled, running, queued x2."""
    ids = {}
    ids["finished"] = submit(ok, owner_id=1)
    assert run_next() == ids["finished"]
    ids["failed"] = submit(bad, owner_id=2)
    assert run_next() == ids["failed"]
    ids["retrying"] = submit(flaky, owner_id=None)
    assert run_next() == ids["retrying"]
    ids["scheduled"] = submit(ok, owner_id=1, delay=3600)
    ids["running"] = submit(ok, owner_id=1)
    assert huey.dequeue().id == ids["running"]  # leased, never executed
    ids["queued"] = submit(ok, owner_id=1)
    ids["queued2"] = submit(ok, owner_id=None)
    for state in ("finished", "failed", "retrying", "running", "queued"):
        assert jobs.get(huey.storage, ids[state])["status"] == state
    return ids


def test_job_counts_cover_every_type_and_state(lifecycle):
    counts = stats.job_counts(huey.storage)
    assert list(counts)[:6] == ["pdf", "batch", "analytics", "maintenance", "mail", "webhook"]
    assert all(set(c) == set(stats.QUEUE_STATES) for c in counts.values())
    assert counts["batch"] == {**dict.fromkeys(stats.QUEUE_STATES, 0), "finished": 1,
                               "scheduled": 1, "running": 1, "queued": 2}
    assert counts["mail"]["failed"] == 1
    assert counts["analytics"]["retrying"] == 1
    assert counts["pdf"] == dict.fromkeys(stats.QUEUE_STATES, 0)


def test_queue_status_per_type_and_totals(lifecycle):
    now = time.time()
    status = stats.queue_status(huey.storage, now)
    batch = status["types"]["batch"]
    assert (batch["queued"], batch["scheduled"], batch["running"], batch["finished_last_hour"]) \
        == (2, 1, 1, 1)
    assert status["types"]["mail"]["failed"] == status["types"]["mail"]["failed_last_hour"] == 1
    assert status["types"]["analytics"]["retrying"] == 1
    assert 0 <= batch["oldest_queued_age"] < 60
    assert status["types"]["pdf"]["oldest_queued_age"] is None
    # The delayed job and the retry both wait in huey's schedule table.
    assert status["totals"]["schedule_entries"] == 2
    assert status["totals"]["queued"] == 2 and status["totals"]["failed"] == 1
    assert status["consumers"] == []
    # An hour later the finished job no longer counts as finished in the last hour.
    later = stats.queue_status(huey.storage, now + 3601)
    assert later["types"]["batch"]["finished_last_hour"] == 0


def test_oldest_queued_counts_from_creation_and_skips_the_schedule(settings):
    submit(ok, owner_id=None, delay=3600)
    assert stats.oldest_queued(huey.storage) == {}
    submit(ok, owner_id=None)
    later = time.time() + 100
    assert 99 < stats.oldest_queued(huey.storage, later)["batch"] < 102


def test_a_retried_job_waits_from_its_retry_not_from_its_creation(settings):
    # Failed a day ago and retried now: the "oldest queued" alert and gauge must not
    # say it has waited a day.
    job_id = submit(bad, owner_id=None)
    run_next()
    day_ago = time.time() - 86400
    huey.storage.sql("update job set created_at = ? where id = ?", (day_ago, job_id),
                     commit=True)
    huey.retry(job_id)
    assert stats.oldest_queued(huey.storage)["mail"] < 60
    assert jobs.get(huey.storage, job_id)["next_attempt_at"] <= time.time()


def test_consumers_list_their_current_jobs(settings):
    consumer = huey.create_consumer(workers=3, worker_type="thread")
    consumer._register()  # what QrqConsumer.start does
    job_id = submit(ok, owner_id=None)
    assert huey.dequeue().id == job_id  # leased by this process, under the consumer's id
    job_progress.report_progress(huey.storage, job_id, 40, "working")
    found = stats.consumers(huey.storage)
    assert len(found) == 1
    me = found[0]
    assert me["id"] == consumer.consumer_id and me["workers"] == 3
    assert me["heartbeat_age"] < 60 and me["started_at"] <= time.time()
    assert [(j["job_id"], j["type"], j["progress"], j["stage"]) for j in me["jobs"]] == [
        (job_id, "batch", 40, "working")]
    assert me["jobs"][0]["worker"].startswith(consumer.consumer_id + "/")
    assert stats.last_heartbeat(huey.storage) == me["heartbeat_at"]


def test_last_heartbeat_is_none_without_consumers(settings):
    assert stats.last_heartbeat(huey.storage) is None


def test_throughput_buckets_by_hour_with_failure_rate(lifecycle):
    now = time.time()
    buckets = stats.throughput(huey.storage, now)
    assert len(buckets) == 24
    assert [b["start"] for b in buckets] == sorted(b["start"] for b in buckets)
    last = buckets[-1]
    assert last["start"] <= now < last["start"] + 3600
    assert (last["finished"], last["failed"]) == (1, 1) and last["failure_rate"] == 0.5
    assert all(b["failure_rate"] is None for b in buckets[:-1])
    # Three hours on, the same jobs sit three buckets from the end.
    shifted = stats.throughput(huey.storage, now + 3 * 3600)
    assert (shifted[-4]["finished"], shifted[-4]["failed"]) == (1, 1)
    assert sum(b["finished"] for b in shifted) == 1


def test_durations_are_cumulative_buckets_of_finished_jobs(lifecycle):
    found = stats.durations(huey.storage, time.time() - 3600)
    assert set(found) == {"batch"}  # only finished jobs count
    batch = found["batch"]
    counts = [count for _, count in batch["buckets"]]
    assert counts == sorted(counts) and batch["buckets"][-1] == ("+Inf", 1)
    assert batch["count"] == 1 and 0 <= batch["sum"] < 60
    assert stats.durations(huey.storage, time.time() + 10) == {}


def test_search_jobs_filters(lifecycle):
    storage = huey.storage
    rows, total = stats.search_jobs(storage)
    assert total == 7 and len(rows) == 7
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows),
                                                     reverse=True)
    assert stats.search_jobs(storage, limit=2)[1] == 7
    assert len(stats.search_jobs(storage, limit=2, offset=6)[0]) == 1
    assert stats.search_jobs(storage, job_type="mail")[1] == 1
    assert {r["id"] for r in stats.search_jobs(storage, queue_state="queued")[0]} == {
        lifecycle["queued"], lifecycle["queued2"]}
    assert [r["id"] for r in stats.search_jobs(storage, queue_state="scheduled")[0]] == [
        lifecycle["scheduled"]]
    # The stored status: a delayed job is queued too (the API's meaning).
    assert {r["id"] for r in stats.search_jobs(storage, status="queued")[0]} == {
        lifecycle["queued"], lifecycle["queued2"], lifecycle["scheduled"]}
    assert stats.search_jobs(storage, with_total=False)[1] is None
    assert stats.search_jobs(storage, owner_id=2)[0][0]["id"] == lifecycle["failed"]
    assert {r["id"] for r in stats.search_jobs(storage, system=True)[0]} == {
        lifecycle["retrying"], lifecycle["queued2"]}
    prefix = lifecycle["failed"][:8]
    assert lifecycle["failed"] in {r["id"] for r in stats.search_jobs(
        storage, id_prefix=prefix)[0]}
    now = time.time()
    assert stats.search_jobs(storage, created_from=now - 60, created_to=now + 60)[1] == 7
    assert stats.search_jobs(storage, created_from=now + 60)[1] == 0
    assert stats.search_jobs(storage, name_contains="ops_bad")[1] == 1
    # Any case, on both databases (PostgreSQL's like is case-sensitive).
    assert stats.search_jobs(storage, name_contains="OPS_Bad")[1] == 1
    assert stats.search_jobs(storage, text="TEST.OPS_BAD")[1] == 1


def test_progress_of_reads_only_existing_ids(lifecycle):
    found = stats.progress_of(huey.storage, [lifecycle["finished"], lifecycle["running"],
                                             "00000000-0000-0000-0000-000000000000"])
    assert found[lifecycle["finished"]] == {"status": "finished", "progress": 100,
                                            "stage": "done"}
    assert found[lifecycle["running"]]["status"] == "running"
    assert len(found) == 2
    assert stats.progress_of(huey.storage, []) == {}


def test_the_job_types_shown_are_the_job_types_declared():
    # The display order (status, dashboard filters, metrics, the API's enums) names every
    # job type a task declares, so a new one cannot be missing from them.
    from qrq.queue import catalog

    assert sorted(stats.JOB_TYPES) == catalog.job_types()

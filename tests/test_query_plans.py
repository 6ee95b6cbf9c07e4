"""Every query of the dequeue, the API and the dashboard reads the job and task tables
through an index (issue 18 narrowed the job table's indexes; EXPLAIN QUERY PLAN)."""

import re
import time

import pytest

from qrq.artifacts import open_store
from qrq.queue import huey, jobs, retention, run_ahead, stats, submit
from tests import slow_tasks

pytestmark = pytest.mark.sqlite_only("SQLite's EXPLAIN QUERY PLAN of each statement")

FULL_SCAN = re.compile(r"\bSCAN (job|task)\b(?! USING)")


@pytest.fixture
def traced(settings):
    """Some queued, running and ended jobs; then every statement the block runs."""
    ids = [submit(slow_tasks.noop, owner_id=owner) for owner in (1, 1, 2, None, None)]
    for _ in range(3):
        huey.execute(huey.dequeue())  # three ended
    statements = []
    huey.storage.conn.set_trace_callback(statements.append)
    yield ids, statements
    huey.storage.conn.set_trace_callback(None)


def plans(statements):
    """``{statement: plan}`` of each statement reading or changing job or task rows."""
    found = {}
    for sql in statements:
        if re.match(r"\s*(select|update|delete|with)\b", sql, re.I) and \
                re.search(r"\b(job|task)\b", sql):
            rows = huey.storage.sql(f"explain query plan {sql}", results=True)
            found[sql] = " / ".join(row[-1] for row in rows)
    return found


def test_the_queries_of_the_api_dashboard_and_dequeue_use_an_index(traced, settings,
                                                                    monkeypatch):
    ids, statements = traced
    now = time.time()
    # The dequeue (its pick and the per-type caps), completion and cancel.
    huey.execute(huey.dequeue())
    huey.storage.cancel_queued(ids[-1])
    # A worker's batch: its lease (the first rows in line, then one update of them and one
    # of their jobs) and its ends.
    monkeypatch.setattr(run_ahead, "BATCH_SECONDS", 60.0)
    monkeypatch.setattr(huey.storage, "lease_ahead", True)
    batch = [submit(slow_tasks.noop, owner_id=None) for _ in range(3)]
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
    assert all(jobs.get(huey.storage, i)["status"] == "finished" for i in batch)
    batch_statements = [sql for sql in statements if re.match(
        r"select id, job_type from task .* limit 16$|update (task|job) set .* where id in "
        r"\([^)]*,", sql)]
    assert len(batch_statements) >= 3  # the pick, the lease, the jobs marked running
    # The API.
    jobs.get(huey.storage, ids[0])
    with huey.storage.db() as curs:
        jobs.count_active(curs, 1)
        jobs.count_active(curs, 1, "analytics")
    jobs.count_busy(huey.storage)
    jobs.median_duration(huey.storage, "pdf")
    # The dashboard and /metrics.
    stats.job_counts(huey.storage)
    stats.queued_count(huey.storage)
    stats.ended_since(huey.storage, now - 3600)
    stats.oldest_queued(huey.storage)
    stats.throughput(huey.storage)
    stats.durations(huey.storage, now - 3600)
    stats.search_jobs(huey.storage, job_type="pdf")
    stats.search_jobs(huey.storage, owner_id=1)
    stats.search_jobs(huey.storage, queue_state="queued")
    stats.search_jobs(huey.storage, status="failed")
    # The dashboard's live job list: jobs created since the last poll (any filter), and
    # the shown rows by id.
    stats.search_jobs(huey.storage, created_from=now - 30, with_total=False)
    stats.search_jobs(huey.storage, created_from=now - 30, text="x", queue_state="failed",
                      with_total=False)
    stats.search_jobs(huey.storage, created_from=now - 30, owner_id=1, with_total=False)
    stats.jobs_by_id(huey.storage, ids)
    stats.consumers(huey.storage)
    # Retention.
    retention.purge_jobs(huey.storage, open_store(settings), 3600)
    found = plans(statements)
    assert len(found) >= 20
    scans = {sql: plan for sql, plan in found.items() if FULL_SCAN.search(plan)}
    assert not scans


@pytest.mark.parametrize("index, sql", [
    ("job_active", "select count(*) from job where owner_id = 1 and "
                   "(status = 'queued' or status = 'running' or status = 'retrying')"),
    ("job_active", "select count(*) from job where owner_id = 1 and "
                   "(status = 'queued' or status = 'running' or status = 'retrying') "
                   "and type = 'analytics'"),
    ("job_active", "select count(*) from job where status = 'queued'"),
    ("job_ended", "select id from job where status in ('finished', 'failed') "
                  "and finished_at < 5 limit 500"),
    ("job_ended", "select finished_at - started_at from job where type = 'pdf' and "
                  "status = 'finished' and finished_at is not null "
                  "order by finished_at desc limit 20"),
    ("job_type_created", "select id from job where type = 'pdf' and name = 'x' "
                         "order by created_at desc limit 1"),
    ("job_owner_created", "select id from job where owner_id = 1 "
                          "order by created_at desc limit 50"),
    ("task_queue_priority_id", "select id from task where queue = 'qrq' and "
                               "(lease_until is null or lease_until < 5) "
                               "order by priority desc, id limit 1"),
    ("task_leased", "select job_type, count(*) from task where queue = 'qrq' and "
                    "lease_until >= 5 and job_type is not null group by job_type"),
])
def test_each_index_serves_a_query(settings, index, sql):
    plan = " / ".join(r[-1] for r in huey.storage.sql(f"explain query plan {sql}",
                                                       results=True))
    assert f"INDEX {index}" in plan, plan


def test_old_indexes_are_dropped(settings):
    names = {name for name, in huey.storage.sql(
        "select name from sqlite_master where type = 'index' and tbl_name = 'job'",
        results=True)}
    assert names == {"sqlite_autoindex_job_1", "job_owner_created", "job_type_created",
                     "job_active", "job_ended", "job_idempotency"}


def test_a_batchs_retries_are_found_through_their_index(settings):
    from qrq import batch

    parent = "0" * 36
    huey.storage.sql("insert into batch (job_id, total, created_at) values (?, 0, 0)",
                     (parent,), commit=True)
    statements = []
    huey.storage.conn.set_trace_callback(statements.append)
    batch.retries(huey.storage, parent)
    assert batch.create_retry(huey.storage, parent, "1" * 36, None) == 0  # no failed items
    huey.storage.conn.set_trace_callback(None)
    found = [sql for sql in statements if "parent_id = " in sql]
    assert len(found) == 2, statements
    for sql in found:
        plan = " / ".join(r[-1] for r in huey.storage.sql(f"explain query plan {sql}",
                                                          results=True))
        assert re.search(r"SEARCH batch USING (COVERING )?INDEX batch_parent", plan), plan


def test_the_backup_alerts_read_the_run_state_by_its_primary_key(settings):
    # They are evaluated by every web process and consumer, on every dashboard and
    # /metrics read.
    from qrq import alerts

    statements = []
    huey.storage.conn.set_trace_callback(statements.append)
    alerts.evaluate(huey.storage, settings)
    huey.storage.conn.set_trace_callback(None)
    found = [sql for sql in statements if "maintenance_state" in sql]
    assert len(found) == 1, statements
    plan = " / ".join(r[-1] for r in huey.storage.sql(f"explain query plan {found[0]}",
                                                      results=True))
    assert re.fullmatch(r"SEARCH maintenance_state USING INDEX "
                        r"sqlite_autoindex_maintenance_state_1 \(key=\?\)", plan), plan

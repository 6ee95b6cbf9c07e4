"""Schedules in a time zone, the run lock, catch-up claims, log rotation, checkpoint, vacuum."""

import dataclasses
import datetime
import gzip
import json
import os
import re
import sqlite3
import threading
import time
import zoneinfo

import pytest

from qrq.config import load_settings
from qrq.queue import huey, locks, maintenance
from qrq.queue.locks import Locked, claim_catch_up, hold_lock, record_success, try_lock
from qrq.queue.log_rotation import rotate_logs
from qrq.queue.maintenance import last_due

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def ts(*args, tz=datetime.UTC):
    return datetime.datetime(*args, tzinfo=tz).timestamp()


def test_last_due_is_the_latest_matching_minute_in_the_time_zone():
    now = ts(2026, 11, 22, 10, 0)  # a Sunday
    assert last_due("0 2 * * *", datetime.UTC, now) == ts(2026, 11, 22, 2, 0)
    assert last_due("0 2 * * *", BERLIN, now) == ts(2026, 11, 22, 1, 0)  # 02:00 CET
    assert last_due("0 3 * * 0", BERLIN, ts(2026, 11, 21, 12, 0)) == ts(2026, 11, 15, 2, 0)
    assert last_due("0 2 * * *", datetime.UTC, ts(2026, 11, 22, 2, 0, 30)) == ts(
        2026, 11, 22, 2, 0)
    assert last_due("", datetime.UTC, now) is None


def test_a_time_that_does_not_exist_that_day_is_skipped():
    # 29 March 2026: Berlin clocks jump from 02:00 to 03:00; 02:30 never happens.
    assert last_due("30 2 * * *", BERLIN, ts(2026, 3, 29, 12, 0)) == ts(2026, 3, 28, 1, 30)
    # 25 October 2026: 02:30 happens twice (CEST, then CET); the later one counts.
    assert last_due("30 2 * * *", BERLIN, ts(2026, 10, 25, 12, 0)) == ts(2026, 10, 25, 1, 30)


def test_due_now_converts_hueys_utc_timestamp():
    utc_naive = datetime.datetime(2026, 7, 1, 0, 0)  # 02:00 in Berlin (CEST)
    assert maintenance.due_now("0 2 * * *", BERLIN, utc_naive)
    assert not maintenance.due_now("0 2 * * *", datetime.UTC, utc_naive)
    assert not maintenance.due_now("", BERLIN, utc_naive)


def test_bad_schedules_and_zones_are_refused_at_load(tmp_path):
    from qrq.config import load_settings

    with pytest.raises(ValueError, match="QRQ_BACKUP_SCHEDULE"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_BACKUP_SCHEDULE": "0 25 * * *"})
    with pytest.raises(ValueError, match="QRQ_BACKUP_SCHEDULE"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_BACKUP_SCHEDULE": "daily"})
    with pytest.raises(ValueError, match="QRQ_BACKUP_TIMEZONE"):
        load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_BACKUP_TIMEZONE": "Mars/Base"})
    ok = load_settings({"QRQ_DATA_DIR": str(tmp_path), "QRQ_BACKUP_SCHEDULE": "",
                        "QRQ_BACKUP_TIMEZONE": "Europe/Berlin"})
    assert ok.backup_schedule == "" and ok.backups_dir == tmp_path / "backups"


def test_one_holder_at_a_time_and_a_dead_holders_lock_lapses(settings):
    db = huey.storage
    now = time.time()
    assert try_lock(db, "backup", "a", now=now) is None
    assert try_lock(db, "backup", "b", now=now + 1) == "a"
    assert try_lock(db, "backup", "a", now=now + 1) is None  # its own lock again
    assert try_lock(db, "other", "b", now=now) is None  # another lock name
    assert try_lock(db, "backup", "b", now=now + locks.LOCK_TTL + 1) is None  # lapsed
    locks.release_lock(db, "backup", "b")
    with hold_lock(db, "backup", "c"):
        with pytest.raises(Locked, match="already running: c"):
            with hold_lock(db, "backup", "d"):
                pass
    assert try_lock(db, "backup", "d") is None  # released on exit


def test_a_jobs_rerun_waits_for_the_lock_of_its_dead_earlier_run_not_a_live_one(settings):
    # A job runs again once its lease lapsed: its process died, and the lock it renewed
    # lapses soon (before, the rerun found it "already running" and was skipped); or its
    # process stalls and renews it still, and the rerun must not start beside it.
    db, ttl = huey.storage, 1.0
    earlier = locks.holder_id("j-1").replace(f":{os.getpid()})", ":1)")  # another process
    assert try_lock(db, "backup", earlier, ttl=ttl) is None  # and never renewed: dead
    assert try_lock(db, "backup", "job j-2 (host:1)", ttl=ttl) == earlier  # another job
    assert try_lock(db, "backup", "cli (host:1)", ttl=ttl) == earlier
    with hold_lock(db, "backup", locks.holder_id("j-1"), ttl=ttl):  # waits for the lapse
        assert try_lock(db, "backup", earlier, ttl=ttl) == locks.holder_id("j-1")
    with hold_lock(db, "backup", earlier, ttl=ttl):  # alive: it renews the lock
        with pytest.raises(Locked, match=f"already running: {re.escape(earlier)}"):
            with hold_lock(db, "backup", locks.holder_id("j-1"), ttl=ttl):
                pass
    # A run of the CLI is only itself: another CLI process (however its pid starts)
    # does not take it over.
    now = time.time()
    assert try_lock(db, "other", "cli (host:12)", now=now) is None
    assert try_lock(db, "other", "cli (host:1)", now=now) == "cli (host:12)"
    assert try_lock(db, "other", "cli (host:123)", now=now) == "cli (host:12)"


@pytest.mark.sqlite_only("SQLite's trace callback")
def test_locks_run_on_the_storages_connection_without_ddl(settings):
    """Every statement on queue.db goes through the storage; the lock tables are made
    once with the schema, not again at every lock call."""
    statements = []
    huey.storage.conn.set_trace_callback(statements.append)
    try:
        assert try_lock(huey.storage, "backup", "a") is None
        assert locks.renew_lock(huey.storage, "backup", "a")
        locks.release_lock(huey.storage, "backup", "a")
        assert not claim_catch_up(huey.storage, "backup", None)
    finally:
        huey.storage.conn.set_trace_callback(None)
    # A free lock is taken in one statement (no read before it).
    assert sum("maintenance_lock" in sql for sql in statements) == 3
    assert not [sql for sql in statements if sql.lower().startswith(("create", "pragma"))]


def test_a_held_lock_is_renewed_while_its_holder_runs(settings):
    db = huey.storage
    with hold_lock(db, "backup", "a", ttl=1.0):
        time.sleep(2.5)  # lets time pass (not a synchronisation): only renewal keeps it
        assert try_lock(db, "backup", "b") == "a"


def test_a_missed_run_is_claimed_exactly_once_across_threads(settings):
    db = huey.storage
    assert not claim_catch_up(db, "backup", ts(2026, 11, 20, 2, 0), now=ts(2026, 11, 20, 9, 0))
    due = ts(2026, 11, 21, 2, 0)
    results, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        results.append(claim_catch_up(db, "backup", due, now=ts(2026, 11, 21, 8, 0)))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    # A due time a run already covered is not caught up.
    record_success(db, "backup", ts(2026, 11, 22, 2, 1))
    assert not claim_catch_up(db, "backup", ts(2026, 11, 22, 2, 0))
    assert claim_catch_up(db, "backup", ts(2026, 11, 23, 2, 0))


def test_rotate_logs_compresses_truncates_and_deletes_old(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    now = ts(2026, 11, 22, 3, 0)
    (logs / "consumer.log").write_text("line one\nline two\n")
    (logs / "empty.log").write_text("")
    (logs / "consumer.log.20261001T030000Z.gz").write_bytes(gzip.compress(b"old"))
    (logs / "consumer.log.20261115T030000Z.gz").write_bytes(gzip.compress(b"recent"))
    (logs / "web.log.20261116T030000Z").write_text("left plain")
    (logs / "notes.txt").write_text("not a log")
    with open(logs / "consumer.log", "a") as handle:  # a process still writing
        report = rotate_logs(logs, max_age_days=30, now=now)
        handle.write("after\n")
    assert report == {"rotated": ["consumer.log.20261122T030000Z.gz"],
                      "deleted": ["consumer.log.20261001T030000Z.gz"]}
    assert gzip.decompress((logs / "consumer.log.20261122T030000Z.gz").read_bytes()) == (
        b"line one\nline two\n")
    assert (logs / "consumer.log").read_text() == "after\n"
    assert gzip.decompress((logs / "web.log.20261116T030000Z.gz").read_bytes()) == b"left plain"
    assert sorted(p.name for p in logs.iterdir()) == [
        "consumer.log", "consumer.log.20261115T030000Z.gz", "consumer.log.20261122T030000Z.gz",
        "empty.log", "notes.txt", "web.log.20261116T030000Z.gz"]


def test_on_postgresql_maintenance_rotates_logs_and_says_the_server_does_the_rest(tmp_path):
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path),
                              "QRQ_DATABASE_URL": "postgresql://qrq@db.invalid/qrq"})
    settings.logs_dir.mkdir(parents=True)
    (settings.logs_dir / "consumer.log").write_text("something\n")
    # No storage: nothing on the database is touched (no checkpoint, no VACUUM).
    result = maintenance.run_maintenance(None, settings)
    assert result["logs"]["rotated"]
    assert "PostgreSQL" in result["checkpoint"] and "autovacuum" in result["vacuum"]


@pytest.mark.sqlite_only("WAL checkpoints and VACUUM of the SQLite files")
def test_maintenance_checkpoints_and_vacuums_only_when_idle(settings):
    from qrq.queue import submit
    from tasks.maintenance import run_maintenance_task

    conn = sqlite3.connect(settings.app_db)
    conn.execute("create table filler (x blob)")
    conn.execute("with recursive n(i) as (select 1 union all select i + 1 from n "
                 "where i < 2000) insert into filler select randomblob(1000) from n")
    conn.commit()
    conn.execute("delete from filler")
    conn.commit()
    conn.close()
    wal = f"{settings.queue_db}-wal"
    huey.storage.sql("insert into consumer (id, host, pid, started_at, heartbeat_at) "
                     "values ('x', 'h', 1, 0, 0)", commit=True)
    assert os.path.getsize(wal) > 0
    job_id = submit(run_maintenance_task, "manual", owner_id=None)
    # The queued job: not idle.
    busy = maintenance.run_maintenance(huey.storage, settings, job_id=None)
    assert busy["vacuum"] == "skipped: jobs are running or queued"
    assert busy["checkpoint"]["busy"] == 0 and os.path.getsize(wal) == 0
    idle = maintenance.run_maintenance(huey.storage, settings, job_id=job_id)
    assert idle["vacuum"]["app.db"]["after"] < idle["vacuum"]["app.db"]["before"]
    assert "queue.db" in idle["vacuum"]
    off = maintenance.run_maintenance(huey.storage,
                                      dataclasses.replace(settings, maintenance_vacuum=False),
                                      job_id=job_id)
    assert off["vacuum"] == "disabled"


def test_the_maintenance_job_through_the_queue_and_its_catch_up(settings, runner, backend):
    from qrq.cli import main
    from qrq.queue import jobs
    from tasks import maintenance as maintenance_tasks

    # A missed Sunday run is caught up once.
    sunday = ts(2026, 11, 22, 3, 0)
    assert maintenance_tasks.catch_up(now=sunday - 8 * 86400) is None  # first seen
    caught = maintenance_tasks.catch_up(now=sunday + 3600)
    assert caught and maintenance_tasks.catch_up(now=sunday + 7200) is None
    assert json.loads(jobs.get(huey.storage, caught)["params"])["due_at"] == sunday
    huey.storage.sql("delete from job", commit=True)
    huey.storage.flush_queue()
    # A manual run records its start as the last success (a later due time needs a new run).
    (settings.logs_dir / "consumer.log").write_text("something\n")
    queued = runner.invoke(main, ["maintenance", "run"])
    assert queued.exit_code == 0, queued.output
    job_id = queued.output.split()[-1]
    huey.execute(huey.dequeue())
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "finished", job["error"]
    result = json.loads(job["result"])
    assert result["kind"] == "manual" and len(result["logs"]["rotated"]) == 1
    if backend == "sqlite":
        assert result["checkpoint"]["busy"] == 0 and "queue.db" in result["vacuum"]
    else:
        assert "autovacuum" in result["vacuum"]
    assert locks.last_success(huey.storage, "maintenance") >= job["started_at"]

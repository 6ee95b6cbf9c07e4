"""Backup jobs through the real queue: result, report mail, lock, skip, catch-up;
and across processes with real consumers."""

import email
import json
import signal
import sqlite3
import threading
import time

import pytest

from qrq.backup import list_sets
from qrq.cli import main
from qrq.queue import attempts, huey, jobs, locks, run_periodic_now, stats, submit
from tasks import backup as backup_tasks
from tasks.backup import run_backup_task
from tests.conftest import wait_until
from tests.test_backup import corrupt, make_db


def run_next():
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    return task


def outbox_mails(settings):
    return [email.message_from_bytes(p.read_bytes())
            for p in sorted(settings.outbox_dir.glob("*.eml"))]


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
def test_a_backup_job_reports_per_database_and_mails_the_admins(settings, make_user):
    make_user("root", admin=True, email="root@example.com")
    make_user("ops", admin=True)  # no address: no mail
    make_user("bob", email="bob@example.com")  # not an admin
    make_db(settings.data_dir / "analytics" / "shop.db")
    corrupt(make_db(settings.data_dir / "analytics" / "broken.db", rows=5000, blob=300))
    job_id = submit(run_backup_task, "manual", owner_id=None)
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "finished", job["error"]
    result = json.loads(job["result"])
    assert result["status"] == "partial" and result["ok"] == 3 and result["failed"] == 1
    by_name = {d["name"]: d for d in result["databases"]}
    assert by_name["analytics/broken.db"]["status"] == "failed"
    assert by_name["analytics/broken.db"]["error"]
    assert by_name["analytics/shop.db"]["status"] == "ok"
    assert by_name["app.db"]["size"] > 0 and by_name["app.db"]["duration"] >= 0
    assert result["mailed"] == 1
    run_next()  # the mail job
    [mail] = outbox_mails(settings)
    assert mail["To"] == "root@example.com"
    assert "partial, 3/4 databases ok" in mail["Subject"]
    body = mail.get_payload()
    assert "FAILED:\n  analytics/broken.db:" in body and "analytics/shop.db" in body


def test_a_scheduled_run_already_covered_is_skipped(settings):
    job_id = submit(run_backup_task, "manual", owner_id=None)
    run_next()
    assert json.loads(jobs.get(huey.storage, job_id)["result"])["status"] == "ok"
    covered = submit(run_backup_task, "scheduled", time.time() - 60, owner_id=None)
    run_next()
    assert "already ran" in json.loads(jobs.get(huey.storage, covered)["result"])["skipped"]
    assert len(list_sets(settings.backups_dir)) == 1
    first = list_sets(settings.backups_dir)[0]["id"]
    due = submit(run_backup_task, "catch-up", time.time() + 1, owner_id=None)
    run_next()
    result = json.loads(jobs.get(huey.storage, due)["result"])
    assert result["status"] == "ok"
    # Retention ran after it: two sets on one day keep only the newest as the daily one.
    assert result["removed_sets"] == [first]
    assert [m["id"] for m in list_sets(settings.backups_dir)] == [result["set_id"]]


def test_running_the_scheduled_backup_now_by_hand_backs_up_even_when_covered(settings):
    # "Run now" on the Schedule page (or `qrq schedule run`) after today's backup: the
    # operator asked for a backup, so one is made; the scheduler's own run is skipped.
    submit(run_backup_task, "manual", owner_id=None)
    run_next()
    by_hand = run_periodic_now("backup.scheduled", params={"requested_by": "root"})
    run_next()
    result = json.loads(jobs.get(huey.storage, by_hand)["result"])
    assert result["status"] == "ok", result
    assert result["set_id"] in [m["id"] for m in list_sets(settings.backups_dir)]
    by_schedule = run_periodic_now("backup.scheduled")  # no one asked: the due run
    run_next()
    assert "already ran" in json.loads(jobs.get(huey.storage, by_schedule)["result"])[
        "skipped"]


def test_only_one_backup_runs_at_once(settings):
    with locks.hold_lock(huey.storage, "backup", "someone else"):
        manual = submit(run_backup_task, "manual", owner_id=None)
        run_next()
        scheduled = submit(run_backup_task, "scheduled", time.time(), owner_id=None)
        run_next()
    failed = jobs.get(huey.storage, manual)
    assert failed["status"] == "failed" and "already running: someone else" in failed["error"]
    skipped = json.loads(jobs.get(huey.storage, scheduled)["result"])
    assert "already running" in skipped["skipped"]
    assert list_sets(settings.backups_dir) == []


def test_catch_up_enqueues_exactly_one_job_from_many_workers(settings):
    start = time.time()
    assert backup_tasks.catch_up(now=start - 3 * 86400) is None  # first seen: no run
    ids, barrier = [], threading.Barrier(6)

    def start_worker():
        barrier.wait()
        ids.append(backup_tasks.catch_up())

    threads = [threading.Thread(target=start_worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queued = [i for i in ids if i]
    assert len(queued) == 1
    rows = huey.storage.sql("select id, params from job where type = 'maintenance'",
                            results=True)
    assert [r[0] for r in rows] == queued
    assert json.loads(rows[0][1])["kind"] == "catch-up"
    assert backup_tasks.catch_up() is None  # claimed: a later start does not add one


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
@pytest.mark.slow
def test_a_missed_backup_is_caught_up_once_when_consumers_start(settings, make_user, consumer):
    make_user("root", admin=True, email="root@example.com")
    now = time.time()
    # The schedule's last due time was ten minutes ago; the install is a day old.
    due = time.gmtime(now - 600)
    schedule = f"{due.tm_min} {due.tm_hour} * * *"
    conn = sqlite3.connect(settings.queue_db)
    conn.execute("insert into maintenance_state (key, value) values ('backup:first_seen', ?)",
                 (now - 86400,))
    conn.commit()
    conn.close()
    env = {"QRQ_BACKUP_SCHEDULE": schedule}
    first, second = consumer(workers=2, extra_env=env), consumer(workers=2, extra_env=env)

    def backup_jobs():
        return stats.search_jobs(huey.storage, job_type="maintenance")[0]

    def finished():
        found = [j for j in backup_jobs() if j["status"] in jobs.ENDED]
        return found if found else None

    [job] = wait_until(finished, timeout=90, message="the catch-up backup")
    assert job["status"] == "finished", (job["error"], first.output(), second.output())
    assert json.loads(job["params"])["kind"] == "catch-up"
    assert json.loads(job["result"])["status"] == "ok"
    wait_until(lambda: outbox_mails(settings), timeout=30, message="the report mail")
    assert len(backup_jobs()) == 1  # four workers in two consumers: one catch-up
    [manifest] = list_sets(settings.backups_dir)
    assert manifest["kind"] == "catch-up"


@pytest.mark.sqlite_only("backs up queue.db and app.db as files; PostgreSQL's dump: "
                         "tests/test_backup_postgres.py")
@pytest.mark.slow
def test_backup_run_wait_exits_nonzero_when_a_database_failed(settings, runner, consumer):
    consumer(workers=1)
    make_db(settings.data_dir / "analytics" / "shop.db")
    ok = runner.invoke(main, ["backup", "run", "--wait", "--timeout", "90"])
    assert ok.exit_code == 0, ok.output
    assert "3 ok, 0 failed" in ok.output
    corrupt(make_db(settings.data_dir / "analytics" / "broken.db", rows=5000, blob=300))
    failed = runner.invoke(main, ["backup", "run", "--wait", "--timeout", "90"])
    assert failed.exit_code == 1, failed.output
    assert "FAILED analytics/broken.db" in failed.output and "1 failed" in failed.output
    listed = runner.invoke(main, ["backup", "list"])
    assert "3/4 ok" in listed.output and "3/3 ok" in listed.output


def hold_exclusively(path):
    """A connection that holds *path* (made a rollback-journal database) locked, so
    that a backup reading it waits, mid-run, until it lets go."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("pragma journal_mode=delete")
    conn.execute("begin exclusive")
    return conn


@pytest.mark.slow
def test_a_scheduled_backup_whose_consumer_was_killed_runs_again_and_succeeds(settings,
                                                                              consumer):
    # The run waits on a database another process holds; its consumer is killed then.
    held = hold_exclusively(make_db(settings.data_dir / "analytics" / "held.db"))
    env = {"QRQ_BUSY_TIMEOUT": "300"}  # it waits for the database until killed
    job_id = submit(run_backup_task, "scheduled", time.time() - 60, owner_id=None)
    first = consumer(workers=1, extra_env=env)
    mine = f"job {job_id} ("
    wait_until(lambda: any(h.startswith(mine) for h, in huey.storage.sql(
        "select holder from maintenance_lock where name = 'backup'", results=True)),
        timeout=60, message="the backup to take its lock")
    first.kill(signal.SIGKILL)  # its lock stays held until it lapses (60 s)
    held.rollback()
    held.close()
    second = consumer(workers=1, extra_env=env)
    job = wait_until(lambda: (j := jobs.get(huey.storage, job_id))["status"] in jobs.ENDED
                     and j, timeout=120, message="the backup run again")
    assert job["status"] == "finished", (job["error"], second.output()[-3000:])
    result = json.loads(job["result"])
    assert result.get("status") == "ok", result  # not {"skipped": "... already running"}
    assert result["set_id"] in [m["id"] for m in list_sets(settings.backups_dir)]
    assert [a["outcome"] for a in attempts.list_attempts(huey.storage, job_id)] == ["lost",
                                                                              "finished"]
    assert locks.runs(huey.storage, "backup")["succeeded"] is not None

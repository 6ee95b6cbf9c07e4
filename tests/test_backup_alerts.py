"""The backup alerts: the latest backup failed for good (its job raised with no retry
left, or its set did not verify) until a later one succeeds; no backup succeeded for
too long while backups are scheduled, never before a new install's first backup was
due. Real backup jobs through the real queue, on both backends."""

import dataclasses
import datetime
import errno
import json
import logging
import subprocess
import time

import pytest

from qrq import alerts
from qrq.queue import huey, jobs, stats, submit
from tasks import backup as backup_tasks
from tasks.backup import run_backup_task
from tests.test_backup import corrupt, make_db

HOUR = 3600


def with_settings(settings, **changes):
    """Settings with *changes*, applied to the Huey instance the code reads. (Not
    imported from test_alerts, which registers a task: imported twice, it fails.)"""
    changed = dataclasses.replace(settings, **changes)
    huey.settings = changed
    return changed


def run_backup() -> dict:
    """Queue and run one manual backup; return its job record."""
    job_id = submit(run_backup_task, "manual", owner_id=None)
    task = huey.dequeue()
    while task is not None and task.id != job_id:  # a mail queued before it goes first
        huey.execute(task)
        task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    return jobs.get(huey.storage, job_id)


def run_retry_now(job_id: str) -> dict:
    """Run the job's retry now, though backup.run's retry is due only in a minute."""
    later = (datetime.datetime.now(datetime.UTC).replace(tzinfo=None) if huey.utc
             else datetime.datetime.now()) + datetime.timedelta(minutes=10)
    huey.read_schedule(later)  # (moves it into the queue)
    task = huey.dequeue()
    assert task is not None and task.id == job_id
    huey.execute(task, later)
    return jobs.get(huey.storage, job_id)


def mails() -> list[str]:
    """The subjects of the mails queued."""
    return [json.loads(j["params"])["subject"]
            for j in stats.search_jobs(huey.storage, job_type="mail")[0]]


def backup_alerts(settings, now=None) -> dict[str, dict]:
    return {a["kind"]: a for a in alerts.evaluate(huey.storage, settings, now)
            if a["kind"].startswith("backup")}


@pytest.fixture
def no_inodes_left(tmp_path):
    """A tmpfs for backup sets with bytes free but no inode (tests run as root): a
    backup's first directory there fails with ENOSPC, a passing fault (unlike a file
    where the directory belongs, which fails the job at once). ``free()`` empties it."""
    mount = tmp_path / "sets"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=32,mode=0700",
                    "tmpfs", str(mount)], check=True)
    try:
        for n in range(1000):
            (mount / f".filler-{n}").write_text("")
    except OSError as exc:
        assert exc.errno == errno.ENOSPC

    def free():
        for filler in mount.glob(".filler-*"):
            filler.unlink()

    yield mount, free
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_failed_backup_fires_until_a_later_backup_succeeds(settings, make_user, caplog,
                                                              no_inodes_left):
    caplog.set_level(logging.INFO, logger="qrq.alerts")
    make_user("root", admin=True, email="root@example.com")
    assert backup_alerts(settings) == {}
    # The job raises: its set's directory cannot be made (no inode left).
    full, _ = no_inodes_left
    broken = with_settings(settings, backup_dir=str(full))
    job = run_backup()
    assert job["status"] == "retrying" and "No space left" in job["error"]
    assert backup_alerts(broken) == {} and mails() == []  # its retry may succeed (below)
    job = run_retry_now(job["id"])
    assert job["status"] == "failed" and job["error"]
    assert [m[:19] for m in mails()] == ["qrq backup FAILED: "]  # failed for good
    found = backup_alerts(broken)
    assert list(found) == ["backup_failed"]
    message = found["backup_failed"]["message"]
    assert "failed" in message and "qrq backup run" in message and "qrq jobs list" in message
    alerts.record(huey.storage, alerts.evaluate(huey.storage, broken))
    assert any("alert backup_failed" in r.getMessage() for r in caplog.records)
    # The next run makes a set, but one database in it did not verify.
    settings = with_settings(settings, backup_dir="")
    broken_db = make_db(settings.data_dir / "analytics" / "broken.db", rows=5000, blob=300)
    corrupt(broken_db)
    job = run_backup()
    assert job["status"] == "finished" and json.loads(job["result"])["status"] == "partial"
    assert list(backup_alerts(settings)) == ["backup_failed"]
    # A later backup that verifies clears it.
    broken_db.unlink()
    job = run_backup()
    assert json.loads(job["result"])["status"] == "ok"
    assert backup_alerts(settings) == {}
    alerts.record(huey.storage, alerts.evaluate(huey.storage, settings))
    assert any(r.getMessage() == "alert backup_failed resolved" for r in caplog.records)


def test_a_backup_that_fails_then_succeeds_on_its_retry_alerts_no_one(settings, make_user,
                                                                      caplog, no_inodes_left):
    """An operator is alerted, and mailed, when a backup failed for good, not for an
    attempt that its retry (backup.run retries once, a minute later) makes good."""
    caplog.set_level(logging.INFO, logger="qrq.alerts")
    make_user("root", admin=True, email="root@example.com")
    full, free = no_inodes_left
    broken = with_settings(settings, backup_dir=str(full))
    job = run_backup()
    assert job["status"] == "retrying" and "No space left" in job["error"]
    assert backup_alerts(broken) == {}
    checked = alerts.check(huey.storage, broken, deliver=lambda *mail: None)  # (no consumer)
    assert "backup_failed" not in checked["alerts"]
    assert mails() == []  # no "qrq backup FAILED" for an attempt that is retried
    free()  # the cause goes away before the retry
    job = run_retry_now(job["id"])
    assert job["status"] == "finished" and json.loads(job["result"])["status"] == "ok"
    assert backup_alerts(broken) == {}
    [report] = mails()  # the report of the set it made, and nothing else
    assert ": ok," in report and "FAILED" not in report
    assert not any("backup_failed" in r.getMessage() for r in caplog.records)


def test_no_backup_for_too_long_fires_once_a_scheduled_backup_was_due(settings):
    now = time.time()
    first_start = now - 20 * HOUR
    assert backup_tasks.catch_up(now=first_start) is None  # a consumer's first start
    # A new install: nothing before the alert's 26 h, though a nightly run was due.
    assert backup_alerts(settings, now) == {}
    found = backup_alerts(settings, first_start + 27 * HOUR)
    assert list(found) == ["backup_age"]
    message = found["backup_age"]["message"]
    assert "no backup has succeeded for 27 h" in message and "first consumer start" in message
    assert "qrq backup run" in message
    # A yearly schedule whose first run is still to come: no alert however long.
    later = datetime.datetime.fromtimestamp(now + 3 * 86400, datetime.UTC)
    yearly = with_settings(settings, backup_schedule=f"0 0 {later.day} {later.month} *")
    assert backup_alerts(yearly, first_start + 27 * HOUR) == {}
    # Backups not scheduled: none expected.
    assert backup_alerts(with_settings(settings, backup_schedule=""),
                         first_start + 27 * HOUR) == {}
    # A backup succeeds: the age counts from its start.
    settings = with_settings(settings, backup_schedule="0 2 * * *")
    assert json.loads(run_backup()["result"])["status"] == "ok"
    assert backup_alerts(settings, first_start + 27 * HOUR) == {}
    found = backup_alerts(settings, time.time() + 27 * HOUR)
    assert list(found) == ["backup_age"] and "the last one started" in \
        found["backup_age"]["message"]

"""Tasks for the reliability tests, loaded into a real consumer through
``QRQ_TASK_MODULES=tests.slow_tasks``. Their work is waiting or spinning, so the
tests can kill, time out, cancel or crowd out a job that is surely running."""

import sqlite3
import time

from huey import crontab

from qrq.queue import job_task, periodic_job, progress
from qrq.sqlite_deadline import interrupt_when


def _steps(task, count: int, pause: float) -> dict:
    for step in range(count):
        progress(task, 100 * step / count, f"step {step + 1}/{count}")
        time.sleep(pause)
    return {"steps": count}


@job_task("maintenance", name="test.steps", retries=0)
def steps(count: int, pause: float, task=None) -> dict:
    """A job that takes count x pause seconds, reporting progress each step."""
    return _steps(task, count, pause)


@job_task("batch", name="test.long_batch")
def long_batch(count: int, pause: float, task=None) -> dict:
    return _steps(task, count, pause)


@job_task("analytics", name="test.long_analytics")
def long_analytics(count: int, pause: float, task=None) -> dict:
    return _steps(task, count, pause)


@job_task("maintenance", name="test.spin", timeout=60)
def spin(task=None) -> None:
    """Stuck in Python code: only a signal stops it."""
    while True:
        pass


@job_task("analytics", name="test.long_query", timeout=60)
def long_query(task=None) -> int:
    """Stuck in one SQLite query (C code): only the progress handler stops it."""
    conn = sqlite3.connect(":memory:")
    try:
        with interrupt_when(conn, lambda: task.is_timed_out):
            return conn.execute("with recursive c(x) as (select 1 union all "
                                "select x + 1 from c) select count(*) from c").fetchone()[0]
    finally:
        conn.close()


@job_task("pdf", name="test.noop")
def noop(task=None) -> None:
    """Nothing at all: a burst of these is queue work only."""


@job_task("batch", name="test.logged_batch")
def logged_batch(pause: float, task=None) -> None:
    """A batch job that writes when it started and ended into the test's ``run_log``
    table (made by the test), so a test can count how many ran at once."""
    from qrq.queue import huey

    huey.storage.sql("insert into run_log (job_id, started) values (?, ?)",
                     (task.id, time.time()), commit=True)
    time.sleep(pause)
    huey.storage.sql("update run_log set ended = ? where job_id = ?", (time.time(), task.id),
                     commit=True)


@periodic_job("maintenance", name="test.every_minute", schedule=crontab())
def every_minute(task=None) -> None:
    """Runs once a minute, on one consumer however many run the scheduler."""

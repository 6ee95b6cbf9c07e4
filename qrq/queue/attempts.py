"""Each run of a job, kept: when it started and ended, on which worker, how it ended.

The job record keeps only the last error; the ``job_attempt`` table keeps one row
per attempt, so an operator sees that a job failed twice before it succeeded, and
why. Rows are written by :mod:`qrq.queue.jobs` in the transaction of the job state
change that starts or ends the attempt, and deleted with their job by
:mod:`qrq.queue.retention` (explicitly: no triggers, for PostgreSQL's sake).

A job's first run (the one that set its ``started_at``) has no row while it runs, nor
when it finishes: the job row says all of it (attempt 1, its worker, ``started_at``,
``finished_at``), and most jobs run once, so most jobs write no attempt row at all.
Its row is written when it ends any other way (failed, retrying, canceled, expired,
released) or is lost (another consumer took the job over), made from the job row
before that change. :func:`list_attempts` shows both kinds alike.
"""

from __future__ import annotations

import time
from typing import Any

# How an attempt ended, named by the job status its end set where they differ: a
# failure with a retry scheduled leaves the job "retrying" but the attempt "failed".
_OUTCOMES = {"retrying": "failed"}
LOST = "lost"  # its lease lapsed and another run took the job over

COLUMNS = ("n", "worker", "started_at", "ended_at", "outcome", "error")

# The job's first run as a row (attempt 1), while the job row still describes it: the
# job is running and has no attempt row. Parameters: worker (None: the job's), ended
# at, outcome, error, the job id twice.
_FIRST_RUN_SQL = (
    "insert into job_attempt (job_id, n, worker, started_at, ended_at, outcome, error) "
    "select id, 1, coalesce(?, worker), started_at, ?, ?, ? from job where id = ? "
    "and status = 'running' and started_at is not null "
    "and not exists (select 1 from job_attempt where job_id = ?)")


def open_attempt(curs, job_id: str, worker: str, now: float,
                 taken_from: str | None = None) -> None:
    """*worker* started running the job again (leased it and marked it running): a new row.

    With *taken_from* (the job was running there and its lease lapsed) that run ended,
    lost, when this one began: its row is closed, or written if it was the first run.
    Does nothing unless the job is running on *worker* (the state change applied).
    """
    running = "id = ? and status = 'running' and worker = ?"
    if taken_from is not None:
        lost = (now, LOST, f"lease lapsed; {worker} took the job over")
        curs.execute(_FIRST_RUN_SQL, (taken_from, *lost, job_id, job_id))
        curs.execute("update job_attempt set ended_at = ?, outcome = ?, error = ? "
                     "where job_id = ? and ended_at is null "
                     f"and exists (select 1 from job where {running})",
                     (*lost, job_id, job_id, worker))
    curs.execute("insert into job_attempt (job_id, n, worker, started_at) "
                 "select id, (select coalesce(max(n), 0) + 1 from job_attempt "
                 f"where job_id = ?), worker, ? from job where {running}",
                 (job_id, now, job_id, worker))


def close_attempt(curs, job_id: str, status: str, error: str | None = None,
                  now: float | None = None, first: bool | None = None) -> None:
    """The job's running attempt ends, leaving the job in *status* (with *error*); called
    before the job's own update, whose row a first run's is made from.

    *status* is the job's new status (finished, failed, canceled, expired, retrying)
    or ``released`` (given back unfinished, to run again); nothing happens when no
    attempt runs (a job canceled while it waited). A job leased before it was due
    goes back to ``queued`` without running: that was no attempt, and its row goes.
    *first*: whether the attempt is the job's first run (None: look).
    """
    if first is not True:
        if status == "queued":
            curs.execute("delete from job_attempt where job_id = ? and ended_at is null",
                         (job_id,))
        else:
            curs.execute("update job_attempt set ended_at = ?, outcome = ?, error = ? "
                         "where job_id = ? and ended_at is null",
                         (time.time() if now is None else now,
                          _OUTCOMES.get(status, status), error, job_id))
        if first is False or curs.rowcount:
            return
    if status not in ("finished", "queued"):  # a finished first run stays the job row's
        curs.execute(_FIRST_RUN_SQL, (None, time.time() if now is None else now,
                                      _OUTCOMES.get(status, status), error, job_id, job_id))


def delete_attempts(curs, job_ids: list[str]) -> None:
    """Delete the attempts of *job_ids* (their job rows go in the same transaction)."""
    if job_ids:
        curs.execute(f"delete from job_attempt where job_id in ({','.join('?' * len(job_ids))})",
                     list(job_ids))


def list_attempts(storage, job_id: str) -> list[dict[str, Any]]:
    """The job's attempts, first first: ``n``, ``worker``, ``started_at``, ``ended_at``
    (None while it runs), ``outcome`` (None while it runs) and ``error``."""
    rows = storage.sql(f"select {', '.join(COLUMNS)} from job_attempt where job_id = ? "
                       "order by n", (job_id,), results=True)
    if not rows:  # none yet: the job's first run, if it runs or finished, is its row
        rows = storage.sql(
            "select 1, worker, started_at, case when status = 'finished' then finished_at "
            "end, case when status = 'finished' then status end, null from job "
            "where id = ? and started_at is not null "
            "and (status = 'running' or status = 'finished')", (job_id,), results=True)
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

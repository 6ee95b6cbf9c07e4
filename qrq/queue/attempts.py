"""Each run of a job, kept: when it started and ended, on which worker, how it ended.

The job record keeps only the last error; the ``job_attempt`` table keeps one row
per attempt, so an operator sees that a job failed twice before it succeeded, and
why. Rows are written by :mod:`qrq.queue.jobs` in the transaction of the job state
change that starts or ends the attempt, and deleted with their job by
:mod:`qrq.queue.retention` (explicitly: no triggers, for PostgreSQL's sake).
"""

from __future__ import annotations

import time
from typing import Any

# How an attempt ended, named by the job status its end set where they differ: a
# failure with a retry scheduled leaves the job "retrying" but the attempt "failed".
_OUTCOMES = {"retrying": "failed"}
LOST = "lost"  # its lease lapsed and another run took the job over

COLUMNS = ("n", "worker", "started_at", "ended_at", "outcome", "error")


def open_attempt(curs, job_id: str, worker: str, now: float) -> None:
    """*worker* started running the job (leased it and marked it running): a new row.

    An attempt still open is one whose lease lapsed: it ended, lost, when this one began.
    Does nothing unless the job is running on *worker* (the state change applied).
    """
    running = "id = ? and status = 'running' and worker = ?"
    curs.execute("update job_attempt set ended_at = ?, outcome = ?, error = ? "
                 "where job_id = ? and ended_at is null "
                 f"and exists (select 1 from job where {running})",
                 (now, LOST, f"lease lapsed; {worker} took the job over", job_id,
                  job_id, worker))
    curs.execute("insert into job_attempt (job_id, n, worker, started_at) "
                 "select id, (select coalesce(max(n), 0) + 1 from job_attempt "
                 f"where job_id = ?), worker, ? from job where {running}",
                 (job_id, now, job_id, worker))


def close_attempt(curs, job_id: str, status: str, error: str | None = None,
                  now: float | None = None) -> None:
    """The job's open attempt ended, leaving the job in *status* (with *error*).

    *status* is the job's new status (finished, failed, canceled, expired, retrying)
    or ``released`` (given back unfinished, to run again); nothing happens when no
    attempt is open (a job canceled while it waited). A job leased before it was due
    goes back to ``queued`` without running: that was no attempt, and its row goes.
    """
    if status == "queued":
        curs.execute("delete from job_attempt where job_id = ? and ended_at is null",
                     (job_id,))
        return
    curs.execute("update job_attempt set ended_at = ?, outcome = ?, error = ? "
                 "where job_id = ? and ended_at is null",
                 (time.time() if now is None else now, _OUTCOMES.get(status, status),
                  error, job_id))


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
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

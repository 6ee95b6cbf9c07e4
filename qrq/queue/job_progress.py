"""A running job's progress, and a request that it stop: the job row's ``progress``,
``stage`` and ``cancel_requested``, written only by the run that holds the job's
lease (its ``worker``)."""

from __future__ import annotations

import logging

from qrq.errors import Unavailable
from qrq.queue.jobs import JobCanceled, LeaseLost

logger = logging.getLogger("qrq.queue.jobs")


def report_progress(storage, job_id: str, percent: float, stage: str = "") -> None:
    """Store a running job's progress; raise :class:`JobCanceled` if cancel was asked.

    Only the run holding the job's lease writes: a run whose lease was taken over
    raises :class:`LeaseLost` instead of overwriting the newer attempt's progress.
    """
    percent = max(0, min(100, int(percent)))
    try:
        with storage.db(commit=True) as curs:
            curs.execute("update job set progress = ?, stage = ? where id = ? "
                         "and status = 'running' and worker = ? returning cancel_requested",
                         (percent, stage[:200], job_id, storage.owner))
            row = curs.fetchone()
            if row is None:
                curs.execute("select worker from job where id = ? and status = 'running'",
                             (job_id,))
                taken = curs.fetchone()
    except Unavailable:
        # Progress is a report, not the work: the job goes on while the database
        # restarts (its outcome is written when it is back, or its lease lapses).
        logger.warning("job %s: progress not recorded", job_id, exc_info=True)
        return
    if row is None:
        if taken is not None:
            raise LeaseLost(f"lease lost: worker {taken[0]} runs this job now")
    elif row[0]:
        raise JobCanceled()


def flag_cancel(storage, job_id: str) -> bool:
    """Ask a running or retrying job to stop; True when it was in such a state."""
    with storage.db(commit=True) as curs:
        curs.execute("update job set cancel_requested = 1 where id = ? "
                     "and status in ('running', 'retrying')", (job_id,))
        return curs.rowcount > 0


def record_progress(curs, job_id: str, worker: str, percent: float, stage: str = "") -> bool:
    """Store a running job's progress in the caller's transaction (beside the writes it
    reports on); return whether a cancel was asked. Unlike :func:`report_progress` it
    does not raise: the caller decides where to stop. Only the run holding the lease
    (*worker*, the storage's ``owner``) writes; for any other it is a no-op."""
    curs.execute("update job set progress = ?, stage = ? where id = ? and status = 'running' "
                 "and worker = ? returning cancel_requested",
                 (max(0, min(100, int(percent))), stage[:200], job_id, worker))
    row = curs.fetchone()
    return bool(row and row[0])

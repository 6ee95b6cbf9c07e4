"""Who waits for a shared analytics job, and withdrawing one request from it.

Identical report requests share one job (:mod:`qrq.analytics.cache`), so one
requester's cancel must not take the report away from the others. Each request that
starts or joins a job is recorded (``analytics_requester``, in the claim's
transaction); the CLI and the warm-up, which have no user, are requester
:data:`NO_USER`. A requester's cancel withdraws only their request: their view of the
job says canceled, the job is no longer theirs (it leaves their job list and their
quota), and it goes on for the others. The job is canceled when no requester is left,
or by an admin (dashboard, admin API, CLI), for everyone as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qrq.errors import Conflict
from qrq.queue import jobs

NO_USER = 0  # the requester without a user account: the CLI, the warm-up


def join(curs, job_id: str, user_id: int | None) -> None:
    """Record *user_id* as a requester of *job_id* (again, if they had withdrawn);
    inside the caller's transaction."""
    curs.execute("insert into analytics_requester (job_id, user_id) values (?, ?) "
                 "on conflict (job_id, user_id) do update set withdrawn = 0",
                 (job_id, NO_USER if user_id is None else user_id))


def drop(curs, job_id: str) -> None:
    """Forget the requesters of a claimed job that was never enqueued."""
    curs.execute("delete from analytics_requester where job_id = ?", (job_id,))


def drop_orphans(curs) -> int:
    """Forget the requesters of jobs that neither exist nor are claimed (a process that
    died between its claim and its enqueue)."""
    curs.execute("delete from analytics_requester where job_id not in (select id from job) "
                 "and job_id not in (select job_id from analytics_cache "
                 "where job_id is not null)")
    return curs.rowcount


def has_withdrawn(storage, job_id: str, user_id: int) -> bool:
    """Whether *user_id* asked for *job_id* and then withdrew."""
    return bool(storage.sql("select 1 from analytics_requester where job_id = ? and "
                            "user_id = ? and withdrawn = 1", (job_id, user_id), results=True))


def withdraw(storage, job: dict[str, Any], user_id: int,
             cancel: Callable[[str], str]) -> str:
    """Withdraw *user_id*'s request for the analytics *job*; the status the caller sees.

    The job goes on while another requester waits for it (the caller sees
    ``canceled``); otherwise it is canceled with *cancel* (``QrqHuey.cancel``), whose
    status is returned, and the next request for the report starts a new job.

    :raises Conflict: *user_id* is not waiting for the job (never asked for it, or
        withdrew already).
    """
    job_id = job["id"]
    with storage.db(commit=True) as curs:
        # Take turns with every claim and withdrawal of this job (no-op writes lock
        # rows): first its cache row, which a claim joining the job locks first, then
        # its requester rows. On PostgreSQL a withdrawal would otherwise count a joining
        # request or a second withdrawal wrongly (their changes not committed yet):
        # cancel a job someone just joined, or leave it running for nobody. SQLite's
        # write transactions already take turns.
        curs.execute("update analytics_cache set job_id = job_id where job_id = ?",
                     (job_id,))
        curs.execute("update analytics_requester set withdrawn = withdrawn "
                     "where job_id = ?", (job_id,))
        curs.execute("select withdrawn from analytics_requester where job_id = ? and "
                     "user_id = ?", (job_id, user_id))
        row = curs.fetchone()
        # A job from before requesters were recorded has its owner as its one requester.
        if (row[0] if row else job["owner_id"] != user_id):
            raise Conflict(f"you are not waiting for job {job_id}")
        curs.execute("insert into analytics_requester (job_id, user_id, withdrawn) "
                     "values (?, ?, 1) on conflict (job_id, user_id) do update set "
                     "withdrawn = 1", (job_id, user_id))
        jobs.disown(curs, job_id, user_id)
        curs.execute("select count(*) from analytics_requester where job_id = ? and "
                     "withdrawn = 0", (job_id,))
        others = curs.fetchone()[0]
        if not others:  # nobody joins it from now on: a new request starts a new job
            curs.execute("update analytics_cache set job_id = null, claimed_at = null "
                         "where job_id = ?", (job_id,))
    return "canceled" if others else cancel(job_id)

"""Job records: one row per job in the queue database, beside huey's task rows.

A record is written when the job is enqueued (in the enqueue's transaction, so a
job id that was handed out always has one), when a consumer leases it, as it
reports progress, and when it ends. Reading a record never changes it, unlike
huey's result store whose ``get()`` pops the result.

The write helpers take a cursor inside the caller's transaction; the read
helpers take the storage and open their own.
"""

from __future__ import annotations

import datetime
import json
import re
import time
import traceback
from dataclasses import dataclass
from typing import Any

from huey.exceptions import CancelExecution, TaskTimeout

from qrq.errors import Conflict, NotFound, QrqError
from qrq.queue import attempts
from qrq.queue.schema import ACTIVE_SQL

STATES = ("queued", "running", "retrying", "finished", "failed", "canceled", "expired")
ACTIVE = ("queued", "running", "retrying")
ENDED = ("finished", "failed", "canceled", "expired")
JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


COLUMNS = ("id", "type", "name", "owner_id", "status", "progress", "stage", "params",
           "attempts", "worker", "created_at", "started_at", "finished_at",
           "next_attempt_at", "cancel_requested", "result", "error", "traceback")


class JobCanceled(CancelExecution):
    """The job was canceled while it ran.

    A huey ``CancelExecution`` that is never retried: huey logs one line for it,
    not the traceback of an unhandled error.
    """

    def __init__(self, message: str = "canceled while running"):
        super().__init__(message, retry=False)


class LeaseLost(JobCanceled):
    """This run's lease lapsed and another consumer runs the job now: stop, write nothing."""


@dataclass(frozen=True)
class EndedJob:
    """A job whose end was just recorded, as the statement that recorded it read the job:
    what the end hooks (``QrqHuey.on_job_end``) get, so none reads the job again."""

    id: str
    type: str
    status: str
    has_callback: bool  # a webhook_target row names it (qrq/webhooks.py posts its end)


def new_record(job_id: str, job_type: str, name: str, owner_id: int | None,
               params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": job_id, "type": job_type, "name": name, "owner_id": owner_id,
            "params": json.dumps(params) if params else "{}", "created_at": time.time()}


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The owner's message and the admin's traceback for a failed attempt (none for a
    cancel: someone's decision, not an error to debug)."""
    if isinstance(exc, JobCanceled):
        return {"error": str(exc), "traceback": None}
    message = ("timeout" if isinstance(exc, TaskTimeout) else str(exc)
               if isinstance(exc, QrqError) else f"{type(exc).__name__}: {exc}")
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"error": message, "traceback": trace}


# -- writes, inside the caller's transaction ------------------------------------------

def insert(curs, record: dict[str, Any]) -> bool:
    """Insert a job record; False (and the record kept) when one with its id exists
    (a periodic task's slot another consumer enqueued, a repeated explicit id)."""
    curs.execute("insert into job (id, type, name, owner_id, params, created_at, "
                 "payload) values (:id, :type, :name, :owner_id, :params, :created_at, "
                 ":payload) on conflict do nothing", {"payload": None, **record})
    return curs.rowcount == 1


def reset_for_retry(curs, job_id: str, now: float | None = None) -> bool:
    """Put an ended job back to ``queued``, due (waiting) from *now*; its attempts count on."""
    curs.execute("update job set status = 'queued', progress = 0, stage = '', error = null, "
                 "traceback = null, result = null, finished_at = null, started_at = null, "
                 "next_attempt_at = ?, cancel_requested = 0, worker = null where id = ? and "
                 "status in ('failed', 'canceled', 'expired')", (now or time.time(), job_id))
    return curs.rowcount > 0


# A consumer leased the job: a new attempt starts from no progress. Parameters: the
# worker, the time, the job id; returns the attempt count and first start, which tell
# whether this is the job's first run. (PostgreSQL's lease statement embeds it.)
_MARK_RUNNING = (
    "update job set status = 'running', attempts = attempts + 1, worker = ?, "
    "progress = 0, stage = '', started_at = coalesce(started_at, ?), "
    "next_attempt_at = null where id {} and status in ({}) "
    "returning {}attempts, started_at")
MARK_RUNNING_SQL = _MARK_RUNNING.format("= ?", "'queued', 'retrying', 'running'", "")
# The same for the jobs of several rows leased together: ``{}`` is their ids' condition.
MARK_ALL_RUNNING_SQL = _MARK_RUNNING.format("{}", "'queued', 'retrying', 'running'", "id, ")


# In PostgreSQL's lease statement (on the task row): the worker of the job's run whose
# lease lapsed, read from the job row before the lease marks it running again (the one
# place that names it); null when the job was not running.
TAKEN_FROM_SQL = ("(select worker from job where job.id = task.job_id "
                  "and job.status = 'running') as taken_from")


def mark_all_running(curs, job_ids: list[str], worker: str,
                     now: float) -> dict[str, tuple[bool | None, int | None]]:
    """Consumers leased the jobs: a new attempt of each starts from no progress.
    ``{job_id: (first, attempt)}``: whether it is the job's first run (see
    :func:`attempt_started`) and the run's number, the job's ``attempts`` as the lease
    set it; ``(None, None)`` if it was not runnable."""
    # Nearly every lease starts a waiting job: one statement for all of them. Only a job
    # whose lease lapsed is still running, and its new attempt names the worker that
    # lost it, read before the update (SQLite's RETURNING gives only the new row).
    curs.execute(_MARK_RUNNING.format(f"in ({','.join('?' * len(job_ids))})",
                                      "'queued', 'retrying'", "id, "),
                 (worker, now, *job_ids))
    started = {job_id: marked for job_id, *marked in curs.fetchall()}
    runs = {}
    for job_id in job_ids:
        marked, taken_from = started.get(job_id), None
        if marked is None:
            curs.execute("select worker from job where id = ? and status = 'running'",
                         (job_id,))
            running = curs.fetchone()
            if running is not None:
                taken_from = running[0]
                curs.execute(MARK_RUNNING_SQL, (worker, now, job_id))
                marked = curs.fetchone()
        first = attempt_started(curs, job_id, worker, now, taken_from, marked)
        runs[job_id] = (first, None if first is None else marked[0])
    return runs


def attempt_started(curs, job_id: str, worker: str, now: float, taken_from: str | None,
                    marked: tuple | None) -> bool | None:
    """The attempt's part of :func:`mark_all_running` (PostgreSQL's lease statement marks
    the job running itself), given what the job's update returned (*marked*).

    The job's first run needs no row: the job row describes it (:mod:`qrq.queue.attempts`).
    Returns whether this is that run; None when the job was not marked running.
    """
    if marked is None or marked[0] is None:
        return None
    first = taken_from is None and marked[0] == 1 and marked[1] == now
    if not first:
        attempts.open_attempt(curs, job_id, worker, now, taken_from)
    return first


def mark_released(curs, job_id: str, first: bool | None = None) -> None:
    """The job's lease was given back unfinished: it waits to run again, from the start.
    *first*: whether the run was the job's first (None: not known)."""
    attempts.close_attempt(curs, job_id, "released", first=first)
    curs.execute("update job set status = 'queued', worker = null, progress = 0, stage = '', "
                 "attempts = case when attempts > 0 then attempts - 1 else 0 end "
                 "where id = ? and status = 'running'",
                 (job_id,))


def mark_waiting(curs, job_id: str, outcome: dict[str, Any],
                 first: bool | None = None) -> None:
    """The attempt failed and another is scheduled (``retrying``) or deferred (``queued``)."""
    attempts.close_attempt(curs, job_id, outcome["status"], outcome.get("error"), first=first)
    curs.execute("update job set status = :status, next_attempt_at = :next_attempt_at, "
                 "error = :error, traceback = :traceback, worker = null, "
                 "attempts = case when :status = 'queued' and attempts > 0 then attempts - 1 "
                 "when :status = 'queued' then 0 else attempts end "
                 "where id = :id and status = 'running'",
                 {"traceback": None, "error": None, **outcome, "id": job_id})


def finish_sql(fence: str = "") -> str:
    """How a job ended, recorded at most once (and only where *fence*, an extra condition,
    holds); parameters: :func:`finish_values`. Returns the job's type and whether a
    callback waits for its end (qrq/webhooks.py's target), for :func:`ended_job`.
    PostgreSQL's completion embeds it after the lease's end (postgres_end.py)."""
    return ("update job set status = :status, result = :result, error = :error, "
            "traceback = :traceback, finished_at = :now, next_attempt_at = null, "
            "progress = case when :status = 'finished' then 100 else progress end, "
            "stage = case when :status = 'finished' then 'done' else stage end "
            "where id = :id and status in ('queued', 'running', 'retrying') "
            f"{f'and {fence} ' if fence else ''}returning {_ENDED}")


_ENDED = ("type, exists (select 1 from webhook_target where webhook_target.job_id = job.id) "
          "as has_callback")


FINISH_SQL = finish_sql()


def finish(curs, job_id: str, outcome: dict[str, Any],
           first: bool | None = None) -> EndedJob | None:
    """Record how a job ended: status, result or error, at most once. *first*: whether
    the run that ends is the job's first (None: not known, or no run). Returns the
    ended job, or None when it had ended already (nothing was recorded)."""
    values = finish_values(job_id, outcome)
    if not closes_no_attempt(outcome, first):
        # Before the job's update: the attempt's row is made from the job row as it was.
        attempts.close_attempt(curs, job_id, values["status"], values["error"],
                               values["now"], first=first)
    curs.execute(FINISH_SQL, values)
    return ended_job(values, curs.fetchone())


def closes_no_attempt(outcome: dict[str, Any], first: bool | None) -> bool:
    """Whether the end writes no attempt row: a first run that finished, which the job
    row describes (:mod:`qrq.queue.attempts`). Then :func:`finish_sql` is all of it."""
    return first is True and outcome["status"] == "finished"


def finish_values(job_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """The parameters of :func:`finish_sql` for *outcome*; its ``now`` (when the run
    ended, if its end is written later) defaults to the present."""
    values = {"result": None, "error": None, "traceback": None, "now": time.time(),
              **outcome, "id": job_id}
    if values["result"] is not None:
        # default=str: a result with a date or a Path must not leave the job running.
        values["result"] = json.dumps(values["result"], default=str)
    return values


def ended_job(values: dict[str, Any], row: tuple | None) -> EndedJob | None:
    """The job :func:`finish_sql` ended, from what it returned (*row*; None: nothing)."""
    return row and EndedJob(values["id"], row[0], values["status"], bool(row[1]))


def ended_by(curs, job_id: str, status: str, worker: str,
             attempt: int | None) -> EndedJob | None:
    """The job as :func:`finish_sql` returns it, if its record shows that it ended with
    *status* in *worker*'s run numbered *attempt* (that end was written); else None.
    (The worker is a process: its threads share it, and a run of another thread, whose
    number is higher, may have ended the job.)"""
    curs.execute(f"select {_ENDED} from job where id = ? and status = ? and worker = ? "
                 "and attempts = ?", (job_id, status, worker, attempt))
    return ended_job({"id": job_id, "status": status}, curs.fetchone())


# -- reads and small updates through the storage ----------------------------------------

def any_jobs(storage) -> bool:
    """Whether the queue holds a job record (the installation has run)."""
    return bool(storage.sql("select 1 from job limit 1", results=True))


def get(storage, job_id: str) -> dict[str, Any] | None:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        return None
    rows = storage.sql(f"select {', '.join(COLUMNS)} from job where id = ?", (job_id,),
                       results=True)
    return dict(zip(COLUMNS, rows[0], strict=False)) if rows else None


def disown(curs, job_id: str, owner_id: int) -> None:
    """*owner_id* no longer owns the job (it runs on for others: a shared analytics job)."""
    curs.execute("update job set owner_id = null where id = ? and owner_id = ?",
                 (job_id, owner_id))


def count_active(curs, owner_id: int, job_type: str | None = None) -> int:
    """How many of *owner_id*'s jobs (of *job_type*, if given) are queued, running or
    retrying, read on *curs* (the quota check runs it inside the enqueue's write
    transaction).

    The condition is the partial index ``job_active``'s, so SQLite counts its entries.
    """
    if job_type is None:
        curs.execute(_COUNT_ACTIVE_SQL, (owner_id,))
    else:
        curs.execute(f"{_COUNT_ACTIVE_SQL} and type = ?", (owner_id, job_type))
    return curs.fetchone()[0]


_COUNT_ACTIVE_SQL = f"select count(*) from job where owner_id = ? and {ACTIVE_SQL}"


def count_busy(storage, exclude: str | None = None) -> int:
    """Jobs running or waiting to run now (not those waiting for a retry), other
    than *exclude*: the queue is idle when this is 0."""
    return storage.sql("select count(*) from job where (status = 'queued' or "
                       "status = 'running') and id is distinct from ?", (exclude,),
                       results=True)[0][0]


def median_duration(storage, job_type: str, sample: int = 20) -> float | None:
    """Median run time in seconds of the last *sample* finished jobs of a type."""
    rows = storage.sql("select finished_at - started_at from job where type = ? and "
                       "status = 'finished' and finished_at is not null "
                       "and started_at is not null order by finished_at desc limit ?",
                       (job_type, sample), results=True)
    durations = sorted(d for d, in rows if d is not None)
    return durations[len(durations) // 2] if durations else None


def attempts_view(storage, job_id: str, admin: bool) -> list[dict[str, Any]]:
    """Each run of the job as the API shows it: start, end, outcome and error (and the
    worker, to admins)."""
    hidden = () if admin else ("worker",)
    return [{**{key: value for key, value in row.items() if key not in hidden},
             "started_at": iso(row["started_at"]), "ended_at": iso(row["ended_at"])}
            for row in attempts.list_attempts(storage, job_id)]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_view(job: dict[str, Any], *, admin: bool = False) -> dict[str, Any]:
    """The job as the status API shows it; the traceback only to admins."""
    view = {
        "job_id": job["id"], "type": job["type"], "status": job["status"],
        "progress": job["progress"], "stage": job["stage"],
        "created_at": iso(job["created_at"]), "started_at": iso(job["started_at"]),
        "finished_at": iso(job["finished_at"]),
        "result": json.loads(job["result"]) if job["result"] else None,
        "error": job["error"], "attempts": job["attempts"],
        "next_attempt_at": iso(job["next_attempt_at"]),
        "params": json.loads(job["params"]),
    }
    if admin:
        view["owner_id"] = job["owner_id"]
        view["worker"] = job["worker"]
        view["traceback"] = job["traceback"]
    return view


def stored_payload(storage, job_id: str) -> bytes | None:
    """The signed task message kept for a retry; None when the job predates stored
    payloads (or does not exist)."""
    rows = storage.sql("select payload from job where id = ?", (job_id,), results=True)
    return rows[0][0] if rows else None


def resolve_id(storage, ref: str, limit: int = 10) -> str:
    """The full id of the job whose id is *ref* or starts with it (the dashboard's short
    ids: ``5bc296e7``).

    :raises NotFound: no job matches.
    :raises Conflict: several jobs match; the message lists up to *limit* of them.
    """
    prefix = ref.strip().lower() if isinstance(ref, str) else ""
    if not re.fullmatch(r"[0-9a-f-]{1,36}", prefix):
        raise NotFound(f"no job {ref!r}: a job id is hexadecimal digits and dashes")
    # A range on the primary key, not LIKE: '~' sorts after every hex digit and '-'.
    rows = storage.sql("select id from job where id >= ? and id < ? order by id limit ?",
                       (prefix, prefix + "~", limit + 1), results=True)
    found = [job_id for job_id, in rows]
    if not found:
        raise NotFound(f"no job {ref}")
    if len(found) > 1:
        count = f"more than {limit}" if len(found) > limit else str(len(found))
        raise Conflict(f"job id {ref} is ambiguous: {count} jobs start with it "
                       f"({', '.join(found[:limit])}); give more digits")
    return found[0]

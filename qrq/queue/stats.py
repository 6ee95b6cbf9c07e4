"""Read-only numbers about the queue: counts per type and state, consumers, throughput.

Every function takes the queue storage (anything with huey's ``sql()``) and
returns plain dicts and lists, with times as Unix seconds; the admin API, the
dashboard, the Prometheus collector, the alerts and the CLI all read the same
figures from the database, so every web process reports the same values.

A job "scheduled" is a queued job waiting in huey's ``schedule`` table for its
time (a delayed job); a retrying job waits there too but counts as retrying.
Once due, it moves to the task table and counts as queued.
"""

from __future__ import annotations

import time
from typing import Any

from qrq.queue.jobs import COLUMNS, ENDED
from qrq.queue.schema import ACTIVE_SQL

JOB_TYPES = ("pdf", "batch", "analytics", "maintenance", "mail", "webhook")
# The states the dashboard and the metrics show: job states plus "scheduled".
QUEUE_STATES = ("queued", "scheduled", "running", "retrying", *ENDED)
# Run-time buckets (seconds) of the duration histograms.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HOUR = 3600.0
_IN_SCHEDULE = "id in (select job_id from schedule where queue = ? and job_id is not null)"


def _types(found: set[str]) -> list[str]:
    """The known job types first, then any other type present in the data."""
    return [*JOB_TYPES, *sorted(found - set(JOB_TYPES))]


def _present_types(storage) -> list[str]:
    """The job types in the table, each found by one index seek (a "skip scan").

    Naming them lets the time-range queries below seek the (type, status,
    finished_at) index per type instead of reading every job.
    """
    rows = storage.sql(
        "with recursive t(type) as (select min(type) from job union all "
        "select (select min(type) from job where type > t.type) from t "
        "where t.type is not null) select type from t where type is not null", results=True)
    return [job_type for job_type, in rows]


def _in(values: list[str]) -> str:
    # "in ()" is SQLite's only; "in (null)" matches nothing on both.
    return ",".join("?" * len(values)) or "null"


def _scheduled(storage) -> dict[str, int]:
    """``{type: n}`` of queued jobs waiting in huey's schedule (delayed jobs)."""
    rows = storage.sql("select j.type, count(*) from schedule s join job j on j.id = s.job_id "
                       "where s.queue = ? and j.status = 'queued' group by j.type",
                       (storage.name,), results=True)
    return dict(rows)


def job_counts(storage) -> dict[str, dict[str, int]]:
    """``{type: {state: count}}`` over every retained job, each type with every state."""
    # Two cheap reads (a scan of an index, and the few schedule rows) rather than one
    # query testing schedule membership per job, which is several times slower.
    rows = storage.sql(f"select type, status, count(*) from job where {ACTIVE_SQL} "
                       "group by type, status union all select type, status, count(*) "
                       "from job where finished_at is not null group by type, status",
                       results=True)  # the partial indexes job_active and job_ended
    counts = {t: dict.fromkeys(QUEUE_STATES, 0) for t in _types({r[0] for r in rows})}
    for job_type, status, count in rows:
        counts[job_type][status] = counts[job_type].get(status, 0) + count
    for job_type, count in _scheduled(storage).items():
        counts[job_type]["scheduled"] += count
        counts[job_type]["queued"] -= count
    return counts


def queued_count(storage) -> int:
    """Jobs waiting to run now, all types (not the delayed ones): the backlog."""
    total = storage.sql("select count(*) from job where status = 'queued'",
                        results=True)[0][0]
    return total - sum(_scheduled(storage).values())


def ended_since(storage, since: float) -> dict[str, dict[str, int]]:
    """``{type: {status: count}}`` of the jobs that ended at or after *since*."""
    types = _present_types(storage)
    rows = storage.sql(f"select type, status, count(*) from job where type in ({_in(types)}) "
                       f"and status in ({_in(ENDED)}) and finished_at >= ? "
                       "group by type, status", (*types, *ENDED, since), results=True)
    counts = {t: dict.fromkeys(ENDED, 0) for t in _types({r[0] for r in rows})}
    for job_type, status, count in rows:
        counts[job_type][status] = count
    return counts


def oldest_queued(storage, now: float | None = None) -> dict[str, float]:
    """``{type: seconds}``: how long the longest-waiting due job of each type has waited.

    A job waits from its creation, or from its next attempt time if it was deferred;
    jobs still in the schedule are not waiting yet.
    """
    now = time.time() if now is None else now
    rows = storage.sql(
        "select type, min(case when next_attempt_at > created_at then next_attempt_at "
        "else created_at end) from job "
        f"where status = 'queued' and not {_IN_SCHEDULE} group by type", (storage.name,),
        results=True)
    return {job_type: max(0.0, now - since) for job_type, since in rows}


def schedule_size(storage) -> int:
    """Entries in huey's schedule table (deferred tasks and retries waiting)."""
    return storage.sql("select count(*) from schedule where queue = ?", (storage.name,),
                       results=True)[0][0]


def consumers(storage, now: float | None = None) -> list[dict[str, Any]]:
    """Registered consumers, newest heartbeat first, each with the jobs it runs now.

    A worker's lease owner is ``"<consumer id>/<pid>:<nonce>"``, so the leased task
    rows tell which consumer runs which job.
    """
    now = time.time() if now is None else now
    rows = storage.sql("select id, host, pid, workers, started_at, heartbeat_at, job_types, "
                       "exclude_job_types from consumer order by heartbeat_at desc",
                       results=True)
    found = {row[0]: {"id": row[0], "host": row[1], "pid": row[2], "workers": row[3],
                      "started_at": row[4], "heartbeat_at": row[5],
                      "heartbeat_age": max(0.0, now - row[5]),
                      "job_types": row[6].split(",") if row[6] else [],
                      "exclude_job_types": row[7].split(",") if row[7] else [],
                      "jobs": []}
             for row in rows}
    leased = storage.sql(
        "select t.lease_owner, t.job_id, t.job_type, j.name, j.progress, j.stage, "
        "j.started_at from task t left join job j on j.id = t.job_id "
        "where t.queue = ? and t.lease_owner is not null and t.lease_until >= ? "
        "order by t.id", (storage.name, now), results=True)
    for owner, job_id, job_type, name, progress, stage, started_at in leased:
        consumer = found.get(owner.split("/", 1)[0])
        if consumer is not None:
            consumer["jobs"].append({"job_id": job_id, "type": job_type, "name": name,
                                     "progress": progress, "stage": stage,
                                     "started_at": started_at, "worker": owner})
    return list(found.values())


def lapsed_types(storage, now: float | None = None) -> set[str]:
    """The types of jobs left running by a consumer that stopped (their lease lapsed and
    no one took them over yet)."""
    rows = storage.sql("select distinct job_type from task where queue = ? and lease_owner "
                       "is not null and lease_until < ?", (storage.name, now or time.time()),
                       results=True)
    return {job_type for job_type, in rows if job_type}


def last_heartbeat(storage, host: str | None = None) -> float | None:
    """The newest heartbeat of any consumer (on *host*, if given), or None when none
    is registered."""
    if host is None:
        return storage.sql("select max(heartbeat_at) from consumer", results=True)[0][0]
    return storage.sql("select max(heartbeat_at) from consumer where host = ?", (host,),
                       results=True)[0][0]


def probe(storage) -> None:
    """Read the job table once; raises whatever the database raises (health checks)."""
    storage.sql("select 1 from job limit 1", results=True)


def periodic_last_run(storage, job_type: str, name: str) -> dict[str, Any] | None:
    """The newest job record of the periodic task *name* (``{"id", "status",
    "created_at"}``), or None; the type narrows the scan to an index."""
    rows = storage.sql("select id, status, created_at from job where type = ? and name = ? "
                       "order by created_at desc limit 1", (job_type, name), results=True)
    return dict(zip(("id", "status", "created_at"), rows[0], strict=True)) if rows else None


def existing_job_ids(storage, job_ids: list[str]) -> set[str]:
    """Those of *job_ids* that have a job record."""
    if not job_ids:
        return set()
    rows = storage.sql(f"select id from job where id in ({_in(job_ids)})", job_ids,
                       results=True)
    return {job_id for job_id, in rows}


def queue_status(storage, now: float | None = None,
                 counts: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """Per type: queued, scheduled, running, retrying, failed (retained), finished and
    failed in the last hour, and the oldest queued job's age; plus the consumers.

    *counts* is :func:`job_counts` when the caller has it already.
    """
    now = time.time() if now is None else now
    counts = job_counts(storage) if counts is None else counts
    recent = ended_since(storage, now - HOUR)
    oldest = oldest_queued(storage, now)
    types = {}
    for job_type in _types(set(counts) | set(recent)):
        mine = counts.get(job_type, {})
        types[job_type] = {
            "queued": mine.get("queued", 0), "scheduled": mine.get("scheduled", 0),
            "running": mine.get("running", 0), "retrying": mine.get("retrying", 0),
            "failed": mine.get("failed", 0),
            "finished_last_hour": recent.get(job_type, {}).get("finished", 0),
            "failed_last_hour": recent.get(job_type, {}).get("failed", 0),
            "oldest_queued_age": oldest.get(job_type),
        }
    totals = {key: sum(t[key] for t in types.values())
              for key in ("queued", "scheduled", "running", "retrying", "failed",
                          "finished_last_hour", "failed_last_hour")}
    ages = [t["oldest_queued_age"] for t in types.values() if t["oldest_queued_age"] is not None]
    totals["oldest_queued_age"] = max(ages) if ages else None
    totals["schedule_entries"] = schedule_size(storage)
    return {"generated_at": now, "types": types, "totals": totals,
            "consumers": consumers(storage, now)}


def throughput(storage, now: float | None = None, hours: int = 24) -> list[dict[str, Any]]:
    """Jobs ended per hour over the last *hours* whole hours (the last one partial).

    Each bucket: ``{"start", "finished", "failed", "canceled", "expired", "failure_rate"}``
    where the failure rate is failed / (finished + failed), or None with neither.
    """
    now = time.time() if now is None else now
    start = (now // HOUR - (hours - 1)) * HOUR
    buckets = [{"start": start + i * HOUR, **dict.fromkeys(ENDED, 0)} for i in range(hours)]
    types = _present_types(storage)
    rows = storage.sql(f"select floor((finished_at - ?) / ?) as b, status, "
                       f"count(*) from job where type in ({_in(types)}) and status in "
                       f"({_in(ENDED)}) and finished_at >= ? and finished_at < ? "
                       "group by b, status",
                       (start, HOUR, *types, *ENDED, start, start + hours * HOUR),
                       results=True)
    for index, status, count in rows:
        index = int(index)
        if 0 <= index < hours and status in ENDED:
            buckets[index][status] += count
    for bucket in buckets:
        done = bucket["finished"] + bucket["failed"]
        bucket["failure_rate"] = bucket["failed"] / done if done else None
    return buckets


def durations(storage, since: float,
              buckets: tuple[float, ...] = DURATION_BUCKETS) -> dict[str, dict[str, Any]]:
    """Run times of the jobs finished since *since*, per type, as cumulative buckets.

    ``{type: {"buckets": [(le, count), ..., ("+Inf", count)], "sum": s, "count": n}}``.
    """
    bucket_sql = ", ".join("sum(case when d <= ? then 1 else 0 end)" for _ in buckets)
    types = _present_types(storage)
    rows = storage.sql(
        f"select type, {bucket_sql}, count(*), coalesce(sum(d), 0.0) from (select type, "
        "case when finished_at > started_at then finished_at - started_at else 0 end "
        "as d from job where "
        f"type in ({_in(types)}) and status = 'finished' and finished_at >= ? "
        "and started_at is not null) as ended group by type",
        (*buckets, *types, since), results=True)
    found = {}
    for row in rows:
        job_type, counts, count, total = row[0], row[1:-2], row[-2], row[-1]
        found[job_type] = {
            "buckets": [*zip(buckets, (c or 0 for c in counts), strict=True),
                        ("+Inf", count)],
            "sum": total, "count": count}
    return found


# The job list's sort keys; a sort by start or duration lists only the jobs that have one.
SORTS = {"created": ("created_at", None),
         "started": ("started_at", "started_at is not null"),
         "duration": ("finished_at - started_at",
                      "finished_at is not null and started_at is not null")}
_TEXT_IN = ("lower(name) like ? escape '\\'", "lower(params) like ? escape '\\'",
            "lower(coalesce(error, '')) like ? escape '\\'",
            # A batch's payloads are its items' data (read here for the search only);
            # per listed job, so a poll over recent jobs reads only their items.
            "exists (select 1 from batch_item b where b.job_id = job.id "
            "and lower(b.data) like ? escape '\\')")


def escape_like(text: str) -> str:
    """*text* as a literal inside a ``like ... escape '\\'`` pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def job_types(storage) -> list[str]:
    """The known job types, then any other type present in the job table."""
    return _types(set(_present_types(storage)))


def sort_value(job: dict[str, Any], sort: str) -> float | None:
    """A listed job's value of the sort key *sort* (see :data:`SORTS`)."""
    if sort == "duration":
        return job["finished_at"] - job["started_at"]
    return job[f"{sort}_at"]


def search_jobs(storage, *, job_type: str | None = None, status: str | None = None,
                queue_state: str | None = None, owner_id: int | None = None,
                system: bool = False, created_from: float | None = None,
                created_to: float | None = None, id_prefix: str | None = None,
                name_contains: str | None = None, text: str | None = None,
                worker: str | None = None, sort: str = "created", descending: bool = True,
                after: tuple[float, str] | None = None, limit: int = 50, offset: int = 0,
                before: tuple[float, str] | None = None,
                with_total: bool = True) -> tuple[list[dict[str, Any]], int | None]:
    """Job records matching every given filter, newest first (or by *sort*), and how
    many match in all (None without *with_total*): the one job listing of the API,
    dashboard and CLI.

    *status* is the stored status (a delayed job is "queued"); *queue_state* is one of
    :data:`QUEUE_STATES`, where "queued" means due and "scheduled" still delayed.
    *system* selects the jobs owned by no one (periodic tasks, CLI jobs). *text* is
    found in the id's start, the task name, the parameters, the error or a batch's
    item data (case-insensitive); *worker* is a consumer id (its jobs) or one worker's
    lease owner. *sort* is a key of :data:`SORTS`. *after* (a listed job's
    ``(sort value, id)``) starts after that job: a page that new jobs do not shift;
    *before* is the same for the default order (newest first).
    """
    expression, needs = SORTS[sort]
    due_or_delayed = queue_state in ("queued", "scheduled")
    # Job ids are lower-case hex and dashes (checked by the caller): no LIKE escapes.
    conditions = [("type = ?", job_type), ("status = ?", status),
                  ("status = ?", None if due_or_delayed else queue_state),
                  ("owner_id = ?", None if system else owner_id),
                  ("created_at >= ?", created_from), ("created_at < ?", created_to),
                  ("id like ?", id_prefix + "%" if id_prefix else None),
                  # lower() on both sides: PostgreSQL's like is case-sensitive.
                  ("lower(name) like ? escape '\\'",
                   f"%{escape_like(name_contains.lower())}%" if name_contains else None),
                  ("worker like ? escape '\\'",
                   None if not worker else escape_like(worker) + ("" if "/" in worker
                                                                   else "/%"))]
    where = [sql for sql, value in conditions if value is not None]
    params: list[Any] = [value for _, value in conditions if value is not None]
    if job_type is None and owner_id is None and not system and created_from is not None:
        # A recent range of every type: seek the (type, created_at) index per type.
        types = _present_types(storage)
        where.append(f"type in ({_in(types)})" if types else "0 = 1")
        params.extend(types)
    if text:
        pattern = f"%{escape_like(text.lower())}%"
        found = list(_TEXT_IN)
        if all(c in "0123456789abcdef-" for c in text.lower()):
            found.insert(0, "id like ?")
            params.append(text.lower() + "%")
        where.append(f"({' or '.join(found)})")
        params.extend([pattern] * len(_TEXT_IN))
    if due_or_delayed:
        where.append(f"status = 'queued' and {'' if queue_state == 'scheduled' else 'not '}"
                     f"{_IN_SCHEDULE}")
        params.append(storage.name)
    if system:
        where.append("owner_id is null")
    if needs:
        where.append(needs)
    if (status or queue_state) in ENDED:  # ended jobs have one: the partial index job_ended
        where.append("finished_at is not null")
    # The total counts every match, not only those past the cursor (a later page's).
    clause = (" where " + " and ".join(where)) if where else ""
    total = storage.sql(f"select count(*) from job{clause}", params,
                        results=True)[0][0] if with_total else None
    after = before if after is None and sort == "created" and descending else after
    if after is not None:
        where.append(f"({expression}, id) {'<' if descending else '>'} (?, ?)")
        params.extend(after)
        clause = " where " + " and ".join(where)
    order = "desc" if descending else "asc"
    rows = storage.sql(f"select {', '.join(COLUMNS)} from job{clause} "
                       f"order by {expression} {order}, id {order} limit ? offset ?",
                       (*params, limit, offset), results=True)
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows], total


def jobs_by_id(storage, job_ids: list[str]) -> list[dict[str, Any]]:
    """The job records of those of *job_ids* that exist (any order)."""
    found = []
    for start in range(0, len(job_ids), 500):  # SQLite's bound-parameter limit
        chunk = job_ids[start:start + 500]
        rows = storage.sql(f"select {', '.join(COLUMNS)} from job where id in "
                           f"({_in(chunk)})", chunk, results=True)
        found.extend(dict(zip(COLUMNS, row, strict=True)) for row in rows)
    return found


def progress_of(storage, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{job_id: {"status", "progress", "stage"}}`` for the given ids that exist."""
    found = {}
    for start in range(0, len(job_ids), 500):  # SQLite's bound-parameter limit
        chunk = job_ids[start:start + 500]
        rows = storage.sql(f"select id, status, progress, stage from job where id in "
                           f"({','.join('?' * len(chunk))})", chunk, results=True)
        found.update({job_id: {"status": status, "progress": progress, "stage": stage}
                      for job_id, status, progress, stage in rows})
    return found


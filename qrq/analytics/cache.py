"""The analytics cache: finished reports in the queue database, and who computes the next.

One row per normalised report (``analytics_cache``, keyed by
:attr:`ReportQuery.key <qrq.analytics.query.ReportQuery.key>`): its last result, when
that was computed and when it expires, the job computing it now, and how often it is
asked for (the warm-up recomputes the most requested before they expire).

Identical requests share one computation. :func:`claim` decides inside one
exclusive transaction on the queue database, where the job records live too:
the row names a job that is still queued or running, so the caller gets that job's
id; or it does not, so the caller's new job id is written into the row and the
caller enqueues it. Two requests, in two threads or two processes, can never both
win. A claim whose job record does not exist yet (the enqueue follows the claim's
commit) counts as running for :data:`CLAIM_GRACE` seconds. The claim also records
the request as one of the job's requesters (:mod:`qrq.analytics.requesters`), so
that one requester's cancel does not end the job for the others.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from qrq import analytics
from qrq.analytics import requesters
from qrq.analytics.query import ReportQuery, parse_query
from qrq.queue.jobs import ACTIVE

CLAIM_GRACE = 60.0
# A fresh hit is counted at most once a second per report: a cached answer stays a
# read, with no write transaction on the queue database under a burst of requests.
COUNT_EVERY = 1.0
WARM_WINDOW = 86400.0  # reports requested in the last day are kept warm
FORGET_AFTER = 7 * 86400.0  # rows not requested for a week are deleted


def fresh(storage, key: str, now: float | None = None) -> dict[str, Any] | None:
    """The cached report for *key* if it has not expired: ``{"result_json",
    "computed_at", "expires_at"}``; counts the request. The report stays JSON text, so
    a cache hit can be answered without decoding and re-encoding it."""
    now = time.time() if now is None else now
    rows = storage.sql("select result, computed_at, expires_at, requested_at from "
                       "analytics_cache where cache_key = ? and result is not null and "
                       "expires_at > ?", (key, now), results=True)
    if not rows:
        return None
    result, computed_at, expires_at, requested_at = rows[0]
    if now - requested_at >= COUNT_EVERY:
        storage.sql("update analytics_cache set requests = requests + 1, requested_at = ? "
                    "where cache_key = ?", (now, key), commit=True)
    return {"result_json": result, "computed_at": computed_at, "expires_at": expires_at}


def claim(storage, query: ReportQuery, request: Mapping[str, Any], *, refresh: bool = False,
          count: bool = True, requester: int | None = None,
          now: float | None = None) -> tuple[str, str | None]:
    """Decide who computes *query*, atomically; counts the request unless not *count*.

    Returns ``("fresh", None)`` when a fresh result exists (and not *refresh*),
    ``("running", job_id)`` when a job for it is queued or running, or
    ``("claimed", job_id)``: a new job id the caller must now enqueue (or
    :func:`release` if it cannot). With a job, *requester* (a user id; None: the CLI
    or the warm-up) becomes one of its requesters.
    """
    now = time.time() if now is None else now
    key = query.key
    params, request_json = json.dumps(query.to_dict()), json.dumps(dict(request))
    with storage.db(commit=True) as curs:
        # The row exists and is this transaction's from here on (an upsert that changes
        # nothing still locks it), so of two concurrent claims on PostgreSQL the second
        # sees the first's job instead of claiming one more.
        curs.execute("insert into analytics_cache (cache_key, params, request, requests, "
                     "requested_at) values (?, ?, ?, 0, ?) on conflict (cache_key) do "
                     "update set requests = analytics_cache.requests",
                     (key, params, request_json, now))
        curs.execute("select job_id, claimed_at, expires_at, result is not null from "
                     "analytics_cache where cache_key = ?", (key,))
        row = curs.fetchone()
        state, job_id = "claimed", str(uuid.uuid4())
        if row is not None:
            running, claimed_at, expires_at, has_result = row
            if has_result and expires_at > now and not refresh:
                state, job_id = "fresh", None
            elif running and _is_running(curs, running, claimed_at, now):
                state, job_id = "running", running
        claimed = job_id if state == "claimed" else None
        curs.execute(
            "update analytics_cache set requests = requests + ?, request = ?, "
            "requested_at = case when ? = 1 then ? else requested_at end, "
            "job_id = coalesce(?, job_id), claimed_at = coalesce(?, claimed_at) "
            "where cache_key = ?",
            (int(count), request_json, int(count), now, claimed,
             now if claimed else None, key))
        if job_id is not None:
            requesters.join(curs, job_id, requester)
    return state, job_id


def release(storage, key: str, job_id: str) -> None:
    """Give up a claim whose job could not be enqueued, so the next request retries."""
    with storage.db(commit=True) as curs:
        curs.execute("update analytics_cache set job_id = null, claimed_at = null "
                     "where cache_key = ? and job_id = ?", (key, job_id))
        requesters.drop(curs, job_id)


def store(storage, query: ReportQuery, result: dict[str, Any], computed_at: float,
          ttl: float) -> None:
    """Save a finished report. *computed_at* is when its reading began; a result of
    an older start never replaces a newer one."""
    storage.sql(
        "insert into analytics_cache (cache_key, params, request, result, computed_at, "
        "expires_at, requests, requested_at) values (?, ?, ?, ?, ?, ?, 0, ?) "
        "on conflict (cache_key) do update set result = excluded.result, "
        "computed_at = excluded.computed_at, expires_at = excluded.expires_at "
        "where analytics_cache.computed_at is null "
        "or analytics_cache.computed_at <= excluded.computed_at",
        (query.key, json.dumps(query.to_dict()), json.dumps(query.to_dict()),
         json.dumps(result, separators=(",", ":")), computed_at, computed_at + ttl,
         computed_at), commit=True)


def request_report(storage, query: ReportQuery, request: Mapping[str, Any],
                   enqueue: Callable[[str], Any], *, refresh: bool = False,
                   requester: int | None = None, now: float | None = None) -> dict[str, Any]:
    """A fresh cached report, or the job computing it: what the API and CLI answer.

    Returns ``{"status": "fresh", "result_json", "computed_at", "expires_at"}`` or
    ``{"status": "computing", "job_id", "cache_key", "started": bool}``. *enqueue*
    is called with the job id when this request starts the computation; *requester*
    (a user id, None for the CLI) is recorded as one of the job's requesters.
    """
    now = time.time() if now is None else now
    if not refresh and (hit := fresh(storage, query.key, now)) is not None:
        return {"status": "fresh", **hit}
    state, job_id = claim(storage, query, request, refresh=refresh, requester=requester,
                          now=now)
    if state == "fresh":  # it became fresh since our first look
        if (hit := fresh(storage, query.key, now)) is not None:
            return {"status": "fresh", **hit}
        state, job_id = claim(storage, query, request, refresh=True, requester=requester,
                              now=now)
    if state == "claimed":
        _enqueue_claimed(storage, query, job_id, enqueue)
    return {"status": "computing", "job_id": job_id, "cache_key": query.key,
            "started": state == "claimed"}


def compute_report(storage, settings, query: ReportQuery, *, seconds: float | None = None,
                   progress: Callable[[float, str], None] | None = None,
                   here: bool = True) -> dict[str, Any]:
    """Read every scan database for *query*, cache the report, and return it.

    *seconds* bounds the child processes' queries (the job's time left); not *here*,
    only child processes read (:func:`qrq.analytics.time_series`). *progress* gets
    ``(percent, stage)``: reading is 0-90 %, then aggregating and caching; an
    exception it raises (a cancel) stops the reading.
    """
    report = progress or (lambda percent, stage: None)
    last = [-1]

    def reading(done: int, total: int, stage: str) -> None:
        percent = 90 * done // max(1, total) if stage.startswith("databases") else 92
        if percent != last[0] or stage == "aggregating":
            last[0] = percent
            report(percent, stage)

    started = time.time()
    paths = analytics.find_databases(settings.analytics_dbs, settings.data_dir)
    result = analytics.time_series(
        paths, query, processes=settings.analytics_processes, progress=reading,
        seconds=seconds, busy_timeout=settings.busy_timeout, here=here,
        root=analytics.scan_root(settings.analytics_dbs, settings.data_dir))
    if not paths:  # users read this too: the setting's name, not the server's paths
        result["warnings"].append("no scan databases where QRQ_ANALYTICS_DBS points")
    report(97, "caching")
    result["cache_key"] = query.key
    store(storage, query, result, started, settings.analytics_cache_ttl)
    return result


def warm_up(storage, settings, enqueue: Callable[[str, ReportQuery], Any],
            now: float | None = None) -> dict[str, Any]:
    """Start recomputing the most requested reports that expire before the next run.

    A report asked for without dates ("the last 30 days") is renormalised first,
    so after midnight the new day's report is computed before anyone asks.
    *enqueue* gets ``(job_id, query)`` for each computation this starts.
    """
    now = time.time() if now is None else now
    horizon = now + max(600.0, settings.analytics_cache_ttl / 4)
    started, running, skipped = [], 0, 0
    rows = storage.sql("select request from analytics_cache where requested_at >= ? "
                       "and requests > 0 order by requests desc, requested_at desc limit ?",
                       (now - WARM_WINDOW, max(0, settings.analytics_warmup)), results=True)
    for (request,) in rows:
        try:
            query = parse_query(json.loads(request))
        except Exception:  # noqa: BLE001 - a row from an older version; leave it be
            skipped += 1
            continue
        current = storage.sql("select expires_at from analytics_cache where cache_key = ? "
                              "and result is not null", (query.key,), results=True)
        if current and current[0][0] > horizon:
            continue
        state, job_id = claim(storage, query, json.loads(request), refresh=True,
                              count=False, now=now)
        if state == "claimed":
            _enqueue_claimed(storage, query, job_id,
                             lambda job_id, query=query: enqueue(job_id, query))
            started.append(job_id)
        else:
            running += 1
    forgotten = forget(storage, now)
    return {"started": started, "already_running": running, "skipped": skipped,
            "forgotten": forgotten}


def forget(storage, now: float | None = None) -> int:
    """Delete reports nobody asked for in :data:`FORGET_AFTER` seconds."""
    now = time.time() if now is None else now
    with storage.db(commit=True) as curs:
        curs.execute("delete from analytics_cache where requested_at < ? and (job_id is null "
                     "or job_id not in (select id from job where status in "
                     f"({','.join('?' * len(ACTIVE))})))", (now - FORGET_AFTER, *ACTIVE))
        forgotten = curs.rowcount
        requesters.drop_orphans(curs)
    return forgotten


def list_reports(storage, limit: int = 50) -> list[dict[str, Any]]:
    """Cached reports, most requested first (without their results)."""
    rows = storage.sql("select cache_key, params, computed_at, expires_at, requests, "
                       "requested_at, job_id from analytics_cache "
                       "order by requests desc, requested_at desc limit ?", (limit,),
                       results=True)
    keys = ("cache_key", "params", "computed_at", "expires_at", "requests", "requested_at",
            "job_id")
    reports = [dict(zip(keys, row, strict=True)) for row in rows]
    for report in reports:
        report["params"] = json.loads(report["params"])
    return reports


def _enqueue_claimed(storage, query: ReportQuery, job_id: str,
                     enqueue: Callable[[str], Any]) -> None:
    """Enqueue the job this caller claimed, or give the claim back if that fails."""
    try:
        enqueue(job_id)
    except BaseException:
        release(storage, query.key, job_id)
        raise


def _is_running(curs, job_id: str, claimed_at: float | None, now: float) -> bool:
    curs.execute("select status from job where id = ?", (job_id,))
    row = curs.fetchone()
    if row is None:
        return claimed_at is not None and claimed_at > now - CLAIM_GRACE
    return row[0] in ACTIVE

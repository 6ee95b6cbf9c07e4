"""The analytics cache in the queue database: freshness, claims shared by identical
requests (across threads and processes), warm-up and forgetting."""

import dataclasses
import json
import multiprocessing
import threading
import time

import pytest

from qrq.analytics import cache, requesters
from qrq.analytics.query import parse_query
from qrq.queue import huey, jobs
from qrq.queue.sqlite_storage import LeasedSqliteStorage

QUERY = {"period": "weekly", "from": "2026-09-01", "to": "2026-11-22"}


def result_for(query, scans=1):
    return {"params": query.to_dict(), "series": [], "totals": {"scans": scans}}


def add_job(job_id, status):
    with huey.storage.db(commit=True) as curs:
        jobs.insert(curs, jobs.new_record(job_id, "analytics", "qrq.analytics.time_based",
                                          None))
        curs.execute("update job set status = ? where id = ?", (status, job_id))


def test_fresh_until_the_ttl_passes(settings):
    query = parse_query(QUERY)
    assert cache.fresh(huey.storage, query.key) is None
    cache.store(huey.storage, query, result_for(query), computed_at=1000.0, ttl=3600)
    hit = cache.fresh(huey.storage, query.key, now=4599.0)
    assert json.loads(hit["result_json"])["totals"] == {"scans": 1}
    assert (hit["computed_at"], hit["expires_at"]) == (1000.0, 4600.0)
    assert cache.fresh(huey.storage, query.key, now=4600.0) is None


def test_an_older_computation_never_replaces_a_newer_result(settings):
    query = parse_query(QUERY)
    cache.store(huey.storage, query, result_for(query, 2), computed_at=2000.0, ttl=3600)
    cache.store(huey.storage, query, result_for(query, 1), computed_at=1000.0, ttl=3600)
    hit = cache.fresh(huey.storage, query.key, now=2001.0)
    assert json.loads(hit["result_json"])["totals"]["scans"] == 2


def test_identical_requests_share_the_running_job(settings):
    query = parse_query(QUERY)
    state, job_id = cache.claim(huey.storage, query, QUERY, now=100.0)
    assert state == "claimed"
    # Until the claimer's enqueue lands, the claim itself counts as running ...
    assert cache.claim(huey.storage, query, QUERY, now=101.0) == ("running", job_id)
    add_job(job_id, "queued")
    assert cache.claim(huey.storage, query, QUERY, now=1000.0) == ("running", job_id)
    # ... refresh=1 joins it too rather than starting a second computation.
    assert cache.claim(huey.storage, query, QUERY, refresh=True, now=1000.0) == (
        "running", job_id)
    # Once it failed, the next request starts a new job.
    huey.storage.sql("update job set status = 'failed' where id = ?", (job_id,), commit=True)
    state, second = cache.claim(huey.storage, query, QUERY, now=1001.0)
    assert state == "claimed" and second != job_id
    # A claim whose enqueue never happened lapses after the grace period.
    state, third = cache.claim(huey.storage, query, QUERY, now=1001.0 + cache.CLAIM_GRACE + 1)
    assert state == "claimed" and third not in (job_id, second)


def test_a_fresh_result_answers_unless_refresh(settings):
    query = parse_query(QUERY)
    now = time.time()
    cache.store(huey.storage, query, result_for(query), computed_at=now, ttl=3600)
    assert cache.claim(huey.storage, query, QUERY, now=now + 1) == ("fresh", None)
    assert cache.claim(huey.storage, query, QUERY, refresh=True, now=now + 1)[0] == "claimed"


def test_request_report_enqueues_once_and_releases_a_failed_enqueue(settings):
    query = parse_query(QUERY)
    enqueued = []

    def broken(job_id):
        raise RuntimeError("queue unavailable")

    with pytest.raises(RuntimeError):
        cache.request_report(huey.storage, query, QUERY, broken)
    first = cache.request_report(huey.storage, query, QUERY, enqueued.append)
    second = cache.request_report(huey.storage, query, QUERY, enqueued.append)
    assert first["started"] and not second["started"]
    assert first["job_id"] == second["job_id"] == enqueued[0] and len(enqueued) == 1


def _claim_many(storages, query):
    barrier = threading.Barrier(len(storages))
    outcomes = []

    def run(storage):
        barrier.wait()
        outcomes.append(cache.claim(storage, query, QUERY))

    threads = [threading.Thread(target=run, args=(s,)) for s in storages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_claims_in_threads_have_one_winner(settings):
    query = parse_query(QUERY)
    storages = [LeasedSqliteStorage("qrq", str(settings.queue_db), timeout=30)
                for _ in range(12)]
    try:
        outcomes = _claim_many(storages, query)
    finally:
        for storage in storages:
            storage.close()
    claimed = [job_id for state, job_id in outcomes if state == "claimed"]
    assert len(claimed) == 1
    assert {job_id for _, job_id in outcomes} == set(claimed)


def claim_in_process(filename, barrier, queue):
    storage = LeasedSqliteStorage("qrq", filename, timeout=30)
    barrier.wait()
    queue.put(cache.claim(storage, parse_query(QUERY), QUERY))
    storage.close()


def test_concurrent_claims_in_processes_have_one_winner(settings):
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(4), context.Queue()
    procs = [context.Process(target=claim_in_process,
                             args=(str(settings.queue_db), barrier, queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    queue.close()
    queue.join_thread()
    assert sorted(state for state, _ in outcomes) == ["claimed", "running", "running",
                                                      "running"]
    assert len({job_id for _, job_id in outcomes}) == 1


def test_warm_up_recomputes_popular_reports_before_they_expire(settings):
    now = time.time()
    settings = dataclasses.replace(settings, analytics_warmup=2, analytics_cache_ttl=3600)
    popular, middling, rare = (parse_query({**QUERY, "tz": tz})
                               for tz in ("Europe/Berlin", "Asia/Tokyo", "UTC"))
    for query, requests in ((popular, 5), (middling, 3), (rare, 1)):
        for _ in range(requests):
            cache.claim(huey.storage, query, query.to_dict(), now=now - 7200)
    for query in (popular, middling, rare):
        huey.storage.sql("update analytics_cache set job_id = null where cache_key = ?",
                         (query.key,), commit=True)
    # The popular one expires within the horizon; the middling one is fresh for long.
    cache.store(huey.storage, popular, result_for(popular), computed_at=now - 3500, ttl=3600)
    cache.store(huey.storage, middling, result_for(middling), computed_at=now, ttl=3600)
    started = []
    report = cache.warm_up(huey.storage, settings,
                           lambda job_id, query: started.append((job_id, query)), now=now)
    assert [query for _, query in started] == [popular]  # rare is not in the top 2
    assert report["started"] == [started[0][0]]
    # The warm-up is not a request: counts are unchanged.
    assert {r["cache_key"]: r["requests"] for r in cache.list_reports(huey.storage)}[
        popular.key] == 5
    # Its job now runs; the next warm-up joins it instead of starting another.
    add_job(started[0][0], "running")
    again = cache.warm_up(huey.storage, settings, lambda *a: started.append(a), now=now)
    assert again["started"] == [] and again["already_running"] == 1


def test_warm_up_renormalises_reports_asked_for_without_dates(settings):
    now = time.time()
    settings = dataclasses.replace(settings, analytics_warmup=5)
    yesterday = parse_query({"period": "daily"}, today=parse_query({}).end.replace(
        day=1))  # a "last 30 days" report as it was normalised on another day
    cache.claim(huey.storage, yesterday, {"period": "daily"}, now=now)
    huey.storage.sql("update analytics_cache set job_id = null", commit=True)
    started = []
    cache.warm_up(huey.storage, settings, lambda job_id, query: started.append(query),
                  now=now)
    assert started == [parse_query({"period": "daily"})]  # today's range, not the old one


def test_reports_nobody_asks_for_are_forgotten(settings):
    now = time.time()
    old, recent = parse_query(QUERY), parse_query({**QUERY, "tz": "Asia/Tokyo"})
    cache.claim(huey.storage, old, QUERY, now=now - cache.FORGET_AFTER - 10)
    cache.claim(huey.storage, recent, QUERY, now=now)
    assert cache.forget(huey.storage, now) == 1
    assert [r["cache_key"] for r in cache.list_reports(huey.storage)] == [recent.key]


def _claim_new_report(storage, attempt: int):
    """Requester 1 claims the daily report of a day of its own: (query, request, job id)."""
    day = f"2026-{1 + attempt // 28:02d}-{1 + attempt % 28:02d}"
    request = {**QUERY, "period": "daily", "from": day}
    query = parse_query(request)
    state, job_id = cache.claim(storage, query, request, requester=1)
    assert state == "claimed"
    return query, request, job_id


def test_two_requesters_withdrawing_at_once_cancel_the_job_once(settings):
    """The last requester to withdraw cancels the job, also when two withdraw at the
    same moment: each must see the other's withdrawal (on PostgreSQL both once saw the
    other still waiting, and the job ran on for nobody, still claimed)."""
    storage = huey.storage
    for attempt in range(40):
        query, request, job_id = _claim_new_report(storage, attempt)
        assert cache.claim(storage, query, request, requester=2) == ("running", job_id)
        add_job(job_id, "running")
        job = {"id": job_id, "owner_id": None}
        canceled, seen = [], []
        barrier = threading.Barrier(2)

        def withdraw(user_id, job=job, canceled=canceled, seen=seen, barrier=barrier):
            barrier.wait()
            seen.append(requesters.withdraw(storage, job, user_id,
                                            lambda j: canceled.append(j) or "canceled"))

        threads = [threading.Thread(target=withdraw, args=(u,)) for u in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == ["canceled", "canceled"]
        assert canceled == [job_id], f"attempt {attempt}: the job was not canceled"
        # Nobody waits for it: the next request starts a new job.
        assert cache.claim(storage, query, request, requester=3)[0] == "claimed"


def test_a_request_joining_while_the_last_requester_withdraws_keeps_the_job(settings):
    """A request that joins the job while its last requester withdraws either joins in
    time (the job goes on, for it) or comes after (and starts a new job): never joins
    a job that is then canceled."""
    storage = huey.storage
    for attempt in range(40):
        query, request, job_id = _claim_new_report(storage, attempt)
        add_job(job_id, "running")
        canceled, joined = [], []
        barrier = threading.Barrier(2)

        def withdraw(job_id=job_id, canceled=canceled, barrier=barrier):
            barrier.wait()
            requesters.withdraw(storage, {"id": job_id, "owner_id": None}, 1,
                                lambda j: canceled.append(j) or "canceled")

        def join(query=query, request=request, joined=joined, barrier=barrier):
            barrier.wait()
            joined.append(cache.claim(storage, query, request, requester=2))

        threads = [threading.Thread(target=withdraw), threading.Thread(target=join)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if joined[0] == ("running", job_id):
            assert canceled == [], f"attempt {attempt}: joined a job that was canceled"
        else:
            assert joined[0][0] == "claimed" and canceled == [job_id]

"""The analytics API and chart: 202 then 200 from the cache, shared jobs, 422s, the SVG,
the page; jobs run through the real queue storage (and, marked slow, a real consumer)."""

import datetime
import json
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest

from qrq import analytics
from qrq.analytics.query import parse_query
from qrq.analytics.scans import write_demo_database
from qrq.queue import huey, jobs
from tests.conftest import wait_until
from tests.test_api import assert_error

URL = "/api/analytics/time-based"
END = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC).timestamp()
ARGS = {"period": "weekly", "from": "2026-09-01", "to": "2026-11-22", "tz": "Europe/Berlin"}


@pytest.fixture
def scan_dbs(settings):
    """Four demo shards in <data>/analytics/, where the settings look by default."""
    directory = settings.data_dir / "analytics"
    return [write_demo_database(directory / f"scans-{i:03d}.db", i, 2000, days=120, end=END)
            for i in range(4)]


def run_next_job():
    """Lease the next queued job from SQLite and run it, as a worker would."""
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    return task.id


def test_202_then_the_job_then_200_from_the_cache(client, alice, scan_dbs):
    first = client.get(URL, query_string=ARGS, headers=alice[1])
    assert first.status_code == 202
    body = first.get_json()
    assert body["status"] == "computing" and body["cache_key"] == parse_query(ARGS).key
    assert first.headers["Location"] == body["status_url"]
    assert huey.storage.queue_size() == 1  # nothing was computed in the request

    assert run_next_job() == body["job_id"]
    status = client.get(body["status_url"], headers=alice[1]).get_json()
    assert status["status"] == "finished" and status["type"] == "analytics"

    second = client.get(URL, query_string=ARGS, headers=alice[1])
    assert second.status_code == 200
    report = second.get_json()
    expected = analytics.time_series(scan_dbs, parse_query(ARGS))
    assert report["series"] == expected["series"] and report["top"] == expected["top"]
    assert report["cache_key"] == body["cache_key"] and report["warnings"] == []
    assert report["databases"] == {"found": 4, "read": 4, "skipped": 0}
    assert report["computed_at"].endswith("Z") and 0 <= report["age_seconds"] < 600
    assert int(second.headers["Age"]) == int(report["age_seconds"])
    assert huey.storage.queue_size() == 0  # a cache hit enqueues nothing


def test_identical_requests_get_the_same_job_and_refresh_recomputes(client, alice, make_user,
                                                                   scan_dbs):
    bob = make_user("bob")
    ids = {client.get(URL, query_string=ARGS, headers=who[1]).get_json()["job_id"]
           for who in (alice, bob, alice)}
    # The same report asked for differently (unaligned dates) is the same report.
    ids.add(client.get(URL, query_string={**ARGS, "from": "2026-09-03"},
                       headers=bob[1]).get_json()["job_id"])
    ids.add(client.get(URL, query_string={**ARGS, "refresh": "1"},
                       headers=bob[1]).get_json()["job_id"])
    assert len(ids) == 1 and huey.storage.queue_size() == 1
    # Bob did not start the job but may follow it.
    (job_id,) = ids
    assert client.get(f"/api/analytics/jobs/{job_id}", headers=bob[1]).status_code == 200
    run_next_job()
    assert client.get(URL, query_string=ARGS, headers=bob[1]).status_code == 200
    again = client.get(URL, query_string={**ARGS, "refresh": "1"}, headers=bob[1])
    assert again.status_code == 202 and again.get_json()["job_id"] != job_id


def test_a_skipped_database_is_a_warning_in_the_result(client, alice, scan_dbs):
    scan_dbs[1].write_bytes(b"garbage" * 1000)
    client.get(URL, query_string=ARGS, headers=alice[1])
    run_next_job()
    report = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()
    assert report["databases"] == {"found": 4, "read": 3, "skipped": 1}
    assert report["warnings"] == ["scans-001.db: skipped: file is not a database"]


def endless_scan_db(path):
    """A "scan database" whose scans never end: any query over it runs until stopped."""
    with sqlite3.connect(path) as conn:
        conn.execute("create view scans as with recursive r(n) as (select 1 union all "
                     "select n + 1 from r) select n as id, n as scanned_at, 1 as template_id, "
                     "'x' as domain, 'x' as country, 'x' as device, "
                     "printf('%016x', n) as visitor_hash from r")
    conn.close()
    return path


def test_the_time_limit_stops_the_job_inside_a_query(client, alice, scan_dbs):
    from qrq.queue import submit
    from tasks.analytics import time_based_report

    endless_scan_db(scan_dbs[0].with_name("endless.db"))
    query = parse_query(ARGS)
    # No consumer and no SIGALRM here: only the progress handler on the connection
    # can stop the query over the endless database.
    job_id = submit(time_based_report, query.to_dict(), owner_id=None, timeout=1.5)
    run_next_job()
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "failed" and job["error"] == "timeout", job


@pytest.mark.parametrize("args, field", [
    ({"period": "yearly"}, "period"),
    ({"tz": "Nowhere/Special"}, "tz"),
    ({"from": "2026-13-01"}, "from"),
    ({"from": "2026-11-22", "to": "2026-11-01"}, "from"),
    ({"template_id": "abc"}, "template_id"),
    ({"domain": "bad domain"}, "domain"),
    ({"refresh": "maybe"}, "refresh"),
    ({"limit": "5"}, "limit"),
    ({"from": "2000-01-01", "to": "2026-01-01"}, "from"),
])
def test_bad_parameters_are_422_naming_the_parameter(client, alice, args, field):
    for url in (URL, URL + ".svg"):
        assert_error(client.get(url, query_string=args, headers=alice[1]), 422, field)
    assert huey.storage.queue_size() == 0


def test_a_parameter_given_twice_is_422(client, alice):
    # Every API route alike: read by args.get, the first would win silently.
    for url in (URL + "?period=daily&period=weekly", "/api/jobs?status=queued&status=bogus",
                "/api/jobs?limit=1&limit=x", "/api/analytics/reports?limit=1&limit=2"):
        name = url.split("?")[1].split("=")[0]
        assert_error(client.get(url, headers=alice[1]), 422, name)


def test_every_analytics_endpoint_needs_a_token(client):
    for url in (URL, URL + ".svg", "/api/analytics/reports",
                "/api/analytics/jobs/00000000-0000-0000-0000-000000000000"):
        assert_error(client.get(url), 401)


def test_the_jobs_endpoint_shows_only_analytics_jobs(client, alice, templates):
    pdf = client.post("/api/generate-qr-pdf", json={"template_id": 1},
                      headers=alice[1]).get_json()["job_id"]
    assert_error(client.get(f"/api/analytics/jobs/{pdf}", headers=alice[1]), 404)
    assert_error(client.get("/api/analytics/jobs/nope", headers=alice[1]), 404)


def test_the_svg_chart(client, alice, scan_dbs):
    response = client.get(URL + ".svg", query_string=ARGS, headers=alice[1])
    assert response.status_code == 202 and response.get_json()["status"] == "computing"
    run_next_job()
    response = client.get(URL + ".svg", query_string=ARGS, headers=alice[1])
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    svg = response.get_data(as_text=True)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<polyline") == 2  # scans and visitors
    assert "2026-W36" in svg and "Europe/Berlin" in svg
    assert "<script" not in svg and "http://" not in svg.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_the_chart_page_holds_no_data_and_loads_nothing_from_elsewhere(client):
    response = client.get("/analytics/chart")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    csp = response.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)[1]
    assert f'<style nonce="{nonce}">' in html and "default-src 'none'" in csp
    # The one script (shared with the dashboard's chart) comes from this site only.
    assert "script-src 'self';" in csp and '<script src="/admin/static/analytics.js"' in html
    assert "/api/analytics/time-based.svg" in html and 'name="token"' in html
    with client.get("/admin/static/analytics.js") as script:
        assert "Authorization" in script.get_data(as_text=True)


def test_reports_lists_cached_reports(client, alice, scan_dbs):
    client.get(URL, query_string=ARGS, headers=alice[1])
    run_next_job()
    client.get(URL, query_string=ARGS, headers=alice[1])
    (report,) = client.get("/api/analytics/reports", headers=alice[1]).get_json()["reports"]
    assert report["params"] == parse_query(ARGS).to_dict() and report["fresh"] is True
    assert report["requests"] >= 1


@pytest.mark.slow
def test_a_real_consumer_computes_with_progress_and_shares_the_job(client, alice, make_user,
                                                                  settings, consumer):
    # Enough databases that the job is seen running, database by database.
    directory = settings.data_dir / "analytics"
    paths = [write_demo_database(directory / f"scans-{i:03d}.db", i, 4000, days=120, end=END)
             for i in range(24)]
    worker = consumer(workers=2)
    args = {"period": "daily", "from": "2026-08-01", "to": "2026-11-22"}
    job_id = client.get(URL, query_string=args, headers=alice[1]).get_json()["job_id"]
    bob = make_user("bob")
    assert client.get(URL, query_string=args, headers=bob[1]).get_json()["job_id"] == job_id

    stages = []

    def finished():
        status = client.get(f"/api/analytics/jobs/{job_id}", headers=bob[1]).get_json()
        stages.append(status["stage"])
        return status if status["status"] in jobs.ENDED else None

    status = wait_until(finished, timeout=120, interval=0.005, message="the analytics job")
    assert status["status"] == "finished", (status, worker.output())
    assert any(re.fullmatch(r"databases \d+ of 24", s) for s in stages), stages
    response = client.get(URL, query_string=args, headers=bob[1])
    assert response.status_code == 200
    report = response.get_json()
    expected = analytics.time_series(paths, parse_query(args))
    assert report["series"] == expected["series"] and report["top"] == expected["top"]
    assert report["totals"] == expected["totals"] and report["totals"]["scans"] > 0
    # Child processes read and counted: no long-lived process of the consumer holds
    # numpy (or the report's hashes) afterwards.
    assert mapping(worker.proc.pid, "_multiarray_umath") == [], worker.output()


def mapping(group: int, name: str) -> list[int]:
    """The processes of process group *group* that have a file named like *name* mapped."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and os.getpgid(int(entry.name)) == group
                    and name in (entry / "maps").read_text()):
                found.append(int(entry.name))
        except (ProcessLookupError, FileNotFoundError):
            pass  # gone meanwhile
    return found


@pytest.mark.slow
def test_a_real_consumer_stops_a_job_over_its_time_limit_and_carries_on(client, alice,
                                                                       settings, consumer,
                                                                       scan_dbs):
    endless = endless_scan_db(scan_dbs[0].with_name("endless.db"))
    from qrq.queue import submit
    from tasks.analytics import time_based_report

    worker = consumer(workers=1)
    # The time limit travels with the queued task (QRQ_ANALYTICS_TIMEOUT when the API
    # queues it); a short one here.
    job_id = submit(time_based_report, parse_query(ARGS).to_dict(), owner_id=None,
                    timeout=2)
    status = wait_until(
        lambda: (s := client.get(f"/api/analytics/jobs/{job_id}", headers=alice[1])
                 .get_json())["status"] in jobs.ENDED and s,
        timeout=60, message="the job to time out")
    assert status["status"] == "failed" and status["error"] == "timeout", worker.output()
    # The same worker computes the report once the endless database is gone.
    endless.unlink()
    retry = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()["job_id"]
    assert retry != job_id
    wait_until(lambda: client.get(URL, query_string=ARGS, headers=alice[1]).status_code
               == 200, timeout=60, message="the report")


def test_the_warm_up_task_recomputes_a_popular_report_before_it_expires(client, alice,
                                                                       scan_dbs):
    from tasks.analytics import warm_up_reports

    client.get(URL, query_string=ARGS, headers=alice[1])
    run_next_job()
    assert client.get(URL, query_string=ARGS, headers=alice[1]).status_code == 200
    assert warm_up_reports.call_local()["started"] == []  # fresh for another hour
    huey.storage.sql("update analytics_cache set expires_at = ?", (time.time() + 60,),
                     commit=True)
    started = warm_up_reports.call_local()["started"]
    assert len(started) == 1 and huey.storage.queue_size() == 1
    job = jobs.get(huey.storage, started[0])
    assert job["type"] == "analytics" and job["owner_id"] is None
    # Dashboards still get the cached answer meanwhile, and a refresh joins the warm-up.
    assert client.get(URL, query_string=ARGS, headers=alice[1]).status_code == 200
    assert client.get(URL, query_string={**ARGS, "refresh": "1"},
                      headers=alice[1]).get_json()["job_id"] == started[0]
    run_next_job()
    after = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()
    assert after["age_seconds"] < 60


def test_a_user_at_the_job_limit_may_read_reports_but_not_start_one(settings, alice, scan_dbs,
                                                                     make_user):
    import dataclasses

    from qrq.web import create_app

    limited = dataclasses.replace(settings, max_active_jobs=1)
    client = create_app({"SETTINGS": limited, "TESTING": True}).test_client()
    _, bob = make_user("bob")
    assert client.get(URL, query_string=ARGS, headers=alice[1]).status_code == 202
    # Alice's computation is her one unfinished job: a different report is refused...
    other = {**ARGS, "period": "daily"}
    error = assert_error(client.get(URL, query_string=other, headers=alice[1]), 429)
    assert error["code"] == "too_many_jobs"
    assert huey.storage.queue_size() == 1
    # ...but the one already running is shared, and another user may start that one.
    assert client.get(URL, query_string=ARGS, headers=alice[1]).status_code == 202
    assert client.get(URL, query_string=other, headers=bob).status_code == 202
    run_next_job()
    run_next_job()
    assert client.get(URL, query_string=other, headers=alice[1]).status_code == 200


def test_a_user_computes_at_most_max_active_analytics_reports_at_once(settings, alice,
                                                                       scan_dbs, make_user):
    import dataclasses

    from qrq.web import create_app

    limited = dataclasses.replace(settings, max_active_analytics=2)
    client = create_app({"SETTINGS": limited, "TESTING": True}).test_client()
    _, bob = make_user("bob")
    _, root = make_user("root", admin=True)
    reports = [{**ARGS, "period": period} for period in ("monthly", "weekly", "daily")]
    for report in reports[:2]:
        assert client.get(URL, query_string=report, headers=alice[1]).status_code == 202
    # A third of her own is refused; one already computing is shared with her for free,
    # and another user (an admin, too) may still start one.
    error = assert_error(client.get(URL, query_string=reports[2], headers=alice[1]), 429)
    assert error["code"] == "too_many_jobs" and "2 analytics jobs" in error["message"]
    assert client.get(URL, query_string=reports[0], headers=bob).status_code == 202
    assert client.get(URL, query_string=reports[2], headers=bob).status_code == 202
    assert client.get(URL, query_string={**ARGS, "domain": "x.example"},
                      headers=root).status_code == 202
    assert huey.storage.queue_size() == 4
    run_next_job()
    assert client.get(URL, query_string={**ARGS, "domain": "y.example"},
                      headers=alice[1]).status_code == 202


def test_a_requester_who_cancels_withdraws_only_their_request(client, alice, make_user,
                                                              scan_dbs):
    """Identical requests share one job: its first requester's cancel (the job is theirs)
    must not take the report away from the others."""
    bob = make_user("bob")
    job_id = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()["job_id"]
    assert client.get(URL, query_string=ARGS, headers=bob[1]).get_json()["job_id"] == job_id

    canceled = client.delete(f"/api/jobs/{job_id}", headers=alice[1])
    assert canceled.status_code == 202 and canceled.get_json()["status"] == "canceled"
    assert jobs.get(huey.storage, job_id)["status"] == "queued"  # still Bob's report
    mine = client.get(f"/api/analytics/jobs/{job_id}", headers=alice[1]).get_json()
    assert mine["status"] == "canceled"
    # The job is no longer Alice's: gone from her jobs (and her quota).
    assert_error(client.get(f"/api/jobs/{job_id}", headers=alice[1]), 404)
    assert job_id not in {j["job_id"] for j in
                          client.get("/api/jobs", headers=alice[1]).get_json()["jobs"]}
    assert_error(client.delete(f"/api/analytics/jobs/{job_id}", headers=alice[1]), 409)

    theirs = client.get(f"/api/analytics/jobs/{job_id}", headers=bob[1]).get_json()
    assert theirs["status"] == "queued"
    run_next_job()
    assert client.get(URL, query_string=ARGS, headers=bob[1]).status_code == 200


def sse_events(client, url, who):
    """The events of a stream that ends at once: [(event, data)]."""
    response = client.get(url, headers=who[1])
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    found = []
    for block in response.get_data(as_text=True).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_any_user_follows_a_shared_jobs_events_and_one_who_withdrew_sees_it_canceled(
        client, alice, make_user, scan_dbs, templates):
    # A shared job's events are for everyone its status_url is for: Bob, who asked for
    # it too, and Carol, who never did. Bob withdraws: his stream ends, canceled, while
    # the job goes on for Alice.
    bob, carol = make_user("bob"), make_user("carol")
    body = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()
    job_id = body["job_id"]
    assert body["events_url"] == f"/api/jobs/{job_id}/events"
    client.get(URL, query_string=ARGS, headers=bob[1])
    assert client.delete(f"/api/analytics/jobs/{job_id}", headers=bob[1]).status_code == 202
    [(name, data)] = sse_events(client, body["events_url"], bob)
    assert (name, data["status"], data["status_url"]) == ("end", "canceled", body["status_url"])
    # EventSource reconnects with the end's id: 204 stops it (the job still runs).
    again = client.get(body["events_url"], headers={**bob[1], "Last-Event-ID": "withdrawn"})
    assert again.status_code == 204
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    run_next_job()
    for who in (alice, carol):
        [(name, data)] = sse_events(client, body["events_url"], who)
        assert (name, data["job_id"], data["status"]) == ("end", job_id, "finished")
        assert data["status_url"] == body["status_url"]
        assert client.get(data["status_url"], headers=who[1]).status_code == 200
    # Other jobs stay their owner's.
    pdf = client.post("/api/generate-qr-pdf", json={"template_id": 1},
                      headers=alice[1]).get_json()["job_id"]
    assert_error(client.get(f"/api/jobs/{pdf}/events", headers=carol[1]), 404)


def test_the_job_is_canceled_when_its_last_requester_withdraws(client, alice, make_user,
                                                              scan_dbs):
    bob, carol = make_user("bob"), make_user("carol")
    job_id = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()["job_id"]
    client.get(URL, query_string=ARGS, headers=bob[1])
    # Carol may follow the job but never asked for it: she cannot cancel it.
    assert_error(client.delete(f"/api/analytics/jobs/{job_id}", headers=carol[1]), 409)
    first = client.delete(f"/api/analytics/jobs/{job_id}", headers=bob[1])
    assert first.status_code == 202 and first.get_json()["status"] == "canceled"
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    last = client.delete(f"/api/analytics/jobs/{job_id}", headers=alice[1])
    assert last.status_code == 202 and last.get_json()["status"] == "canceled"
    assert jobs.get(huey.storage, job_id)["status"] == "canceled"
    assert huey.storage.queue_size() == 0
    # Asking again starts a new job; a requester who withdrew may join it again.
    again = client.get(URL, query_string=ARGS, headers=bob[1]).get_json()
    assert again["job_id"] != job_id and huey.storage.queue_size() == 1
    assert client.get(URL, query_string=ARGS, headers=alice[1]).get_json()["job_id"] == (
        again["job_id"])
    status = client.get(f"/api/analytics/jobs/{again['job_id']}", headers=alice[1])
    assert status.get_json()["status"] == "queued"


def test_an_admin_cancels_a_shared_job_for_everyone(client, alice, make_user, scan_dbs):
    admin = make_user("root", admin=True)
    job_id = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()["job_id"]
    client.get(URL, query_string=ARGS, headers=make_user("bob")[1])
    response = client.delete(f"/api/jobs/{job_id}", headers=admin[1])
    assert response.status_code == 202 and response.get_json()["status"] == "canceled"
    assert jobs.get(huey.storage, job_id)["status"] == "canceled"


def test_warnings_name_databases_below_the_scan_directory(client, alice, settings):
    """Users read the warnings: a shard is named by its path below the scan directory
    (two shards may share a file name), never by the server's absolute path."""
    import dataclasses

    for region in ("eu", "us"):
        write_demo_database(settings.data_dir / "analytics" / region / "scans.db", 0, 200,
                            days=120, end=END)
    (settings.data_dir / "analytics" / "us" / "scans.db").write_bytes(b"garbage" * 1000)
    # Set back here, not by monkeypatch: setting huey's settings opens its storage, which
    # must happen while the test's database (a PostgreSQL schema) still exists.
    try:
        huey.settings = dataclasses.replace(settings, analytics_dbs="analytics/*/scans.db")
        client.get(URL, query_string=ARGS, headers=alice[1])
        run_next_job()
        report = client.get(URL, query_string=ARGS, headers=alice[1]).get_json()
        assert report["warnings"] == ["us/scans.db: skipped: file is not a database"]

        huey.settings = dataclasses.replace(
            settings, analytics_dbs=str(settings.data_dir / "nowhere"))
        client.get(URL, query_string={**ARGS, "tz": "UTC"}, headers=alice[1])
        run_next_job()
        report = client.get(URL, query_string={**ARGS, "tz": "UTC"},
                            headers=alice[1]).get_json()
        assert report["warnings"] and not any(str(settings.data_dir) in w or "/" in w
                                              for w in report["warnings"]), report["warnings"]
    finally:
        huey.settings = settings

"""The dashboard's job lists through Flask's test client (issue 16): every filter, the
search, the sorts and cursor pages that keep them; the live JSON the pages poll; and
the bulk retry, cancel and discard of selected jobs with their confirmation."""

import datetime
import os
import re
import socket
import time
import uuid

import pytest

from qrq import batch
from qrq.appdb.db import app_db
from qrq.batch.submit import enqueue_batch
from qrq.errors import ValidationError
from qrq.queue import huey, job_task, jobs, signing, submit
from qrq.web.dashboard import filters as filters_module

JOB_LINK = re.compile(r'href="/admin/jobs/([0-9a-f-]{36})"')


@job_task("batch", name="test.lists_ok")
def ok(task=None):
    return {"ok": True}


@job_task("mail", name="test.lists_bad")
def bad(message, task=None):
    raise ValidationError(message)


def run_next():
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    return task.id


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def admin(client, make_user):
    """A client logged in as an admin, and its CSRF token."""
    _, headers = make_user("root", admin=True, email="root@example.com")
    form = {"name": "root", "token": headers["Authorization"].split(" ", 1)[1],
            "csrf_token": csrf_of(client.get("/admin/login").text)}
    assert client.post("/admin/login", data=form).status_code == 302
    return client, csrf_of(client.get("/admin/").text)


def listed(client, **args):
    """The job ids the job list shows, in order."""
    response = client.get("/admin/jobs", query_string=args)
    assert response.status_code == 200, response.text
    return list(dict.fromkeys(JOB_LINK.findall(response.text)))


def set_times(job_id, **times):
    sets = ", ".join(f"{name} = ?" for name in times)
    huey.storage.sql(f"update job set {sets} where id = ?", (*times.values(), job_id),
                     commit=True)


@pytest.fixture
def some_jobs(admin, templates, alice):
    """Jobs of several types, owners, states and times."""
    client, _ = admin
    mine = client.post("/api/generate-qr-pdf", json={"template_id": 1, "options": {
        "title": "Spring fair 100%_sale"}}, headers=alice[1]).get_json()["job_id"]
    system = submit(ok, owner_id=None)
    failed = submit(bad, "the printer caught fire", owner_id=None)
    for _ in range(3):
        run_next()
    queued = submit(ok, owner_id=None)
    day = 86400
    set_times(mine, created_at=time.time() - 3 * day, started_at=1000.0, finished_at=1030.0)
    set_times(system, started_at=2000.0, finished_at=2005.0)
    set_times(failed, started_at=1500.0, finished_at=1600.0)
    return {"mine": mine, "system": system, "failed": failed, "queued": queued}


def test_each_filter_narrows_the_list(admin, some_jobs):
    client, _ = admin
    j = some_jobs
    assert set(listed(client)) == set(j.values())
    assert listed(client, type="pdf") == [j["mine"]]
    assert listed(client, status="failed") == [j["failed"]]
    assert set(listed(client, status="queued")) == {j["queued"]}
    assert listed(client, owner="alice") == [j["mine"]]
    assert set(listed(client, owner="-")) == {j["system"], j["failed"], j["queued"]}
    today = datetime.datetime.now(datetime.UTC).date()
    three_days_ago = (today - datetime.timedelta(days=3)).isoformat()
    assert listed(client, **{"from": today.isoformat()}) == listed(client, date=today.isoformat())
    assert j["mine"] not in listed(client, **{"from": today.isoformat()})
    assert listed(client, to=three_days_ago) == [j["mine"]]
    assert listed(client, **{"from": three_days_ago, "to": three_days_ago}) == [j["mine"]]
    # The consumer: a consumer id lists every job its workers ran; this test ran them.
    consumer_id = f"{socket.gethostname()}:{os.getpid()}"
    assert set(listed(client, worker=consumer_id)) == {j["mine"], j["system"], j["failed"]}
    assert listed(client, worker="elsewhere:1") == []
    worker = jobs.get(huey.storage, j["failed"])["worker"]
    assert set(listed(client, worker=worker)) == {j["mine"], j["system"], j["failed"]}
    # Filters combine.
    assert listed(client, owner="-", status="failed", worker=consumer_id) == [j["failed"]]


def test_search_finds_ids_task_names_parameters_payloads_and_errors(admin, some_jobs,
                                                                    settings):
    client, _ = admin
    j = some_jobs
    assert listed(client, q=j["failed"][:6]) == [j["failed"]]
    assert listed(client, q="lists_bad") == [j["failed"]]  # the task name
    assert listed(client, q="PDF.GENERATE") == [j["mine"]]  # any case
    assert listed(client, q="spring fair") == [j["mine"]]  # the parameters
    assert listed(client, q="printer caught") == [j["failed"]]  # the error
    # % and _ are the user's characters, not wildcards.
    assert listed(client, q="100%_sale") == [j["mine"]]
    assert listed(client, q="0%s") == [] and listed(client, q="fair_1") == []
    # A batch's payloads: the data of its items.
    batch_id = str(uuid.uuid4())
    items = [{"template_id": 1, "data": f"https://shop.example/{word}"}
             for word in ("apples", "Pears")]
    with app_db.connection_context():
        checked = batch.parse_request({"items": items}, batch.load_templates, batch_id,
                                      settings.max_batch_items,
                                      margin_mm=settings.print_margin_mm)
    enqueue_batch(checked, batch_id, None)
    assert listed(client, q="shop.example/pears") == [batch_id]
    # A whole id opens the job.
    response = client.get("/admin/jobs", query_string={"q": j["failed"]})
    assert response.status_code == 302 and response.headers["Location"].endswith(j["failed"])


def test_sorts_by_created_started_and_duration_both_ways(admin, some_jobs):
    client, _ = admin
    j = some_jobs
    newest_first = listed(client)
    assert newest_first[-1] == j["mine"]  # created three days ago
    assert listed(client, order="asc") == newest_first[::-1]
    # Only the jobs that started (or ran to an end) have a start (or a duration).
    assert listed(client, sort="started") == [j["system"], j["failed"], j["mine"]]
    assert listed(client, sort="started", order="asc") == [j["mine"], j["failed"], j["system"]]
    assert listed(client, sort="duration") == [j["failed"], j["mine"], j["system"]]
    assert listed(client, sort="duration", order="asc") == [j["system"], j["mine"],
                                                             j["failed"]]
    html = client.get("/admin/jobs?sort=duration").text
    assert "those that ran to an end" in html and "100.0 s" in html


def test_filters_and_sort_survive_cursor_paging(admin, monkeypatch):
    client, _ = admin
    monkeypatch.setattr("qrq.web.dashboard.pages.PAGE_SIZE", 2)
    made = [submit(ok, owner_id=None) for _ in range(5)]
    for job_id in made:
        set_times(job_id, created_at=1000.0)  # one instant: the id breaks the tie
    other = submit(bad, "x", owner_id=None)
    seen, url = [], "/admin/jobs?type=batch&order=asc"
    while url:
        html = client.get(url.replace("&amp;", "&")).text
        seen += JOB_LINK.findall(html)
        assert 'data-total="5"' in html  # every page counts every match, not what is left
        found = re.search(r'<a rel="next" href="([^"]+)"', html)
        url = found and found.group(1)
        if url:
            assert "type=batch" in url and "order=asc" in url and "cursor=" in url
    assert seen == sorted(made) and other not in seen
    # A cursor of one order is refused in another, with a message.
    first = client.get("/admin/jobs?type=batch&order=asc").text
    cursor = re.search(r"cursor=([\w-]+)", first).group(1)
    response = client.get(f"/admin/jobs?type=batch&cursor={cursor}")
    assert response.status_code == 422 and "another sort order" in response.text


@pytest.mark.parametrize("args, field, words", [
    ({"type": "pdfs"}, "type", "unknown type"),
    ({"status": "sleeping"}, "status", "unknown status"),
    ({"owner": "nobody"}, "owner", "no user named"),
    ({"sort": "size"}, "sort", "one of created, started, duration"),
    ({"order": "up"}, "order", "one of desc, asc"),
    ({"from": "yesterday"}, "from", "must be a date"),
    ({"from": "2026-11-22", "to": "2026-11-21"}, "to", "must not be before"),
    ({"cursor": "bm90IGpzb24"}, "cursor", "not a cursor"),
])
def test_unknown_filter_values_get_a_clear_message(admin, args, field, words):
    client, _ = admin
    response = client.get("/admin/jobs", query_string=args)
    assert response.status_code == 422
    assert f"{field}: " in response.text and words in response.text
    # The live poll answers the same in JSON.
    response = client.get("/admin/jobs.json", query_string=args)
    assert response.status_code == 422
    assert response.get_json()["error"]["field"] == field


# -- the live JSON ------------------------------------------------------------------------

def test_the_live_job_list_sends_new_rows_and_changed_rows(admin):
    client, _ = admin
    old = submit(ok, owner_id=None)
    page = client.get("/admin/jobs").text
    since = float(re.search(r'data-live-since="([\d.]+)"', page).group(1))
    assert 'data-live-url="/admin/jobs.json?"' in page
    new = submit(ok, owner_id=None)
    failing = submit(bad, "x", owner_id=None)
    body = client.get(f"/admin/jobs.json?since={since}&ids={old}").get_json()
    news = JOB_LINK.findall(body["new"])
    assert new in news and failing in news  # the page's old row comes too; it dedups
    assert body["since"] <= body["now"] and JOB_LINK.findall(body["changed"]) == [old]
    assert 'data-status="queued"' in body["changed"]
    # The filters apply to the news.
    body = client.get(f"/admin/jobs.json?since={since}&q=lists_bad").get_json()
    assert JOB_LINK.findall(body["new"]) == [failing]
    while huey.pending_count():
        run_next()
    body = client.get(f"/admin/jobs.json?ids={old},{failing}").get_json()
    assert body["new"] == "" and 'data-status="finished"' in body["changed"]
    assert 'data-status="failed"' in body["changed"]
    # Not on a later page, nor in another order: the page has no since.
    assert 'data-live-since=""' in client.get("/admin/jobs?sort=started").text
    for bad_args in ("since=soon", "since=nan", "ids=1,2"):
        response = client.get(f"/admin/jobs.json?{bad_args}")
        assert response.status_code == 422, bad_args


def test_live_parts_need_the_admin_session_and_render_the_same_parts(admin, client):
    client, _ = admin
    submit(ok, owner_id=None)
    for url, page, marker in (
            ("/admin/overview.json", "/admin/", "Jobs per type and state"),
            ("/admin/consumers.json", "/admin/consumers", "No consumer is registered")):
        body = client.get(url).get_json()
        assert marker in body["html"] and body["now"] > 0
        assert marker in client.get(page).text
    client.post("/admin/logout", data={"csrf_token": csrf_of(client.get("/admin/").text)})
    for url in ("/admin/overview.json", "/admin/consumers.json", "/admin/jobs.json"):
        response = client.get(url)
        assert response.status_code == 401 and response.get_json()["error"]["code"] == \
            "unauthorized"


# -- bulk actions ---------------------------------------------------------------------------

def selected(client, csrf, action, ids, **extra):
    """The list's form (a GET: the question), or the question's button (with confirm)."""
    values = {"action": action, "id": ids, "next": "/admin/failed", **extra}
    if "confirm" in extra:
        return client.post("/admin/bulk", data={"csrf_token": csrf, **values})
    return client.get("/admin/bulk/confirm", query_string=values)


def test_bulk_retry_of_three_failed_jobs_asks_first(admin):
    client, csrf = admin
    failed = [submit(bad, f"boom {i}", owner_id=None) for i in range(3)]
    for _ in failed:
        run_next()
    html = client.get("/admin/failed").text
    assert html.count('type="checkbox" name="id"') == 3 and 'form="bulk"' in html
    assert 'method="get" action="/admin/bulk/confirm">' in html
    response = selected(client, csrf, "retry", failed)
    assert response.status_code == 200
    assert "Retry 3 failed jobs?" in response.text
    assert all(jobs.get(huey.storage, i)["status"] == "failed" for i in failed)  # not yet
    confirm = re.search(r'<form method="post" action="/admin/bulk">(.*?)</form>',
                        response.text, re.S).group(1)
    assert 'name="confirm" value="yes"' in confirm
    assert set(re.findall(r'name="id" value="([^"]+)"', confirm)) == set(failed)
    response = selected(client, csrf, "retry", failed, confirm="yes")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/failed"
    assert all(jobs.get(huey.storage, i)["status"] == "queued" for i in failed)
    assert "3 job(s) queued again." in client.get("/admin/failed").text
    # Back to the question (a GET, nothing resent): it says nothing is left to retry.
    again = selected(client, csrf, "retry", failed)
    assert "No selected job can be retried" in again.text and "bulk-confirm" not in again.text
    # A list page from before (its form posted the question): sent on to the GET.
    old = client.post("/admin/bulk", data={"csrf_token": csrf, "action": "retry",
                                           "id": failed, "next": "/admin/failed"})
    assert old.status_code == 303 and old.headers["Location"].startswith("/admin/bulk/confirm?")
    assert "No selected job can be retried" in client.get(old.headers["Location"]).text


def test_bulk_retry_question_names_the_jobs_whose_payload_another_key_signed(admin):
    # Failed jobs queued before a key change: their stored payloads no longer verify,
    # so the retry would skip them. The question says so instead of promising them.
    client, csrf = admin
    failed = [submit(bad, f"boom {i}", owner_id=None) for i in range(4)]
    for _ in failed:
        run_next()
    other = signing.KeySerializer(secret="another-" + "k" * 32, salt="qrq")
    for job_id in failed[:2]:
        huey.storage.sql("update job set payload = ? where id = ?",
                         (other._sign(b"x"), job_id), commit=True)
    response = selected(client, csrf, "retry", failed)
    assert "Retry 2 failed jobs?" in response.text
    for job_id in failed[:2]:
        assert f"{job_id[:8]}</a>: job {job_id} cannot be retried: its signature does " \
            "not match" in response.text
    confirm = re.search(r'<form method="post" action="/admin/bulk">(.*?)</form>',
                        response.text, re.S).group(1)
    assert set(re.findall(r'name="id" value="([^"]+)"', confirm)) == set(failed[2:])
    selected(client, csrf, "retry", failed[2:], confirm="yes")
    assert [jobs.get(huey.storage, i)["status"] for i in failed] == [
        "failed", "failed", "queued", "queued"]


def test_a_retried_job_waits_from_its_retry_and_shows_its_first_wait(admin):
    # A job that failed a day ago and was retried now has waited seconds, not a day;
    # once it runs, its page says how long it waited before its first run.
    client, csrf = admin
    job_id = submit(bad, "boom", owner_id=None)
    day_ago = time.time() - 86400
    set_times(job_id, created_at=day_ago)
    run_next()
    huey.storage.sql("update job_attempt set started_at = ? where job_id = ?",
                     (day_ago + 5, job_id), commit=True)
    selected(client, csrf, "retry", [job_id], confirm="yes")
    row = re.search(rf'<tr data-job-id="{job_id}".*?</tr>', listed_html(client), re.S).group(0)
    since = float(re.search(r'waiting <span data-since="([0-9.]+)"', row).group(1))
    assert time.time() - 60 < since <= time.time()
    set_times(job_id, next_attempt_at=time.time() + 3600)  # deferred: due later
    row = re.search(rf'<tr data-job-id="{job_id}".*?</tr>', listed_html(client), re.S).group(0)
    assert "due " in row and "waiting" not in row
    run_next()
    page = client.get(f"/admin/jobs/{job_id}").text
    assert "(waited 5.0 s before its first run" in page


def listed_html(client):
    response = client.get("/admin/jobs")
    assert response.status_code == 200
    return response.text


def test_bulk_cancel_skips_ended_jobs_with_the_reason(admin):
    client, csrf = admin
    done = submit(ok, owner_id=None)
    run_next()
    queued = [submit(ok, owner_id=None) for _ in range(2)]  # no consumer: they wait
    response = selected(client, csrf, "cancel", [*queued, done])
    assert "Cancel 2 queued jobs?" in response.text
    assert f"{done[:8]}</a>: finished: it has ended already" in response.text
    response = selected(client, csrf, "cancel", queued, confirm="yes")
    assert response.status_code == 302
    assert [jobs.get(huey.storage, i)["status"] for i in queued] == ["canceled"] * 2
    assert jobs.get(huey.storage, done)["status"] == "finished"
    assert "2 job(s) canceled." in client.get("/admin/failed").text


def test_bulk_discard_deletes_ended_jobs_only_and_reports_the_rest(admin, settings):
    client, csrf = admin
    ended = [submit(bad, "x", owner_id=None), submit(ok, owner_id=None)]
    for _ in ended:
        run_next()
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    (settings.artifacts_dir / f"{ended[0]}.pdf").write_bytes(b"%PDF")
    waiting = submit(ok, owner_id=None)
    response = selected(client, csrf, "discard", [*ended, waiting])
    assert "Discard 2 jobs?" in response.text and "deleted for good" in response.text
    assert "queued: only ended jobs can be discarded (cancel it first)" in response.text
    # Even when asked to, the operation itself skips the waiting job, with the reason.
    response = selected(client, csrf, "discard", [*ended, waiting], confirm="yes")
    assert [jobs.get(huey.storage, i) for i in ended] == [None, None]
    assert not (settings.artifacts_dir / f"{ended[0]}.pdf").exists()
    assert jobs.get(huey.storage, waiting)["status"] == "queued"
    flash = client.get("/admin/failed").text
    assert "2 job(s) discarded, 1 skipped" in flash and "only ended jobs" in flash


def test_bulk_actions_check_their_input_and_the_csrf_token(admin):
    client, csrf = admin
    job_id = submit(bad, "x", owner_id=None)
    run_next()
    response = client.post("/admin/bulk", data={"action": "retry", "id": [job_id],
                                                "confirm": "yes"})
    assert response.status_code == 403
    assert selected(client, csrf, "explode", [job_id]).status_code == 422
    assert selected(client, csrf, "retry", ["../etc"]).status_code == 422
    response = selected(client, csrf, "retry", [])
    assert response.status_code == 302
    assert "Select at least one job first." in client.get("/admin/failed").text
    response = selected(client, csrf, "retry", [job_id, str(uuid.uuid4())])
    assert "Retry 1 failed job?" in response.text and "no such job" in response.text
    assert jobs.get(huey.storage, job_id)["status"] == "failed"
    response = client.post("/admin/bulk", data={"csrf_token": csrf, "action": "retry",
                                                "id": [job_id], "confirm": "yes",
                                                "next": "https://evil.example/"})
    assert response.headers["Location"] == "/admin/"


def test_the_cursor_helper_names_the_sort(some_jobs):
    job = jobs.get(huey.storage, some_jobs["failed"])
    listing = filters_module.Listing(sort="duration", descending=False)
    assert filters_module.read_cursor({"cursor": listing.position(job)}, "duration",
                                      False) == (100.0, job["id"])


def test_a_short_id_opens_its_job_from_the_search_and_the_address(admin):
    client, _ = admin
    job_id = submit(ok, owner_id=None)
    short = job_id[:8]
    found = client.get("/admin/jobs", query_string={"q": short.upper()})
    assert found.status_code == 302 and found.headers["Location"] == f"/admin/jobs/{job_id}"
    opened = client.get(f"/admin/jobs/{short}")
    assert opened.status_code == 302 and opened.headers["Location"] == f"/admin/jobs/{job_id}"
    assert client.get("/admin/jobs/00000000").status_code == 404
    assert client.get("/admin/jobs/not-an-id").status_code == 404
    # Two jobs sharing a start: the page lists them instead of guessing.
    twin = job_id[:8] + "-0000-4000-8000-000000000000"
    huey.storage.sql("update job set id = ? where id = ?", (twin, submit(ok, owner_id=None)),
                     commit=True)
    ambiguous = client.get(f"/admin/jobs/{short}")
    assert ambiguous.status_code == 409 and job_id in ambiguous.text and twin in ambiguous.text
    assert client.get("/admin/jobs", query_string={"q": short}).status_code == 200

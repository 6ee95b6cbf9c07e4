"""The admin dashboard through Flask's test client: log-in, CSRF, every page, the
actions (retry, retry-all, purge, cancel), escaping of user text, security headers."""

import datetime
import re
import time

import pytest
from huey import crontab

from qrq.appdb.db import app_db
from qrq.appdb.models import AdminSession, Template
from qrq.errors import ValidationError
from qrq.queue import audit, huey, job_progress, job_task, jobs, submit
from qrq.web.dashboard.charts import bar_chart
from qrq.web.dashboard.schedule import next_run
from tests.test_dead_letters import forge_payload

ZERO_ID = "00000000-0000-0000-0000-000000000000"
PAGES = ["/admin/", "/admin/jobs", "/admin/failed", "/admin/schedule", "/admin/consumers",
         "/admin/backups"]


@job_task("batch", name="test.admin_ok")
def ok(task=None):
    return {"ok": True}


@job_task("maintenance", name="test.backup_like")
def backup_like(task=None):
    return {"report": "ok"}


@job_task("mail", name="test.admin_bad")
def bad(message, task=None):
    raise ValidationError(message)


def run_next():
    task = huey.dequeue()
    assert task is not None
    huey.execute(task)
    return task.id


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client, name, token, next_url=None):
    page = client.get("/admin/login")
    data = {"name": name, "token": token, "csrf_token": csrf_of(page.text)}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/admin/login", data=data)


def token_of(headers):
    return headers["Authorization"].split(" ", 1)[1]


@pytest.fixture
def root(make_user):
    user, headers = make_user("root", admin=True, email="root@example.com")
    return user, token_of(headers)


@pytest.fixture
def admin(client, root):
    """A client logged in as an admin, and its CSRF token."""
    response = log_in(client, "root", root[1])
    assert response.status_code == 302
    return client, csrf_of(client.get("/admin/").text)


def post(client, csrf, url, **data):
    return client.post(url, data={"csrf_token": csrf, **data})


# -- log-in, sessions, CSRF ------------------------------------------------------------

def test_pages_send_a_logged_out_visitor_to_the_login(client, root):
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response.headers["Location"].startswith("/admin/login?next=")
    with client.get(f"/admin/progress.json?ids={ZERO_ID}") as response:
        assert response.status_code == 401 and response.get_json()["error"]["code"] == \
            "unauthorized"


def test_login_refuses_a_wrong_token_a_wrong_name_and_a_non_admin(client, root, alice):
    for name, token in [("root", "qrq_wrong"), ("alice", root[1]), ("alice", token_of(alice[1])),
                        ("root", "")]:
        response = log_in(client, name, token)
        assert response.status_code == 403, (name, token)
        assert "Wrong name or token, or not an admin." in response.text
        assert client.get("/admin/").status_code == 302


def test_login_logout_and_every_page(client, root):
    response = log_in(client, "root", root[1], next_url="/admin/jobs?status=failed")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/jobs?status=failed"
    cookie = response.headers["Set-Cookie"]
    assert "qrq_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/admin" in cookie
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 200, page
        assert "root" in response.text and 'id="logout"' in response.text
    csrf = csrf_of(client.get("/admin/").text)
    assert client.get("/admin/logout").status_code == 405
    response = post(client, csrf, "/admin/logout")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/login"
    assert client.get("/admin/").status_code == 302


def test_login_redirects_only_inside_the_dashboard(client, root):
    for target in ["https://evil.example/", "//evil.example/admin", "/api/me", "/administrator",
                   "/admin\\..\\x"]:
        response = log_in(client, "root", root[1], next_url=target)
        assert response.headers["Location"] == "/admin/", target
        client.post("/admin/logout", data={"csrf_token": csrf_of(client.get("/admin/").text)})


UNSAFE_NEXT = ["/admin/\r\nX-Evil: 1", "/admin/jobs\nX: 1", "/admin/\t/evil.example",
               "/admin/../../evil", "/admin/..", "/admin/%2e%2e/%2E%2E/evil", "/admin/./x",
               "/admin//evil.example", "/admin/%2f/evil.example", "/admin/%5c%5cevil",
               "/admin/\x7f", "/admin/caf\u00e9\u2028"]


def test_an_unsafe_next_falls_back_to_the_overview(client, root):
    """Control characters (a 500 from the Location header, before) and paths that leave
    the dashboard: the log-in, and an action run with one, end at the overview."""
    for target in UNSAFE_NEXT:
        response = log_in(client, "root", root[1], next_url=target)
        assert response.status_code == 302 and response.headers["Location"] == "/admin/", \
            target
        response = client.get("/admin/login", query_string={"next": target})
        assert response.status_code == 302 and response.headers["Location"] == "/admin/", \
            target
        csrf = csrf_of(client.get("/admin/").text)
        job_id = submit(ok, owner_id=None)
        response = post(client, csrf, f"/admin/jobs/{job_id}/cancel", next=target)
        assert response.status_code == 302 and response.headers["Location"] == "/admin/", \
            target
        assert jobs.get(huey.storage, job_id)["status"] == "canceled"
        post(client, csrf, "/admin/logout")
    log_in(client, "root", root[1])
    response = client.get("/admin/login", query_string={"next": "/admin/jobs/x/../y?q=1"})
    assert response.headers["Location"] == "/admin/"
    response = client.get("/admin/login", query_string={"next": "/admin/jobs?q=..%2F%2F"})
    assert response.headers["Location"] == "/admin/jobs?q=..%2F%2F"  # a query may


def test_every_post_needs_the_sessions_csrf_token(admin, settings):
    client, csrf = admin
    job_id = submit(bad, "boom", owner_id=None)
    run_next()
    actions = [f"/admin/jobs/{job_id}/retry", f"/admin/jobs/{job_id}/cancel",
               "/admin/failed/retry-all", "/admin/failed/purge", "/admin/logout"]
    for url in actions:
        for data in ({}, {"csrf_token": "forged"}, {"csrf_token": csrf[:-1]}):
            response = client.post(url, data={"older_than": "0s", **data})
            assert response.status_code == 403, (url, data)
            assert "did not come from this site" in response.text
    assert jobs.get(huey.storage, job_id)["status"] == "failed"  # nothing happened
    assert client.get("/admin/").status_code == 200  # still logged in
    # The login form is protected too (no token: no session to post into).
    client.post("/admin/logout", data={"csrf_token": csrf})
    response = client.post("/admin/login", data={"name": "root", "token": "x"})
    assert response.status_code == 403


def test_a_post_a_browser_says_came_from_another_site_is_refused(admin):
    # Even with the session's CSRF token (one that leaked): fetch metadata says where
    # the form was.
    client, csrf = admin
    job_id = submit(bad, "boom", owner_id=None)
    run_next()
    for site in ("cross-site", "same-site"):
        response = client.post(f"/admin/jobs/{job_id}/retry", data={"csrf_token": csrf},
                               headers={"Sec-Fetch-Site": site})
        assert response.status_code == 403 and "another site" in response.text
    assert jobs.get(huey.storage, job_id)["status"] == "failed"  # nothing happened
    response = client.post(f"/admin/jobs/{job_id}/retry", data={"csrf_token": csrf},
                           headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 302 and jobs.get(huey.storage, job_id)["status"] == "queued"


def test_failed_logins_are_in_the_audit_log(client, root):
    assert log_in(client, "root", "qrq_wrong").status_code == 403
    logged, _ = audit.entries(huey.storage, action="session.login_failed")
    assert [(e["actor"], e["detail"]["name"]) for e in logged] == [("-", "root")]
    assert logged[0]["detail"]["address"] == "127.0.0.1"


def test_an_admins_api_actions_on_anothers_jobs_are_audited(client, make_user, templates):
    _, alice = make_user("alice")
    _, root = make_user("root", admin=True)
    mine = client.post("/api/generate-qr-pdf", headers=root, json={"template_id": 1})
    theirs = client.post("/api/generate-qr-pdf", headers=alice, json={"template_id": 1})
    for answer in (mine, theirs):
        assert client.delete(f"/api/jobs/{answer.get_json()['job_id']}",
                             headers=root).status_code == 202
    logged, _ = audit.entries(huey.storage, action="job.cancel")
    assert [(e["actor"], e["job_ids"]) for e in logged] == [
        ("root", [theirs.get_json()["job_id"]])]


def test_no_session_action_answers_get(app, admin):
    client, _ = admin
    actions = [rule for rule in app.url_map.iter_rules()
               if rule.rule.startswith("/admin") and "POST" in rule.methods]
    assert {rule.endpoint for rule in actions} >= {
        "admin.retry_job", "admin.cancel_job", "admin.retry_all", "admin.purge",
        "admin.logout", "admin.login_post"}
    for rule in actions:
        assert "GET" not in rule.methods, rule.rule
        if rule.endpoint != "admin.login_post":  # GET /admin/login is the form
            url = rule.rule.replace("<job_id>", ZERO_ID)
            assert client.get(url).status_code == 405, url


def test_a_reset_token_ends_the_session(admin, root):
    client, _ = admin
    with app_db.connection_context():
        root[0].reset_token()
    assert client.get("/admin/").status_code == 302


def session_cookie(client):
    return client.get_cookie("qrq_session", path="/admin").value


def test_logging_out_ends_the_session_for_a_copied_cookie_too(admin, settings):
    from qrq.web import create_app

    client, csrf = admin
    # The copy goes to another web app on the same data (another worker or host).
    copy = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    copy.set_cookie("qrq_session", session_cookie(client), path="/admin")
    assert copy.get("/admin/").status_code == 200
    post(client, csrf, "/admin/logout")
    assert copy.get("/admin/").status_code == 302
    assert copy.get(f"/admin/progress.json?ids={ZERO_ID}").status_code == 401


def test_the_session_cookie_holds_no_token_hash_and_cannot_be_forged(app, admin, root):
    client, _ = admin
    signer = app.session_interface.get_signing_serializer(app)
    content = signer.loads(session_cookie(client))
    assert set(content) - {"_permanent"} == {"sid", "csrf"}
    assert root[0].token_hash not in str(content)
    # Even knowing the secret key and the token hash, a made-up cookie logs no one in.
    forger = app.test_client()
    for forged in ({"uid": root[0].id, "th": root[0].token_hash, "at": time.time()},
                   {"sid": root[0].token_hash, "csrf": "x"}):
        forger.set_cookie("qrq_session", signer.dumps(forged), path="/admin")
        assert forger.get("/admin/").status_code == 302


def test_failed_logins_are_throttled_per_address(app, root):
    from qrq.appdb.throttle import LIMIT

    client = app.test_client()
    for _ in range(LIMIT):
        assert log_in(client, "root", "qrq_wrong").status_code == 403
    response = log_in(client, "root", root[1])  # even the right token, for a while
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    assert client.get("/admin/").status_code == 302
    # Another address is not slowed.
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert log_in(other, "root", root[1]).status_code == 302


def test_a_demoted_admin_is_logged_out(admin, root):
    client, _ = admin
    with app_db.connection_context():
        root[0].is_admin = False
        root[0].save()
    assert client.get("/admin/").status_code == 302


def test_pages_send_security_headers_and_load_nothing_from_elsewhere(admin):
    client, _ = admin
    for page in PAGES + ["/admin/login"]:
        response = client.get(page)
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        urls = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert all(url.startswith(("/", "?", "#", "data:")) for url in urls), urls
    for asset in ("admin.css", "admin.js"):
        with client.get(f"/admin/static/{asset}") as response:
            assert response.status_code == 200


# -- pages -------------------------------------------------------------------------------

def test_overview_counts_charts_and_the_no_consumer_banner(admin):
    client, _ = admin
    submit(ok, owner_id=None)
    run_next()
    submit(bad, "x", owner_id=None)
    run_next()
    submit(ok, owner_id=None)
    html = client.get("/admin/").text
    assert 'role="alert"' in html and "no consumer is running" in html
    assert html.count("<svg") == 2
    assert 'class="bar-finished"' in html and 'class="bar-failed"' in html
    assert re.search(r'href="/admin/jobs\?type=batch&amp;status=queued">1<', html)
    huey.create_consumer(workers=1, worker_type="thread")._register()
    html = client.get("/admin/").text
    assert "no consumer is running" not in html and "1 registered" in html


def test_bar_chart_heights_are_proportional():
    chart = bar_chart([("00:00", [("bar-finished", 2), ("bar-failed", 2)]),
                       ("01:00", [("bar-finished", 1), ("bar-failed", 0)])], label="x")
    bars = chart["bars"]
    assert [b["css"] for b in bars] == ["bar-finished", "bar-failed", "bar-finished"]
    assert bars[0]["h"] == bars[1]["h"] == 2 * bars[2]["h"]
    assert bars[1]["y"] + bars[1]["h"] == bars[0]["y"]  # stacked
    assert bar_chart([("00:00", [("bar-failed", 0)])], label="empty")["bars"] == []


def test_bar_chart_ticks_are_whole_job_counts_at_their_height():
    chart = bar_chart([("00:00", [("bar-finished", 53)])], label="x")
    ticks = {t["text"]: t["y"] for t in chart["ticks"]}
    assert list(ticks) == ["0", "26", "53"]  # not 26.5
    base, top = ticks["0"], ticks["53"]
    assert abs((base - ticks["26"]) / (base - top) - 26 / 53) < 0.01
    assert [t["text"] for t in bar_chart([("00:00", [("bar-finished", 1)])],
                                         label="x")["ticks"]] == ["0", "1"]
    assert [t["text"] for t in bar_chart([("00:00", [("bar-failed", 0.25)])], label="x",
                                         percent=True)["ticks"]] == ["0%", "50%", "100%"]


def test_job_list_filters_and_search(admin, templates, alice, client):
    _, csrf = admin
    mine = client.post("/api/generate-qr-pdf", json={"template_id": 1},
                       headers=alice[1]).get_json()["job_id"]
    system = submit(ok, owner_id=None)
    failed = submit(bad, "x", owner_id=None)
    for _ in range(3):
        run_next()

    def listed(**args):
        response = client.get("/admin/jobs", query_string=args)
        assert response.status_code == 200, response.text
        return set(re.findall(r'href="/admin/jobs/([0-9a-f-]{36})"', response.text))

    assert listed() == {mine, system, failed}
    assert listed(type="pdf") == {mine}
    assert listed(status="failed") == {failed}
    assert listed(owner="alice") == {mine}
    assert listed(owner="-") == {system, failed}
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    assert listed(date=today) == {mine, system, failed}
    assert listed(date="2001-01-01") == set()
    assert failed in listed(q=failed[:6]) and listed(q=failed[:20]) == {failed}
    response = client.get("/admin/jobs", query_string={"q": failed})
    assert response.status_code == 302 and response.headers["Location"].endswith(failed)
    for args, field in [({"date": "22/11/2026"}, "date"), ({"owner": "nobody"}, "owner"),
                        ({"status": "sleeping"}, "status"), ({"type": "<script>"}, "type"),
                        ({"cursor": "<script>"}, "cursor")]:
        response = client.get("/admin/jobs", query_string=args)
        assert response.status_code == 422, args
        assert field in response.text and "<script>" not in response.text


def test_page_cursors_are_checked_in_one_place(admin):
    client, _ = admin
    # The last: {"s":"created","d":true,"v":1,"id":"\ud800"}, a lone surrogate.
    for cursor in ("%C2%B2", "9" * 5000, "0", "-1", "x", "eyJzIjoxfQ",
                   "eyJzIjoiY3JlYXRlZCIsImQiOnRydWUsInYiOjEsImlkIjoiXHVkODAwIn0="):
        for url in ("/admin/jobs", "/admin/failed"):
            response = client.get(f"{url}?cursor={cursor}")
            assert response.status_code == 422, (url, cursor)
            assert "cursor" in response.text


def test_job_detail_shows_everything_and_escapes_user_text(admin, templates, alice, client,
                                                           settings):
    with app_db.connection_context():
        Template.update(name="<script>alert('t')</script>").where(Template.id == 2).execute()
    job_id = client.post("/api/generate-qr-pdf", headers=alice[1], json={
        "template_id": 2, "options": {"copies": 2, "title": "<img src=x onerror=alert(1)>"}}
    ).get_json()["job_id"]
    assert run_next() == job_id
    html = client.get(f"/admin/jobs/{job_id}").text
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "finished" in html and "alice" in html and "pdf.generate" in html
    assert '<progress max="100" value="100">' in html
    link = re.search(rf'href="(/admin/jobs/{job_id}/files/{job_id}\.pdf)"', html).group(1)
    with client.get(link) as download:
        assert download.status_code == 200 and download.data.startswith(b"%PDF")
    with client.get(f"/admin/jobs/{job_id}/files/..%2Fapp.db") as response:
        assert response.status_code == 404
    assert client.get(f"/admin/jobs/{ZERO_ID}").status_code == 404
    assert client.get("/admin/jobs/not-a-job").status_code == 404

    failed = submit(bad, "<b>bold</b> input", owner_id=None)
    run_next()
    html = client.get(f"/admin/jobs/{failed}").text
    assert "&lt;b&gt;bold&lt;/b&gt; input" in html and "<b>bold" not in html
    assert 'id="traceback"' in html and "ValidationError" in html
    assert f'action="/admin/jobs/{failed}/retry"' in html


def test_retry_a_failed_job_whose_template_came_back(admin, templates, alice, client):
    _, csrf = admin
    job_id = client.post("/api/generate-qr-pdf", json={"template_id": 2},
                         headers=alice[1]).get_json()["job_id"]
    with app_db.connection_context():
        saved = Template.get_by_id(2).__data__
        Template.delete_by_id(2)
    run_next()
    job = jobs.get(huey.storage, job_id)
    assert job["status"] == "failed" and "does not exist" in job["error"]
    with app_db.connection_context():
        Template.insert(saved).execute()
    response = post(client, csrf, f"/admin/jobs/{job_id}/retry")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/admin/jobs/{job_id}"
    assert "queued again" in client.get(response.headers["Location"]).text
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    run_next()
    assert jobs.get(huey.storage, job_id)["status"] == "finished"
    # Retrying a finished job is refused with a message, not an error page.
    response = post(client, csrf, f"/admin/jobs/{job_id}/retry")
    assert "only failed, canceled or expired" in client.get(response.headers["Location"]).text


def test_failed_page_retry_all_and_purge(admin, settings):
    client, csrf = admin
    first, second = submit(bad, "a", owner_id=None), submit(bad, "b", owner_id=None)
    finished = submit(ok, owner_id=None)
    for _ in range(3):
        run_next()
    html = client.get("/admin/failed").text
    assert first in html and second in html and finished not in html
    # Each row's Retry button names its job (to a screen reader, tabbing through them).
    assert f'aria-label="Retry job {first[:8]}"' in html
    # The purge form takes the page's state by default, never "any ended".
    assert "<option selected>failed</option>" in html
    assert "<option selected>canceled</option>" in client.get("/admin/failed?status=canceled").text
    response = post(client, csrf, "/admin/failed/retry-all", type="mail")
    assert "2 failed job(s) queued again" in client.get(response.headers["Location"]).text
    assert {jobs.get(huey.storage, i)["status"] for i in (first, second)} == {"queued"}
    run_next()
    run_next()
    response = post(client, csrf, "/admin/failed/purge", older_than="1h", status="")
    assert "Purged 0 job(s)" in client.get(response.headers["Location"]).text
    huey.storage.sql("update job set finished_at = finished_at - 7200", commit=True)
    response = post(client, csrf, "/admin/failed/purge", older_than="1h", status="failed")
    assert "Purged 2 job(s)" in client.get(response.headers["Location"]).text
    assert jobs.get(huey.storage, first) is None
    assert jobs.get(huey.storage, finished) is not None
    assert response.headers["Location"] == "/admin/failed"
    # From the canceled tab: back to it.
    response = post(client, csrf, "/admin/failed/purge", older_than="1h", status="canceled")
    assert response.headers["Location"] == "/admin/failed?status=canceled"
    response = post(client, csrf, "/admin/failed/purge", older_than="soon")
    assert response.status_code == 422 and "older_than" in response.text
    assert client.get("/admin/failed?status=running").status_code == 422


def test_retry_all_goes_on_past_a_job_it_cannot_retry_and_says_why(admin):
    client, csrf = admin
    good, forged = submit(bad, "a", owner_id=None), submit(bad, "b", owner_id=None)
    run_next()
    run_next()
    forge_payload(forged)
    response = post(client, csrf, "/admin/failed/retry-all")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).text
    assert "1 failed job(s) queued again, 1 skipped" in page and forged in page
    assert jobs.get(huey.storage, good)["status"] == "queued"
    assert jobs.get(huey.storage, forged)["status"] == "failed"


def test_cancel_from_the_dashboard(admin):
    client, csrf = admin
    job_id = submit(ok, owner_id=None)
    response = post(client, csrf, f"/admin/jobs/{job_id}/cancel")
    assert response.status_code == 302
    assert jobs.get(huey.storage, job_id)["status"] == "canceled"
    assert f"Job {job_id} canceled." in client.get(response.headers["Location"]).text
    response = post(client, csrf, f"/admin/jobs/{job_id}/cancel")
    assert "already canceled" in client.get(response.headers["Location"]).text
    # A running job is asked to stop, and the page says so (not "is running").
    running = submit(ok, owner_id=None)
    assert huey.dequeue().id == running
    response = post(client, csrf, f"/admin/jobs/{running}/cancel")
    page = client.get(response.headers["Location"]).text
    assert f"Cancel requested: job {running} (running) stops at its next progress report" \
        in page


def test_progress_json_feeds_the_progress_bars(admin):
    client, _ = admin
    job_id = submit(ok, owner_id=None)
    assert huey.dequeue().id == job_id
    job_progress.report_progress(huey.storage, job_id, 37, "rendering page 3/8")
    with client.get(f"/admin/progress.json?ids={job_id},{ZERO_ID}") as response:
        assert response.get_json() == {"jobs": {job_id: {
            "status": "running", "progress": 37, "stage": "rendering page 3/8"}}}
    with client.get("/admin/progress.json?ids=1;drop") as response:
        assert response.status_code == 422 and response.get_json()["error"]["field"] == "ids"


def test_schedule_page_lists_periodic_and_scheduled_tasks(admin):
    client, _ = admin
    delayed = submit(ok, owner_id=None, delay=7200)
    html = client.get("/admin/schedule").text
    assert "retention.purge" in html and "alerts.check" in html
    assert delayed in html and "test.admin_ok" in html
    assert "1 waiting in huey" in html
    import tasks.retention

    huey.enqueue(tasks.retention.purge_old_jobs.s())  # a periodic_job run leaves a record
    purge_id = run_next()
    assert purge_id in client.get("/admin/schedule").text


def test_next_run_steps_minutes_like_the_scheduler():
    import huey_app

    tasks = {t.name: t for t in huey_app.huey._registry.periodic_tasks}
    moment = datetime.datetime(2026, 11, 22, 10, 7, 30)
    assert next_run(tasks["retention.purge"], moment) == datetime.datetime(2026, 11, 22, 11, 7)
    assert next_run(tasks["alerts.check"], moment) == datetime.datetime(2026, 11, 22, 10, 8)

    class Yearly:
        validate_datetime = staticmethod(crontab(month="1", day="1", hour="0", minute="0"))

    assert next_run(Yearly, moment) is None  # more than a week away


def test_consumers_page(admin):
    client, _ = admin
    assert "No consumer is registered" in client.get("/admin/consumers").text
    consumer = huey.create_consumer(workers=3, worker_type="thread")
    consumer._register()
    job_id = submit(ok, owner_id=None)
    assert huey.dequeue().id == job_id
    html = client.get("/admin/consumers").text
    assert consumer.consumer_id in html and job_id in html and "stale" not in html
    huey.storage.sql("update consumer set heartbeat_at = heartbeat_at - 600", commit=True)
    assert "stale" in client.get("/admin/consumers").text


def test_backups_page_shows_sets_with_their_reports_and_backup_jobs(admin, settings, backend):
    from qrq.backup import run_backup

    client, _ = admin
    html = client.get("/admin/backups").text
    # No backup directory: on several hosts, the sets are on the host that runs backups.
    assert 'id="no-backup-dir"' in html and str(settings.backups_dir) in html
    assert "No backup jobs yet" in html
    settings.backups_dir.mkdir()
    html = client.get("/admin/backups").text
    assert "No backup sets yet" in html and 'id="no-backup-dir"' not in html
    manifest = run_backup(settings, "manual")
    job_id = submit(backup_like, owner_id=None)
    run_next()
    html = client.get("/admin/backups").text
    names = ("queue.db", "app.db") if backend == "sqlite" else ("postgresql",)
    assert manifest["id"] in html and all(name in html for name in names)
    assert html.count('<tr><td class="mono">') >= len(names)  # a report row per database
    assert job_id in html and "test.backup_like" in html
    if backend == "postgres":
        return  # a dump is taken afresh each time (nothing to reuse)
    second = run_backup(settings, "manual")  # app.db is unchanged: reused
    assert second["reused"] >= 1
    html = client.get("/admin/backups").text
    assert f"reused from set {manifest['id']}" in html
    assert f'<td class="num">{second["reused"]}</td>' in html


def test_backups_page_without_a_listing_shows_the_backup_jobs(admin, monkeypatch):
    from qrq import backup

    client, _ = admin
    monkeypatch.delattr(backup, "list_sets")
    job_id = submit(backup_like, owner_id=None)
    html = client.get("/admin/backups").text
    assert "Backup sets" not in html and job_id in html


# -- batches -----------------------------------------------------------------------------

def run_until_ended(job_id):
    """Run queued jobs here until *job_id* has ended (a batch's mail job may go first)."""
    while jobs.get(huey.storage, job_id)["status"] not in jobs.ENDED:
        task = huey.dequeue()
        assert task is not None, "nothing queued"
        huey.execute(task)


def test_a_batch_canceled_midway_says_what_its_figures_are_of(admin, root, templates):
    client, _ = admin
    headers = {"Authorization": f"Bearer {root[1]}"}
    items = [{"template_id": 3, "data": f"https://events.example/{i}"} for i in range(7)]
    job_id = client.post("/api/batch/generate-qrs", json={"items": items},
                         headers=headers).get_json()["batch_job_id"]
    # As a cancel at a progress report leaves it: 2 of 7 items done, the stage it was at.
    huey.storage.sql("update batch set completed = 2 where job_id = ?", (job_id,), commit=True)
    huey.storage.sql("update job set status = 'canceled', cancel_requested = 1, progress = 28, "
                     "stage = 'encoding 2/7', finished_at = ? where id = ?",
                     (time.time(), job_id), commit=True)
    page = client.get(f"/admin/jobs/{job_id}").text
    assert 'id="batch-rate">100.0%<' in page and "of the 2 done" in page
    assert 'id="batch-pending">5<' in page
    assert "canceled at: encoding 2/7" in page
    assert "<dt>Cancel</dt>" not in page  # the request was met: the job ended


def test_a_batch_with_failed_items_shows_them_and_retries_them(admin, root, templates):
    client, csrf = admin
    headers = {"Authorization": f"Bearer {root[1]}"}
    failing = {1, 4, 5}  # too long for a code at error correction H
    items = [{"template_id": 3, "data": "z" * 2600 + f"<b>{i}" if i in failing
              else f"https://events.example/{i}"} for i in range(7)]
    response = client.post("/api/batch/generate-qrs", json={"items": items}, headers=headers)
    assert response.status_code == 202
    job_id = response.get_json()["batch_job_id"]
    page = client.get(f"/admin/jobs/{job_id}").text
    assert 'id="batch-pending">7<' in page and "retry-failed-items" not in page  # not ended
    run_until_ended(job_id)

    page = client.get(f"/admin/jobs/{job_id}").text
    assert 'id="batch-ok">4<' in page and 'id="batch-failed">3<' in page
    assert 'id="batch-pending">0<' in page and 'id="batch-rate">57.1%<' in page
    assert "<b>" not in page  # payloads are escaped
    listed = client.get(f"/admin/jobs/{job_id}?items=failed").text
    rows = re.findall(r'<tr data-idx="(\d+)">(.*?)</tr>', listed, re.S)
    assert [int(idx) for idx, _ in rows] == sorted(failing)
    assert all("do not fit" in row and "/items/" not in row for _, row in rows)
    ok_rows = re.findall(r'<tr data-idx="(\d+)">(.*?)</tr>',
                         client.get(f"/admin/jobs/{job_id}?items=ok").text, re.S)
    assert [int(idx) for idx, _ in ok_rows] == [0, 2, 3, 6]
    svg_url = f"/admin/jobs/{job_id}/items/2.svg"
    assert svg_url in ok_rows[1][1]
    with client.get(svg_url) as svg:
        assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
    assert client.get(f"/admin/jobs/{job_id}/items/1.svg").status_code == 404
    assert client.get(f"/admin/jobs/{job_id}?items=bogus").status_code == 422
    listing = client.get("/admin/jobs?type=batch").text
    assert "finished</span><span class=\"bad batch-failures\">, 3 failed</span>" in listing

    assert client.post(f"/admin/jobs/{job_id}/retry-failed-items").status_code == 403  # no CSRF
    response = post(client, csrf, f"/admin/jobs/{job_id}/retry-failed-items")
    assert response.status_code == 302
    new_id = response.headers["Location"].rsplit("/", 1)[1]
    assert new_id != job_id and jobs.get(huey.storage, new_id)["status"] == "queued"
    child = client.get(response.headers["Location"]).text
    assert "Queued 3 failed item(s)" in child and 'id="batch-pending">3<' in child
    assert f'href="/admin/jobs/{job_id}"' in child  # the parent batch
    response = client.get("/api/batch/" + new_id, headers=headers).get_json()
    assert (response["parent_job_id"], response["total"]) == (job_id, 3)
    # The parent links its retry, with its size and state.
    parent = client.get(f"/admin/jobs/{job_id}").text
    retried = re.search(r'<p id="batch-retries">(.*?)</p>', parent, re.S)[1]
    assert f'href="/admin/jobs/{new_id}"' in retried and "(3 item(s), queued)" in retried


def test_retrying_a_batch_without_failed_items_says_so(admin, root, templates):
    client, csrf = admin
    headers = {"Authorization": f"Bearer {root[1]}"}
    job_id = client.post("/api/batch/generate-qrs", headers=headers, json={
        "items": [{"template_id": 3, "data": "https://events.example/1"}]}).get_json()[
        "batch_job_id"]
    run_until_ended(job_id)
    assert "retry-failed-items" not in client.get(f"/admin/jobs/{job_id}").text
    response = post(client, csrf, f"/admin/jobs/{job_id}/retry-failed-items")
    assert response.status_code == 302
    assert "has no failed items" in client.get(response.headers["Location"]).text
    assert post(client, csrf, f"/admin/jobs/{ZERO_ID}/retry-failed-items").status_code == 404


def test_a_browser_gets_an_error_page_not_json(admin, root):
    client, csrf = admin
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    # An action's URL opened in the browser (a GET), and a page that does not exist.
    for url, status in ((f"/admin/jobs/{ZERO_ID}/cancel", 405), ("/admin/nope", 404)):
        response = client.get(url, headers=browser)
        assert response.status_code == status and response.mimetype == "text/html", url
        assert "Back to the overview" in response.text
    assert client.get(f"/admin/jobs/{ZERO_ID}/cancel", headers=browser).headers["Allow"]
    # JSON still, for the dashboard's own JSON and for a client that asks for it.
    assert client.get("/admin/nope.json", headers=browser).mimetype == "application/json"
    assert client.get("/admin/nope").mimetype == "application/json"
    # A form sent after the session expired: a 401 page that leads to the login.
    with app_db.connection_context():
        AdminSession.delete().execute()
    response = client.post(f"/admin/jobs/{ZERO_ID}/cancel", data={"csrf_token": csrf},
                           headers=browser)
    assert response.status_code == 401 and 'href="/admin/login"' in response.text

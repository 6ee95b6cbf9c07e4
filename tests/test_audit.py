"""The audit log: every dashboard, admin-API and CLI action recorded with who, when,
what and which jobs; its page (paged, newest first, filtered); its retention."""

import getpass
import re
import time

import pytest

from qrq.cli import main
from qrq.queue import audit, huey, jobs, submit
from qrq.queue.retention import apply_retention
from tests.dashboard import bad, csrf_of, logged_in, post, run_next, token_of

DAY = 86400


@pytest.fixture
def admin(app, make_user):
    """A client logged in to the dashboard as the admin "root", and its CSRF token."""
    return logged_in(app, "root", make_user("root", admin=True)[1])


def failed_jobs(n):
    ids = [submit(bad, f"boom {i}", owner_id=None) for i in range(n)]
    for _ in ids:
        run_next()
    assert all(jobs.get(huey.storage, i)["status"] == "failed" for i in ids)
    return ids


def audit_rows(html):
    """The audit page's rows as (actor, action, count, [short job ids])."""
    found = []
    for row in re.findall(r"<tr data-audit-id=[^>]*>(.*?)</tr>", html, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ids = re.findall(r'class="mono" href="/admin/jobs/[^"]+">([0-9a-f]{8})</a>', cells[4])
        found.append((cells[1].strip(), re.sub(r"<[^>]+>", "", cells[2]).strip(),
                      int(cells[3]), ids))
    return found


def test_an_admins_retries_show_on_the_audit_page_with_count_and_ids(admin):
    client, csrf = admin
    one, *rest = failed_jobs(3)
    assert post(client, csrf, f"/admin/jobs/{one}/retry").status_code == 302
    run_next()  # fails again
    assert post(client, csrf, "/admin/failed/retry-all").status_code == 302
    page = client.get("/admin/audit")
    assert page.status_code == 200
    assert 'href="/admin/audit" aria-current="page">Audit</a>' in page.text
    rows = audit_rows(page.text)
    assert rows[0][:3] == ("root", "jobs.retry_failed", 3)  # newest first
    assert sorted(rows[0][3]) == sorted(i[:8] for i in (one, *rest))
    assert rows[1] == ("root", "job.retry", 1, [one[:8]])
    assert "skipped:</span> 0" in page.text


def test_bulk_actions_are_recorded_once_confirmed(admin):
    client, csrf = admin
    failed = failed_jobs(2)
    queued = submit(bad, "waits", owner_id=None)
    selected = {"action": "retry", "id": [*failed, queued]}
    question = client.get("/admin/bulk/confirm", query_string=selected)
    assert question.status_code == 200
    assert audit.entries(huey.storage) == ([], 0)
    assert post(client, csrf, "/admin/bulk", confirm="yes", **selected).status_code == 302
    (row,), _ = audit.entries(huey.storage)
    assert (row["actor"], row["action"], row["job_count"]) == ("root", "jobs.retry", 2)
    assert row["job_ids"] == failed and row["detail"] == {"selected": 3, "skipped": 1}
    rows = audit_rows(client.get("/admin/audit").text)
    assert rows == [("root", "jobs.retry", 2, [i[:8] for i in failed])]


def test_admin_api_actions_are_recorded_under_the_token_users_name(client, make_user,
                                                                   settings):
    _, headers = make_user("ops", admin=True)
    one, two = failed_jobs(2)
    assert client.post(f"/api/admin/jobs/{one}/retry", headers=headers).status_code == 202
    assert client.post(f"/api/admin/jobs/{one}/retry", headers=headers).status_code == 409
    assert client.post("/api/admin/jobs/retry-failed", headers=headers,
                       json={"type": "mail"}).status_code == 202
    assert client.post("/api/admin/jobs/purge", headers=headers,
                       json={"older_than": "1d", "status": "failed"}).status_code == 200
    rows, total = audit.entries(huey.storage)
    assert total == 3  # the refused retry changed nothing and is not recorded
    assert [(r["actor"], r["action"], r["job_count"]) for r in rows] == [
        ("ops", "jobs.purge", 0), ("ops", "jobs.retry_failed", 1), ("ops", "job.retry", 1)]
    assert rows[0]["detail"] == {"older_than": "1d", "status": "failed"}
    assert rows[1]["job_ids"] == [two] and rows[1]["detail"] == {"type": "mail",
                                                                  "skipped": 0}


def test_dashboard_cancel_and_purge_are_recorded(admin, settings):
    client, csrf = admin
    queued = submit(bad, "never runs", owner_id=None)
    post(client, csrf, f"/admin/jobs/{queued}/cancel")
    assert post(client, csrf, "/admin/failed/purge", older_than="0s",
                status="canceled").status_code == 302
    assert jobs.get(huey.storage, queued) is None
    rows, _ = audit.entries(huey.storage, actor="root")
    assert [(r["action"], r["job_count"], r["job_ids"]) for r in rows] == [
        ("jobs.purge", 1, []), ("job.cancel", 1, [queued])]
    assert rows[0]["detail"] == {"older_than": "0s", "status": "canceled"}


def test_cli_actions_are_recorded_as_cli_and_the_login_name(runner, settings):
    one, two = failed_jobs(2)
    assert runner.invoke(main, ["jobs", "retry", one[:8]]).exit_code == 0
    assert runner.invoke(main, ["jobs", "retry", "--all-failed"]).exit_code == 0
    queued = submit(bad, "waits", owner_id=None)
    assert runner.invoke(main, ["jobs", "cancel", queued]).exit_code == 0
    assert runner.invoke(main, ["jobs", "purge", "--older-than", "0s"]).exit_code == 0
    rows, _ = audit.entries(huey.storage)
    assert {r["actor"] for r in rows} == {f"cli:{getpass.getuser()}"}
    assert [(r["action"], r["job_count"]) for r in rows] == [
        ("jobs.purge", 1), ("job.cancel", 1), ("jobs.retry_failed", 1), ("job.retry", 1)]
    assert rows[2]["job_ids"] == [two] and rows[3]["job_ids"] == [one]


def test_running_a_periodic_task_now_is_recorded_from_every_door(admin, runner, make_user):
    client, csrf = admin
    _, headers = make_user("ops", admin=True)
    assert post(client, csrf, "/admin/schedule/backup.scheduled/run").status_code == 302
    assert client.post("/api/admin/schedule/retention.purge/run",
                       headers=headers).status_code == 202
    assert runner.invoke(main, ["schedule", "run", "analytics.warm_up"]).exit_code == 0
    rows, _ = audit.entries(huey.storage, action="schedule.run")
    assert [(r["actor"], r["detail"]["task"]) for r in rows] == [
        (f"cli:{getpass.getuser()}", "analytics.warm_up"), ("ops", "retention.purge"),
        ("root", "backup.scheduled")]
    assert all(jobs.get(huey.storage, r["job_ids"][0])["name"] == r["detail"]["task"]
               for r in rows)


def test_pausing_and_resuming_a_type_is_recorded_from_every_door(admin, runner, make_user):
    client, csrf = admin
    _, headers = make_user("ops", admin=True)
    submit(bad, "waits", owner_id=None)
    assert post(client, csrf, "/admin/types/mail/pause").status_code == 302
    assert client.post("/api/admin/types/mail/resume", headers=headers).status_code == 200
    assert runner.invoke(main, ["jobs", "pause", "pdf"]).exit_code == 0
    rows, _ = audit.entries(huey.storage)
    assert [(r["actor"], r["action"], r["job_count"], r["detail"]) for r in rows] == [
        (f"cli:{getpass.getuser()}", "type.pause", 0, {"type": "pdf", "changed": True}),
        ("ops", "type.resume", 1, {"type": "mail", "changed": True}),
        ("root", "type.pause", 1, {"type": "mail", "changed": True})]


def test_the_page_is_paged_newest_first_and_filtered(admin):
    client, _ = admin
    now = time.time()
    for i in range(120):
        audit.record(huey.storage, "ann" if i % 2 else "bob", "job.retry" if i % 3 else
                     "jobs.purge", job_ids=[f"{i:08d}-0000-0000-0000-000000000000"],
                     now=now - 1000 + i)
    first = client.get("/admin/audit").text
    assert "120 action(s) on record" in first and "page 1 of 3" in first
    assert audit_rows(first)[0][3] == ["00000119"] and len(audit_rows(first)) == 50
    last = client.get("/admin/audit?page=3").text
    assert [r[3][0] for r in audit_rows(last)] == [f"{i:08d}" for i in range(19, -1, -1)]
    only = client.get("/admin/audit?actor=ann&action=jobs.purge").text
    rows = audit_rows(only)
    assert "20 action(s) match the filter" in only
    assert {(r[0], r[1]) for r in rows} == {("ann", "jobs.purge")}
    assert '<option value="ann" selected>ann</option>' in only
    assert "page=2" not in only
    paged = client.get("/admin/audit?actor=bob&page=2").text
    assert 'href="/admin/audit?actor=bob&amp;page=1"' in paged
    assert client.get("/admin/audit?page=0").status_code == 422
    assert client.get("/admin/audit?actor=" + "x" * 101).status_code == 422
    nobody = client.get("/admin/audit?actor=nobody").text
    assert audit_rows(nobody) == [] and "0 action(s) match the filter" in nobody


def test_a_row_keeps_a_bounded_list_of_ids_and_the_true_count(admin):
    client, _ = admin
    ids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(250)]
    audit.record(huey.storage, "root", "jobs.retry_failed", job_ids=ids,
                 detail={"note": "<b>x</b>"})
    (row,), _ = audit.entries(huey.storage)
    assert row["job_count"] == 250 and row["job_ids"] == ids[:audit.MAX_IDS]
    html = client.get("/admin/audit").text
    assert audit_rows(html)[0][2:] == (250, [i[:8] for i in ids[:10]])
    assert "and 240 more" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_a_record_inside_a_transaction_commits_or_rolls_back_with_it(settings):
    with huey.storage.db(commit=True) as curs:
        audit.record(curs, "root", "job.retry", job_ids=["a"])
    with pytest.raises(RuntimeError), huey.storage.db(commit=True) as curs:
        audit.record(curs, "root", "job.cancel", job_ids=["b"])
        raise RuntimeError("the action failed")
    rows, total = audit.entries(huey.storage)
    assert total == 1 and rows[0]["action"] == "job.retry"


def test_a_done_action_stays_done_when_its_audit_row_cannot_be_written(
        admin, make_user, settings, caplog):
    client, csrf = admin
    _, headers = make_user("ops", admin=True)
    one, two = failed_jobs(2)
    huey.storage.sql("alter table audit rename to audit_elsewhere")  # every write fails
    assert client.post(f"/api/admin/jobs/{one}/retry", headers=headers).status_code == 202
    assert post(client, csrf, f"/admin/jobs/{two}/retry").status_code == 302
    assert [jobs.get(huey.storage, i)["status"] for i in (one, two)] == ["queued"] * 2
    written = [r.getMessage() for r in caplog.records if r.name == "qrq.queue.audit"]
    assert written == [f'audit row not written: job.retry by {actor} on 1 job(s) '
                       f'["{job_id}"] {{}}' for actor, job_id in (("ops", one),
                                                                  ("root", two))]


def test_retention_deletes_audit_rows_as_old_as_the_oldest_kept_jobs(settings):
    now = time.time()
    kept_days = max(settings.retain_finished_days, settings.retain_failed_days)
    for age_days in (kept_days + 1, kept_days - 1, 0):
        audit.record(huey.storage, "root", "jobs.purge", count=int(age_days),
                     now=now - age_days * DAY)
    report = apply_retention(huey.storage, settings, now)
    assert report["audit"] == 1
    rows, _ = audit.entries(huey.storage)
    assert [r["job_count"] for r in rows] == [0, int(kept_days - 1)]


def test_dashboard_log_ins_and_log_outs_are_recorded_with_the_address(app, make_user):
    _, headers = make_user("root", admin=True)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.9"
    form = {"name": "root", "token": token_of(headers),
            "csrf_token": csrf_of(client.get("/admin/login").text)}
    assert client.post("/admin/login", data={**form, "token": "qrq_wrong"}).status_code == 403
    assert client.post("/admin/login", data=form).status_code == 302
    csrf = csrf_of(client.get("/admin/").text)
    assert post(client, csrf, "/admin/logout").status_code == 302
    rows, _ = audit.entries(huey.storage)
    assert [(r["actor"], r["action"], r["detail"]) for r in rows] == [
        ("root", "session.logout", {"address": "192.0.2.9"}),
        ("root", "session.login", {"address": "192.0.2.9"}),
        # The failed attempt, by no one known yet (at most the throttle's 10 per address
        # and 5 minutes: a throttled one is refused before it is read).
        ("-", "session.login_failed", {"address": "192.0.2.9", "name": "root"})]

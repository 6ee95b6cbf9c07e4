"""Run a periodic task now (issue 16, "Act in bulk"): from the admin API, the dashboard's
schedule page and ``qrq schedule run``, as a normal recorded job a real consumer runs."""

import json
import re

from qrq.cli import main
from qrq.queue import huey, jobs
from tests.conftest import wait_until
from tests.test_api import assert_error


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client, headers):
    """Log in to the dashboard with the admin's token (tests/test_admin.py imports
    task modules of its own, so it is not imported here)."""
    data = {"name": "root", "token": headers["Authorization"].split(" ", 1)[1],
            "csrf_token": csrf_of(client.get("/admin/login").text)}
    assert client.post("/admin/login", data=data).status_code == 302


def test_the_api_queues_a_run_a_real_consumer_performs(client, make_user, consumer):
    _, admin = make_user("root", admin=True)
    answer = client.post("/api/admin/schedule/retention.purge/run", headers=admin)
    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert body["name"] == "retention.purge" and body["status"] == "queued"
    assert answer.headers["Location"] == body["status_url"]
    job = jobs.get(huey.storage, body["job_id"])
    assert (job["type"], job["name"], job["owner_id"]) == ("maintenance", "retention.purge",
                                                           None)
    assert json.loads(job["params"]) == {"requested_by": "root"}
    consumer()  # its scheduler is off (-n): the run is the queued job, not a due minute
    done = wait_until(lambda: jobs.get(huey.storage, body["job_id"])["status"]
                      in jobs.ENDED and jobs.get(huey.storage, body["job_id"]), timeout=60)
    assert done["status"] == "finished", done["error"]


def test_unknown_and_unrecordable_names_are_clear_errors(client, make_user, alice):
    _, admin = make_user("root", admin=True)
    assert_error(client.post("/api/admin/schedule/no.such/run", headers=admin), 404, "name")
    assert_error(client.post("/api/admin/schedule/alerts.check/run", headers=admin), 422,
                 "name")
    assert_error(client.post("/api/admin/schedule/retention.purge/run", headers=alice[1]),
                 403)
    assert huey.storage.queue_size() == 0


def test_the_schedule_page_runs_a_task_now_with_its_csrf_token(client, make_user):
    _, admin = make_user("root", admin=True)
    log_in(client, admin)
    page = client.get("/admin/schedule").text
    assert 'action="/admin/schedule/backup.scheduled/run"' in page
    assert 'action="/admin/schedule/alerts.check/run"' not in page  # keeps no job record
    assert client.post("/admin/schedule/backup.scheduled/run").status_code == 403
    assert huey.storage.queue_size() == 0
    answer = client.post("/admin/schedule/backup.scheduled/run",
                         data={"csrf_token": csrf_of(page)})
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/schedule"
    queued = huey.storage.sql("select id, name from job", results=True)[0]
    assert queued[1] == "backup.scheduled"
    assert f"queued now as job {queued[0][:8]}" in client.get("/admin/schedule").text


def test_qrq_schedule_run(runner):
    result = runner.invoke(main, ["schedule", "run", "analytics.warm_up"])
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[-1]
    job = jobs.get(huey.storage, job_id)
    assert (job["name"], job["status"], job["owner_id"]) == ("analytics.warm_up", "queued",
                                                             None)
    unknown = runner.invoke(main, ["schedule", "run", "no.such"])
    assert unknown.exit_code == 2 and "retention.purge" in unknown.output
    # Only what can run as a job is listed; the minute's alert check keeps no record.
    usage = "".join(runner.invoke(main, ["schedule", "run", "--help"]).output.split())
    assert "retention.purge" in usage and "backup.scheduled" in usage
    assert "alerts.check" not in usage and "alerts.check" not in unknown.output
    refused = runner.invoke(main, ["schedule", "run", "alerts.check"])
    assert refused.exit_code == 1 and refused.output == (
        "Error: alerts.check keeps no job record (it runs every minute by itself); it "
        "cannot be run as a job (name)\n")


def test_the_backups_page_backs_up_now_and_comes_back(client, make_user, settings):
    _, admin = make_user("root", admin=True)
    log_in(client, admin)
    page = client.get("/admin/backups").text
    assert 'id="backup-now"' in page and 'name="next" value="/admin/backups"' in page
    answer = client.post("/admin/schedule/backup.scheduled/run",
                         data={"csrf_token": csrf_of(page), "next": "/admin/backups"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/backups"
    job_id, params = huey.storage.sql("select id, params from job", results=True)[0]
    assert json.loads(params) == {"requested_by": "root"}  # a backup now, not a due one
    assert f"queued now as job {job_id[:8]}" in client.get("/admin/backups").text
    # Elsewhere is not a place to go back to.
    away = client.post("/admin/schedule/retention.purge/run",
                       data={"csrf_token": csrf_of(page), "next": "https://evil.example/"})
    assert away.headers["Location"] == "/admin/"

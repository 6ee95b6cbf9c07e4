"""Pausing a job type: the dequeue skips it, running jobs finish, queued ones wait and
run once resumed; the admin API, the dashboard (CSRF, confirmation with the count), the
CLI, the queue status and the alerts all know. Through real storage and a real app;
the cross-process case (a real consumer) is in tests/test_dashboard_browser.py."""

import dataclasses
import datetime
import json
import re
import time

import pytest

from qrq import alerts
from qrq.cli import main
from qrq.errors import ValidationError
from qrq.queue import huey, job_task, jobs, pauses, submit
from tests.test_api import assert_error


@job_task("pdf", name="test.pause_pdf")
def a_pdf(task=None):
    return {"ok": True}


@job_task("batch", name="test.pause_batch")
def a_batch(task=None):
    return {"ok": True}


def with_settings(settings, **changes):
    """Settings with *changes*, applied to the Huey instance the code reads."""
    changed = dataclasses.replace(settings, **changes)
    huey.settings = changed
    return changed


def register_consumer():
    huey.create_consumer(workers=1, worker_type="thread")._register()


def status_of(job_id):
    return jobs.get(huey.storage, job_id)["status"]


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def admin(client, make_user):
    """A client logged in to the dashboard as an admin, its CSRF token, API headers."""
    _, headers = make_user("root", admin=True)
    token = headers["Authorization"].split(" ", 1)[1]
    page = client.get("/admin/login")
    client.post("/admin/login", data={"name": "root", "token": token,
                                      "csrf_token": csrf_of(page.text)})
    return client, csrf_of(client.get("/admin/").text), headers


def test_a_paused_type_stays_queued_and_runs_once_resumed(settings):
    held = submit(a_pdf, owner_id=None)
    other = submit(a_batch, owner_id=None)
    assert pauses.pause(huey.storage, "pdf", "root") == {
        "type": "pdf", "paused": True, "changed": True, "queued": 1}
    task = huey.dequeue()
    assert task.id == other  # the batch job, queued after the pdf job, runs
    huey.execute(task)
    assert huey.dequeue() is None  # nothing else may start
    assert status_of(held) == "queued"
    assert huey.storage.backlog() == 1  # still in the queue, untouched
    assert pauses.resume(huey.storage, "pdf")["changed"] is True
    task = huey.dequeue()
    assert task.id == held
    huey.execute(task)
    assert status_of(held) == "finished"


def test_a_running_job_finishes_when_its_type_is_paused(settings):
    running = submit(a_pdf, owner_id=None)
    task = huey.dequeue()
    assert status_of(running) == "running"
    pauses.pause(huey.storage, "pdf")
    huey.execute(task)
    assert status_of(running) == "finished"


def test_a_delayed_job_of_a_paused_type_waits_when_due(settings):
    delayed = submit(a_pdf, owner_id=None, delay=1)
    pauses.pause(huey.storage, "pdf")
    due = datetime.datetime.fromtimestamp(time.time() + 5, datetime.UTC).replace(tzinfo=None)
    huey.storage.read_schedule(due)  # now due: moved to the queue
    assert huey.storage.backlog() == 1
    assert huey.dequeue() is None and status_of(delayed) == "queued"


def test_pause_and_resume_say_what_changed(settings):
    for _ in range(2):
        submit(a_pdf, owner_id=None)
    first = pauses.pause(huey.storage, "pdf", "root", now=100.0)
    again = pauses.pause(huey.storage, "pdf", "other", now=200.0)
    assert (first["changed"], again["changed"]) == (True, False)
    assert pauses.describe(first) == ("pdf paused: 2 queued jobs wait until it is resumed; "
                                      "running jobs finish.")
    assert pauses.paused(huey.storage) == [
        {"type": "pdf", "paused_at": 100.0, "paused_by": "root", "queued": 2}]
    assert "resumed: 2 queued jobs may start now" in pauses.describe(
        pauses.resume(huey.storage, "pdf"))
    assert not pauses.resume(huey.storage, "pdf")["changed"]
    assert pauses.paused(huey.storage) == []
    with pytest.raises(ValidationError):
        pauses.pause(huey.storage, "nope")


def test_a_paused_backlog_is_no_stuck_queue_alert_but_a_paused_notice(settings):
    settings = with_settings(settings, alert_backlog=1, alert_queue_age=60,
                             alert_heartbeat_age=3600)
    register_consumer()
    for _ in range(3):
        submit(a_pdf, owner_id=None)
    later = time.time() + 120
    assert {a["kind"] for a in alerts.evaluate(huey.storage, settings, later)} == {
        "backlog", "queue_age"}
    pauses.pause(huey.storage, "pdf", "root")
    found = alerts.evaluate(huey.storage, settings, later)
    assert [a["kind"] for a in found] == ["paused"]
    assert found[0]["message"] == "paused: pdf (3 queued); 3 jobs wait until resumed"
    # Another type's backlog still fires.
    for _ in range(2):
        submit(a_batch, owner_id=None)
    assert {a["kind"] for a in alerts.evaluate(huey.storage, settings, later)} == {
        "backlog", "queue_age", "paused"}
    # The notice is recorded but never mailed.
    firing = alerts.record(huey.storage, found)
    sent = []
    assert not alerts.mail_due(huey.storage, firing, 60)
    assert alerts.mail_alerts(huey.storage, settings, firing, ["ops@example.com"],
                              lambda *message: sent.append(message)) == []
    assert sent == []


def test_the_admin_api_pauses_and_resumes(client, make_user, settings):
    _, admin = make_user("root", admin=True)
    _, user = make_user("bob")
    submit(a_pdf, owner_id=None)
    response = client.post("/api/admin/types/pdf/pause", headers=admin)
    assert response.status_code == 200
    assert response.get_json() == {
        "type": "pdf", "paused": True, "changed": True, "queued": 1,
        "message": "pdf paused: 1 queued job waits until it is resumed; running jobs finish."}
    status = client.get("/api/admin/queue-status", headers=admin).get_json()
    assert status["types"]["pdf"]["paused"] is True
    assert status["types"]["batch"]["paused"] is False
    assert [(p["type"], p["paused_by"], p["queued"]) for p in status["paused"]] == [
        ("pdf", "root", 1)]
    assert "paused" in [a["kind"] for a in status["alerts"]]
    metrics = client.get("/metrics", headers=admin).text
    assert 'qrq_job_type_paused{type="pdf"} 1.0' in metrics
    assert 'qrq_job_type_paused{type="batch"} 0.0' in metrics
    assert 'qrq_alert_firing{kind="paused"} 1.0' in metrics
    assert_error(client.post("/api/admin/types/pdf/resume", headers=user), 403)
    assert_error(client.post("/api/admin/types/pdf/resume"), 401)
    assert_error(client.post("/api/admin/types/nope/pause", headers=admin), 422, "type")
    assert client.post("/api/admin/types/pdf/resume", headers=admin).get_json()["paused"] \
        is False
    assert client.get("/api/admin/queue-status", headers=admin).get_json()["paused"] == []
    # Webhook deliveries are jobs too: a receiver that is down can wait for them.
    assert client.post("/api/admin/types/webhook/pause", headers=admin).get_json()[
        "paused"] is True
    assert "webhook" in client.get("/api/admin/queue-status", headers=admin).get_json()[
        "types"]


def test_the_dashboard_pauses_with_csrf_and_shows_paused_types_everywhere(admin, settings):
    client, csrf, _ = admin
    for _ in range(3):
        submit(a_pdf, owner_id=None)
    overview = client.get("/admin/").text
    assert ('data-confirm="Pause pdf? Consumers will start no new pdf job: 3 queued jobs '
            'will wait until it is resumed; running jobs finish."') in overview
    assert client.post("/admin/types/pdf/pause").status_code == 403  # no CSRF token
    assert pauses.paused(huey.storage) == []
    response = client.post("/admin/types/pdf/pause", data={"csrf_token": csrf})
    assert response.status_code == 302 and response.location.endswith("/admin/#pauses")
    page = client.get("/admin/").text
    assert "pdf paused: 3 queued jobs wait until it is resumed" in page  # the flash
    assert 'data-confirm="Resume pdf? 3 queued jobs may start at once."' in page
    for path in ("/admin/", "/admin/jobs", "/admin/consumers", "/admin/failed"):
        html = client.get(path).text
        assert re.search(r'class="paused-type" data-type="pdf">.*pdf</a> \(3 queued\)', html), \
            path
    assert pauses.paused(huey.storage)[0]["paused_by"] == "root"
    assert client.post("/admin/types/nope/pause", data={"csrf_token": csrf}).status_code \
        == 422
    client.post("/admin/types/pdf/resume", data={"csrf_token": csrf})
    assert pauses.paused(huey.storage) == []
    assert 'class="paused-type"' not in client.get("/admin/jobs").text


def test_the_cli_pauses_resumes_lists_and_reports(runner, settings, caplog):
    register_consumer()
    submit(a_pdf, owner_id=None)
    result = runner.invoke(main, ["jobs", "pause", "pdf"])
    assert result.exit_code == 0, result.output
    assert "pdf paused: 1 queued job waits" in result.output
    listed = json.loads(runner.invoke(main, ["jobs", "paused", "--json"]).output)
    assert [(p["type"], p["queued"]) for p in listed["paused"]] == [("pdf", 1)]
    assert listed["paused"][0]["paused_by"].startswith("cli")
    status = runner.invoke(main, ["status"]).output
    # Its log line (stderr) says notice too, as the output does: it is not an alert.
    logged = [r.getMessage() for r in caplog.records if r.name == "qrq.alerts"]
    assert logged == ["notice: paused: pdf (1 queued); 1 job waits until resumed"], logged
    assert "pdf (paused)" in status and "paused pdf: since" in status
    assert "notice: paused: pdf (1 queued)" in status
    assert json.loads(runner.invoke(main, ["status", "--json"]).output)["types"]["pdf"][
        "paused"] is True
    # A paused type alone is a notice: said, but no failing exit for cron.
    checked = runner.invoke(main, ["alerts", "--no-mail"])
    assert checked.exit_code == 0
    assert checked.output.strip() == "notice: paused: pdf (1 queued); 1 job waits until resumed"
    assert runner.invoke(main, ["jobs", "pause", "nope"]).exit_code == 2
    result = runner.invoke(main, ["jobs", "resume", "pdf"])
    assert result.exit_code == 0 and "pdf resumed: 1 queued job may start now." in \
        result.output
    assert runner.invoke(main, ["jobs", "paused"]).output.strip() == "no job type is paused"

"""What the role and audit tests share: a failing job type, running jobs here, and
logging a test client in to the dashboard.

A plain module (not a test module), so its task registers once however many test
modules import it."""

import re

from qrq.errors import ValidationError
from qrq.queue import huey, job_task, jobs

ZERO_ID = "00000000-0000-0000-0000-000000000000"


@job_task("mail", name="test.dashboard_bad")
def bad(message, task=None):
    raise ValidationError(message)


def run_next():
    task = huey.dequeue()
    assert task is not None, "nothing queued"
    huey.execute(task)
    return task.id


def run_until_ended(job_id):
    """Run queued jobs here until *job_id* has ended (a batch's mail job may go first)."""
    while jobs.get(huey.storage, job_id)["status"] not in jobs.ENDED:
        run_next()


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def token_of(headers):
    return headers["Authorization"].split(" ", 1)[1]


def logged_in(app, name, headers):
    """A new client logged in to the dashboard as *name*, and its CSRF token. The log-in's
    audit row is removed, so that a test sees the rows of its own actions only."""
    client = app.test_client()
    page = client.get("/admin/login")
    response = client.post("/admin/login", data={
        "name": name, "token": token_of(headers), "csrf_token": csrf_of(page.text)})
    assert response.status_code == 302, response.text
    huey.storage.sql("delete from audit where action = 'session.login'", commit=True)
    return client, csrf_of(client.get("/admin/").text)


def post(client, csrf, url, **data):
    return client.post(url, data={"csrf_token": csrf, **data})

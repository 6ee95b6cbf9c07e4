"""Waiting without polling, through a real waitress server and a real consumer:
``GET /api/jobs/<id>?wait=`` and the ``/events`` stream (issue 17)."""

import dataclasses
import json
import logging
import threading
import time
import urllib.request

from qrq.queue import huey, jobs, submit
from qrq.web import create_app
from tests.live import live  # noqa: F401 (fixture)
from tests.slow_tasks import steps

SLOW = {"QRQ_TASK_MODULES": "tests.slow_tasks"}


def get(url, headers, timeout=90):
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def test_a_long_poll_answers_within_a_second_of_completion(live, templates, alice,  # noqa: F811
                                                            consumer):
    user, headers = alice
    job_id = submit(steps, 4, 0.3, owner_id=user.id)
    consumer(extra_env=SLOW)
    status = "queued"
    while status not in jobs.ENDED:  # each answer is a status change or the deadline
        _, answer_headers, body = get(f"{live}/api/jobs/{job_id}?wait=30", headers)
        answered = time.time()
        view = json.loads(body)
        assert view["status"] != status or view["status"] in jobs.ENDED
        status = view["status"]
        if status not in jobs.ENDED:
            assert int(answer_headers["Retry-After"]) >= 1
    assert status == "finished"
    finished_at = jobs.get(huey.storage, job_id)["finished_at"]
    assert answered - finished_at < 1.0
    assert "Retry-After" not in answer_headers


def test_a_long_poll_answers_at_its_deadline_with_the_current_status(live, templates,  # noqa: F811
                                                                      alice):
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)  # no consumer: it stays queued
    started = time.monotonic()
    status, answer_headers, body = get(f"{live}/api/jobs/{job_id}?wait=1", headers)
    assert time.monotonic() - started >= 1.0
    assert status == 200 and json.loads(body)["status"] == "queued"
    assert answer_headers["Retry-After"] == "2"


def test_wait_is_bounded_and_checked(client, templates, alice):
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    for bad in ("61", "-1", "x"):
        answer = client.get(f"/api/jobs/{job_id}?wait={bad}", headers=headers)
        assert answer.status_code == 422
        assert answer.get_json()["error"]["field"] == "wait"


def read_events(url, headers):
    """The events of one SSE stream, to its end: [(id, event, data)]."""
    events, current = [], {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=90) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if not line:
                if "event" in current:
                    events.append((current.get("id"), current["event"],
                                   json.loads(current["data"])))
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    return events


def test_the_event_stream_follows_progress_and_ends_with_the_final_state(
        live, templates, alice, consumer):  # noqa: F811
    user, headers = alice
    job_id = submit(steps, 4, 0.3, owner_id=user.id)
    consumer(extra_env=SLOW)
    events = read_events(f"{live}/api/jobs/{job_id}/events", headers)
    assert [name for _, name, _ in events][-1] == "end"
    assert events[-1][2]["status"] == "finished" and events[-1][2]["job_id"] == job_id
    states = [data for _, name, data in events if name == "state"]
    assert "queued" in {s["status"] for s in states} or "running" in {
        s["status"] for s in states}
    assert any(s["stage"].startswith("step") for s in states), events  # progress got here
    # Resuming after the end was seen: 204, so EventSource stops reconnecting.
    status, answered, _ = get(f"{live}/api/jobs/{job_id}/events",
                              {**headers, "Last-Event-ID": events[-1][0]})
    assert status == 204 and "Content-Type" not in answered


def test_a_resumed_stream_does_not_repeat_the_state_the_client_has(live, templates,  # noqa: F811
                                                                    alice, settings):
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    first = "queued.0.0"
    task = huey.dequeue()  # a real run through the storage, in a thread of this test
    runner = threading.Thread(target=lambda: (time.sleep(0.5), huey.execute(task)))
    runner.start()
    events = read_events(f"{live}/api/jobs/{job_id}/events",
                         {**headers, "Last-Event-ID": "running.0.1"})
    runner.join()
    assert events[0][0] != "running.0.1" and events[-1][1] == "end"
    assert first not in [ident for ident, _, _ in events]


def test_waiters_over_the_cap_are_answered_at_once(settings, templates, alice):
    app = create_app({"SETTINGS": dataclasses.replace(settings, max_waiters=0),
                      "TESTING": True})
    user, headers = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    answer = app.test_client().get(f"/api/jobs/{job_id}?wait=60", headers=headers)
    assert answer.status_code == 200 and answer.headers["Retry-After"] == "2"


def test_the_job_watcher_logs_an_unexpected_failure_with_its_traceback_once(settings,
                                                                            alice, caplog):
    """A read that fails for another reason than an outage (a bug, here a table gone)
    keeps its traceback, but is not logged at every poll either."""
    from qrq.web.api import watcher

    def watcher_lines():
        return [r for r in caplog.records if r.getMessage().startswith("job watcher")]

    user, _ = alice
    job_id = submit(steps, 1, 0, owner_id=user.id)
    watcher.wait_change(job_id, None, 30)  # woken by a read that works
    caplog.set_level(logging.INFO, logger="qrq.web")
    caplog.clear()
    huey.storage.sql("alter table job rename to job_gone", commit=True)
    try:
        watcher.wait_change(job_id, None, 2)  # its deadline: every read failed till then
        [failed] = watcher_lines()
        assert failed.levelname == "ERROR" and failed.exc_info is not None
    finally:
        huey.storage.sql("alter table job_gone rename to job", commit=True)
    watcher.wait_change(job_id, None, 30)
    lines = watcher_lines()
    assert len(lines) == 2 and "reads job states again" in lines[1].getMessage()

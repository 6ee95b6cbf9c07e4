"""What a new job must pass, under concurrency: the per-user active-job quota and
the ``Idempotency-Key`` of POST /api/generate-qr-pdf and /api/batch/generate-qrs.

The concurrent tests run a real threaded HTTP server on one SQLite file."""

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from werkzeug.serving import make_server

from qrq.errors import TooManyJobs
from qrq.queue import Admission, huey, submit
from qrq.queue.admission import expire_keys
from qrq.queue.retention import apply_retention
from tests.test_api import assert_error

PDF = "/api/generate-qr-pdf"
BATCH = "/api/batch/generate-qrs"


def job_ids(owner_id=None):
    sql, params = "select id from job", ()
    if owner_id is not None:
        sql, params = sql + " where owner_id = ?", (owner_id,)
    return [job_id for job_id, in huey.storage.sql(sql, params, results=True)]


@pytest.fixture
def serve(settings):
    """Run an app on a real threaded HTTP server; return its base URL."""
    servers = []

    def start(app):
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def post_together(url: str, bodies: list[dict], headers: list[dict]) -> list[tuple[int, dict]]:
    """POST each body from its own thread, all released at once."""
    barrier = threading.Barrier(len(bodies))
    answers = [None] * len(bodies)

    def post(i):
        request = urllib.request.Request(url, data=json.dumps(bodies[i]).encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  **headers[i]})
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answers[i] = (response.status, json.load(response))
        except urllib.error.HTTPError as error:
            answers[i] = (error.code, json.load(error))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return answers


# -- the quota -------------------------------------------------------------------------

def test_the_quota_holds_under_concurrent_posts(settings, templates, alice, serve):
    from qrq.web import create_app

    limited = dataclasses.replace(settings, max_active_jobs=3)
    base = serve(create_app({"SETTINGS": limited}))
    answers = post_together(base + PDF, [{"template_id": 1}] * 16, [alice[1]] * 16)
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] * 3 + [429] * 13
    assert all(body["error"]["code"] == "too_many_jobs" for status, body in answers
               if status == 429)
    assert len(job_ids(alice[0].id)) == 3


def test_the_quota_is_checked_in_the_enqueue_transaction(settings, templates):
    """Many threads submitting at once through the storage: never more than the cap."""
    barrier = threading.Barrier(12)
    outcomes = []

    def one():
        barrier.wait()
        try:
            submit("pdf.generate", 1, {}, owner_id=5, admission=Admission(max_active=4))
            outcomes.append("queued")
        except TooManyJobs:
            outcomes.append("refused")

    threads = [threading.Thread(target=one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["queued"] * 4 + ["refused"] * 8
    assert len(job_ids(5)) == 4
    # Other owners, and submits without a quota, are not held back.
    submit("pdf.generate", 1, {}, owner_id=6, admission=Admission(max_active=4))
    submit("pdf.generate", 1, {}, owner_id=5)
    assert len(job_ids(5)) == 5


# -- Idempotency-Key -------------------------------------------------------------------

def test_a_repeated_key_returns_the_first_job(client, templates, alice):
    headers = {**alice[1], "Idempotency-Key": "order-17"}
    body = {"template_id": 2, "options": {"copies": 4}}
    first = client.post(PDF, json=body, headers=headers)
    again = client.post(PDF, json={"options": {"copies": 4}, "template_id": 2},
                        headers=headers)
    assert first.status_code == again.status_code == 202
    assert set(again.get_json()) == set(first.get_json())
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert job_ids() == [first.get_json()["job_id"]]
    # Without a key every POST is a new job.
    other = client.post(PDF, json=body, headers=alice[1]).get_json()["job_id"]
    assert other != first.get_json()["job_id"] and len(job_ids()) == 2


def test_keys_are_per_user(client, templates, alice, make_user):
    _, bob = make_user("bob")
    body = {"template_id": 1}
    mine = client.post(PDF, json=body, headers={**alice[1], "Idempotency-Key": "k1"})
    theirs = client.post(PDF, json=body, headers={**bob, "Idempotency-Key": "k1"})
    assert mine.status_code == theirs.status_code == 202
    assert mine.get_json()["job_id"] != theirs.get_json()["job_id"]
    assert "Idempotent-Replayed" not in theirs.headers


def test_a_repeated_key_with_another_body_is_422(client, templates, alice):
    headers = {**alice[1], "Idempotency-Key": "order-18"}
    first = client.post(PDF, json={"template_id": 1}, headers=headers).get_json()
    error = assert_error(client.post(PDF, json={"template_id": 2}, headers=headers), 422,
                         field="Idempotency-Key")
    assert first["job_id"] in error["message"]
    assert len(job_ids()) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9"])
def test_a_malformed_key_is_422(client, templates, alice, key):
    headers = {**alice[1], "Idempotency-Key": key.encode("utf-8").decode("latin-1")}
    assert_error(client.post(PDF, json={"template_id": 1}, headers=headers), 422,
                 field="Idempotency-Key")
    assert job_ids() == []


def test_a_replay_is_answered_even_at_the_quota(settings, templates, alice):
    """A client retrying after a timeout gets its job, not a 429 for it."""
    from qrq.web import create_app

    client = create_app({"SETTINGS": dataclasses.replace(settings, max_active_jobs=1),
                         "TESTING": True}).test_client()
    headers = {**alice[1], "Idempotency-Key": "retry-me"}
    first = client.post(PDF, json={"template_id": 1}, headers=headers)
    again = client.post(PDF, json={"template_id": 1}, headers=headers)
    assert again.status_code == 202
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert_error(client.post(PDF, json={"template_id": 1}, headers=alice[1]), 429)


def test_concurrent_retries_with_one_key_create_one_job(settings, templates, alice, serve):
    from qrq.web import create_app

    base = serve(create_app({"SETTINGS": settings}))
    headers = {**alice[1], "Idempotency-Key": "burst"}
    answers = post_together(base + PDF, [{"template_id": 1}] * 10, [headers] * 10)
    assert {status for status, _ in answers} == {202}
    assert len({body["job_id"] for _, body in answers}) == 1
    assert len(job_ids()) == 1


def test_a_batch_with_a_repeated_key_is_queued_once(client, templates, alice):
    headers = {**alice[1], "Idempotency-Key": "batch-1"}
    body = {"items": [{"template_id": 1, "data": f"https://example.com/{i}"}
                      for i in range(3)]}
    first = client.post(BATCH, json=body, headers=headers)
    again = client.post(BATCH, json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert job_ids() == [first.get_json()["batch_job_id"]]
    assert huey.storage.sql("select count(*) from batch", results=True)[0][0] == 1
    assert_error(client.post(BATCH, json={"items": body["items"][:1]}, headers=headers), 422,
                 field="Idempotency-Key")


def test_concurrent_batches_with_one_key_leave_one_batch(settings, templates, alice, serve):
    from qrq.web import create_app

    base = serve(create_app({"SETTINGS": settings}))
    headers = {**alice[1], "Idempotency-Key": "batch-burst"}
    body = {"template_ids": [1, 2]}
    answers = post_together(base + BATCH, [body] * 6, [headers] * 6)
    assert {status for status, _ in answers} == {202}
    assert len({answer["batch_job_id"] for _, answer in answers}) == 1
    assert len(job_ids()) == 1
    assert huey.storage.sql("select count(*) from batch", results=True)[0][0] == 1


def test_a_key_is_kept_24_hours(client, settings, templates, alice):
    headers = {**alice[1], "Idempotency-Key": "daily"}
    first = client.post(PDF, json={"template_id": 1}, headers=headers).get_json()["job_id"]
    # 23 hours on, retention keeps the key and a repeat is still the first job.
    assert apply_retention(huey.storage, settings, time.time() + 23 * 3600)[
        "idempotency_keys"] == 0
    assert client.post(PDF, json={"template_id": 1}, headers=headers).get_json()[
        "job_id"] == first
    # A day later the key is dropped, even from a job record that is kept longer...
    assert expire_keys(huey.storage, time.time() + 25 * 3600) == 1
    assert huey.storage.sql("select idempotency_key from job where id = ?", (first,),
                            results=True)[0][0] is None
    # ...and the key makes a new job.
    second = client.post(PDF, json={"template_id": 2}, headers=headers).get_json()["job_id"]
    assert second != first


def test_a_stale_key_is_not_replayed_before_retention_runs(client, templates, alice):
    headers = {**alice[1], "Idempotency-Key": "old"}
    first = client.post(PDF, json={"template_id": 1}, headers=headers).get_json()["job_id"]
    huey.storage.sql("update job set created_at = created_at - 86401 where id = ?", (first,),
                     commit=True)
    second = client.post(PDF, json={"template_id": 1}, headers=headers).get_json()["job_id"]
    assert second != first
    assert huey.storage.sql("select id from job where idempotency_key = 'old'",
                            results=True) == [(second,)]

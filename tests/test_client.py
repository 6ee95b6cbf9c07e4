"""``qrq.client`` against a real waitress server and a real consumer, end to end."""

import dataclasses

import pytest

from qrq.client import (
    Client,
    JobNotFinished,
    NotFound,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from qrq.queue import submit
from qrq.web import create_app
from tests.live import live, serving  # noqa: F401 (fixture)
from tests.slow_tasks import steps


def token_of(headers):
    return headers["Authorization"].split(" ", 1)[1]


def test_the_client_drives_a_real_server_end_to_end(live, templates, alice, consumer,  # noqa: F811
                                                    tmp_path):
    api = Client(live, token_of(alice[1]))
    job = api.submit_pdf(1, {"copies": 2})
    # Nothing runs yet: typed errors, a wait that gives up, a 409 download.
    with pytest.raises(JobNotFinished) as refused:
        api.download(job["job_id"])
    assert refused.value.status == 409 and refused.value.job_status == "queued"
    with pytest.raises(WaitTimeout) as late:
        api.wait(job["job_id"], timeout=1)
    assert late.value.job["status"] == "queued"
    batch = api.submit_batch([{"template_id": 1, "data": f"item {n}"} for n in range(5)])
    consumer()
    done = api.wait(job["job_id"], timeout=120)
    assert done["status"] == "finished"
    path = api.download(job["job_id"], tmp_path / "cards.pdf")
    assert path.read_bytes().startswith(b"%PDF")
    assert api.wait(batch["batch_job_id"], timeout=120)["status"] == "finished"
    items = list(api.iter_items(batch["batch_job_id"], limit=2))  # three pages
    assert [i["idx"] for i in items] == list(range(5))
    assert {i["status"] for i in items} == {"ok"}
    assert api.download(batch["batch_job_id"], kind="zip").startswith(b"PK")
    assert {j["job_id"] for j in api.iter_jobs(limit=1)} >= {job["job_id"],
                                                             batch["batch_job_id"]}


def test_the_client_maps_the_error_shape_to_typed_errors(live, templates, alice):  # noqa: F811
    api = Client(live, token_of(alice[1]))
    with pytest.raises(NotFound) as missing:
        api.job("00000000-0000-0000-0000-000000000000")
    assert missing.value.code == "not_found" and missing.value.status == 404
    with pytest.raises(ValidationError) as bad:
        api.submit_pdf(99999)
    assert bad.value.field == "template_id"
    with pytest.raises(Unauthorized):
        Client(live, "qrq_wrong").job("00000000-0000-0000-0000-000000000000")


def test_wait_does_not_busy_poll_a_server_that_holds_no_waiters(settings, templates, alice):
    """QRQ_MAX_WAITERS=0: every ?wait= is answered at once; the client waits Retry-After."""
    app = create_app({"SETTINGS": dataclasses.replace(settings, max_waiters=0)})
    asked = []
    app.before_request(lambda: asked.append(1) and None)
    with serving(app, threads=2) as base:
        api = Client(base, token_of(alice[1]))
        job_id = submit(steps, 1, 0, owner_id=alice[0].id)  # stays queued: no consumer
        with pytest.raises(WaitTimeout):
            api.wait(job_id, timeout=3)
    assert len(asked) <= 6  # about one request per Retry-After (2 s), not hundreds

"""Every door to the artifacts (API downloads, the dashboard, purges, retention), run on
each artifact store: the data directory, and a bucket on a real S3 API server whose
presigned URLs are fetched with urllib."""

import dataclasses
import io
import re
import time
import urllib.request
import zipfile

import pytest

from qrq.artifacts import identity, open_store
from qrq.errors import StoreUnavailable
from qrq.queue import dead_letters, huey, jobs
from qrq.queue.retention import apply_retention
from qrq.web import create_app
from tests.live import serving
from tests.s3 import (  # noqa: F401 (fixtures)
    S3Server,
    aws_env,
    s3_bucket,
    s3_server,
    store_settings,
    use_s3,
)
from tests.test_api import assert_error

PDF = "/api/generate-qr-pdf"


def csrf_of(html):
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client, name, token):
    """The dashboard's log-in (tests/test_admin.py registers tasks: not imported)."""
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"name": name, "token": token,
                                             "csrf_token": csrf_of(page.text)})


@pytest.fixture
def store_client(store_settings):
    return create_app({"SETTINGS": store_settings, "TESTING": True}).test_client()


def run_all():
    while (task := huey.dequeue()) is not None:
        huey.execute(task)


def finished_pdf(client, headers):
    job_id = client.post(PDF, json={"template_id": 1, "options": {"copies": 3}},
                         headers=headers).get_json()["job_id"]
    run_all()
    job = client.get(f"/api/job-status/{job_id}", headers=headers).get_json()
    assert job["status"] == "finished", job
    return job_id, job["result"]["download_url"]


def fetch(client, url, headers):
    """``(status, body, headers)`` of a download, following a presigned redirect with a
    plain HTTP client (no credentials), as a browser or curl -L would."""
    with client.get(url, headers=headers) as response:
        if response.status_code != 302:
            return response.status_code, response.data, response.headers
        location = response.headers["Location"]
        assert location.startswith("http://127.0.0.1:") and "Signature" in location
        assert response.headers["Cache-Control"] == "no-store"
    with urllib.request.urlopen(location) as followed:
        return followed.status, followed.read(), followed.headers


def test_a_pdf_downloads_the_stored_bytes_from_either_store(store_client, store_settings,
                                                            templates, alice, make_user):
    job_id, url = finished_pdf(store_client, alice[1])
    store = open_store(store_settings)
    file, info = store.open(f"{job_id}.pdf")
    with file:
        stored = file.read()
    assert stored.startswith(b"%PDF") and info.size == len(stored)
    status, body, headers = fetch(store_client, url, alice[1])
    assert status == 200 and body == stored
    assert headers["Content-Type"] == "application/pdf"
    assert f"qrq-{job_id}.pdf" in headers["Content-Disposition"]
    if store.presigns:  # nothing of the job's output stays on the web or worker host
        assert list(store_settings.artifacts_dir.iterdir()) == []
    # No token, or another user's: the same answers whatever the store.
    assert_error(store_client.get(url, headers={"Authorization": "Bearer qrq_nope"}), 401)
    assert_error(store_client.get(url, headers=make_user("bob")[1]), 404)


def test_streaming_from_s3_keeps_ranges_and_etags(settings, monkeypatch, s3_server, s3_bucket,
                                                  templates, alice):
    streaming = use_s3(settings, monkeypatch, s3_server, s3_bucket, s3_download="stream")
    client = create_app({"SETTINGS": streaming, "TESTING": True}).test_client()
    job_id, url = finished_pdf(client, alice[1])
    stored = s3_server.client().get_object(Bucket=s3_bucket,
                                           Key=f"artifacts/{job_id}.pdf")["Body"].read()
    with client.get(url, headers=alice[1]) as response:
        assert response.status_code == 200 and response.data == stored
        assert response.content_length == len(stored)
        etag = response.headers["ETag"]
    with client.get(url, headers={**alice[1], "Range": "bytes=0-3"}) as response:
        assert response.status_code == 206 and response.data == b"%PDF"
    with client.get(url, headers={**alice[1], "Range": "bytes=-5"}) as response:
        assert response.status_code == 206 and response.data == stored[-5:]
    with client.get(url, headers={**alice[1], "If-None-Match": etag}) as response:
        assert response.status_code == 304


@pytest.mark.parametrize("mode", ["redirect", "stream"])
def test_s3_downloads_through_the_shipped_server_over_http(settings, monkeypatch, s3_server,
                                                           s3_bucket, templates, alice, mode):
    s3 = use_s3(settings, monkeypatch, s3_server, s3_bucket, s3_download=mode)
    app = create_app({"SETTINGS": s3, "TESTING": True})
    job_id, url = finished_pdf(app.test_client(), alice[1])
    stored = s3_server.client().get_object(Bucket=s3_bucket,
                                           Key=f"artifacts/{job_id}.pdf")["Body"].read()
    with serving(app) as base:  # urllib follows the redirect, as curl -L would
        with urllib.request.urlopen(urllib.request.Request(base + url,
                                                           headers=alice[1])) as response:
            assert response.read() == stored
            assert response.url.startswith(s3_server.endpoint if mode == "redirect" else base)
        ranged = urllib.request.Request(base + url, headers={**alice[1], "Range": "bytes=4-9"})
        with urllib.request.urlopen(ranged) as response:
            assert response.status == 206 and response.read() == stored[4:10]


def test_batch_outputs_download_from_either_store(store_client, store_settings, templates,
                                                  alice):
    batch_id = store_client.post("/api/batch/generate-qrs", json={"template_ids": [1, 2]},
                                 headers=alice[1]).get_json()["batch_job_id"]
    run_all()
    status, pdf, _ = fetch(store_client, f"/api/batch/{batch_id}/download/pdf", alice[1])
    assert status == 200 and pdf.startswith(b"%PDF")
    status, data, headers = fetch(store_client, f"/api/batch/{batch_id}/download/zip", alice[1])
    assert status == 200 and headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        manifest = archive.read("manifest.csv").decode()
    assert len(names) == 3 and names[-1] == "manifest.csv"
    assert manifest.startswith("idx,source_idx,template_id,status,file,data,error")
    assert manifest.count("\n") == 3
    store = open_store(store_settings)
    assert sorted(f.name for f in store.list(batch_id)) == [f"{batch_id}.pdf",
                                                              f"{batch_id}.zip"]


def test_a_removed_or_changed_file_is_a_404_from_either_store(store_client, store_settings,
                                                              templates, alice, caplog):
    store = open_store(store_settings)
    job_id, url = finished_pdf(store_client, alice[1])
    with store.write(f"{job_id}.pdf") as tmp:  # swapped after the job: another size
        tmp.write_bytes(b"%PDF not what the job wrote")
    error = assert_error(store_client.get(url, headers=alice[1]), 404)
    assert error["message"] == f"the output of job {job_id} is no longer stored"
    store.delete([f"{job_id}.pdf"])
    assert_error(store_client.get(url, headers=alice[1]), 404)
    # The operator learns where this host looked: a worker writing to another store
    # looks the same to the client.
    looked = [r.getMessage() for r in caplog.records if "not in the artifact store" in
              r.getMessage()]
    assert len(looked) == 1 and store.location in looked[0], looked


def test_purges_and_retention_delete_the_files_from_either_store(store_client, store_settings,
                                                                 templates, alice, make_user):
    store = open_store(store_settings)
    old, _ = finished_pdf(store_client, alice[1])
    kept, _ = finished_pdf(store_client, alice[1])
    discarded, _ = finished_pdf(store_client, alice[1])
    assert dead_letters.discard_jobs(huey.storage, store, [discarded])["done"] == [discarded]
    assert store.stat(f"{discarded}.pdf") is None
    _, admin = make_user("root", admin=True)
    # Left by a job purged long ago (no record): removed once a day old.
    orphan = "0badc0de-0000-4000-8000-000000000000.pdf"
    with store.write(orphan) as tmp:
        tmp.write_bytes(b"%PDF-")
    huey.storage.sql("update job set finished_at = ? where id = ?", (time.time() - 3600, old),
                     commit=True)
    response = store_client.post("/api/admin/jobs/purge", json={"older_than": "30m"},
                                 headers=admin)
    assert response.status_code == 200 and response.get_json() == {"purged": 1}
    assert store.stat(f"{old}.pdf") is None and store.stat(f"{kept}.pdf") is not None
    report = apply_retention(huey.storage, store_settings, time.time() + 8 * 86400)
    assert report["finished"] == 1 and report["orphan_artifacts"] == 1
    assert [f.name for f in store.list() if f.name != identity.MARKER] == []
    assert jobs.get(huey.storage, kept) is None


def test_the_dashboard_lists_and_serves_a_jobs_files_from_either_store(
        store_client, store_settings, templates, alice, make_user):
    job_id, _ = finished_pdf(store_client, alice[1])
    _, admin = make_user("root", admin=True)
    assert log_in(store_client, "root", admin["Authorization"][7:]).status_code == 302
    html = store_client.get(f"/admin/jobs/{job_id}").text
    link = re.search(rf'href="(/admin/jobs/{job_id}/files/{job_id}\.pdf)"', html).group(1)
    status, body, headers = fetch(store_client, link, {})
    assert status == 200 and body.startswith(b"%PDF")
    assert headers["Content-Disposition"].startswith("attachment")
    response = store_client.post("/admin/failed/purge", data={
        "csrf_token": csrf_of(store_client.get("/admin/").text), "older_than": "0s",
        "status": "finished"})
    assert response.status_code == 302
    assert open_store(store_settings).stat(f"{job_id}.pdf") is None


# -- a missing or unreachable store: 503 in the one error shape -------------------------

def test_a_missing_directory_store_is_a_503_and_loses_nothing(settings, templates, alice,
                                                              make_user, tmp_path):
    shared = tmp_path / "nfs"
    shared.mkdir()
    mounted = dataclasses.replace(settings, artifact_store=str(shared))
    huey.init(mounted)
    client = create_app({"SETTINGS": mounted, "TESTING": True}).test_client()
    job_id, url = finished_pdf(client, alice[1])
    (shared / f"{job_id}.pdf").unlink()
    (shared / identity.MARKER).unlink(missing_ok=True)  # PostgreSQL's (hosts share it)
    shared.rmdir()  # the mount went away
    check_unavailable(client, url, make_user, job_id, open_store(mounted))


def test_a_stopped_s3_server_is_a_503_and_loses_nothing(settings, monkeypatch, aws_env,
                                                        templates, alice, make_user, tmp_path):
    server = S3Server(tmp_path / "moto.log").start()
    try:
        s3 = use_s3(settings, monkeypatch, server, server.make_bucket())
        client = create_app({"SETTINGS": s3, "TESTING": True}).test_client()
        job_id, url = finished_pdf(client, alice[1])
    finally:
        server.stop()
    check_unavailable(client, url, make_user, job_id, open_store(s3))


def check_unavailable(client, url, make_user, job_id, store):
    assert_error(client.get(url, headers=make_user("bob")[1]), 404)  # not his: as before
    _, admin = make_user("root", admin=True)
    response = client.get(url, headers=admin)
    error = assert_error(response, 503)  # never a redirect to a store that is not there
    assert error["code"] == "store_unavailable" and "Location" not in response.headers
    assert error["message"] == "The artifact store cannot be reached; try again later."
    huey.storage.sql("update job set finished_at = 0", commit=True)
    response = client.post("/api/admin/jobs/purge", json={"older_than": "1s"}, headers=admin)
    assert assert_error(response, 503)["code"] == "store_unavailable"
    assert response.headers["Retry-After"]
    with pytest.raises(StoreUnavailable):
        dead_letters.discard_jobs(huey.storage, store, [job_id])
    assert jobs.get(huey.storage, job_id) is not None  # kept for the next try

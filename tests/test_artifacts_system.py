"""The S3 artifact store across processes: a real ``huey_consumer`` subprocess uploads to
moto's standalone S3 server, the API redirects to a presigned URL that urllib fetches,
retention deletes the object, and a stopped server fails jobs with the reason."""

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from qrq.queue import huey
from qrq.queue.retention import apply_retention
from qrq.web import create_app
from tests.conftest import ROOT, wait_until
from tests.s3 import S3Server, aws_env, s3_bucket, s3_server, use_s3  # noqa: F401 (fixtures)
from tests.test_api import assert_error

pytestmark = pytest.mark.slow

PDF = "/api/generate-qr-pdf"


def wait_ended(client, headers, job_id, timeout=90):
    def ended():
        job = client.get(f"/api/job-status/{job_id}", headers=headers).get_json()
        return job if job["status"] in ("finished", "failed") else None
    return wait_until(ended, timeout=timeout, message=f"job {job_id} to end")


def test_a_consumer_stores_the_pdf_in_s3_and_the_api_redirects_to_it(
        settings, monkeypatch, s3_server, s3_bucket, templates, alice, consumer):
    s3 = use_s3(settings, monkeypatch, s3_server, s3_bucket)
    client = create_app({"SETTINGS": s3, "TESTING": True}).test_client()
    worker = consumer(workers=1)  # inherits QRQ_ARTIFACT_STORE and the AWS_* credentials
    job_id = client.post(PDF, json={"template_id": 2, "options": {"copies": 8}},
                         headers=alice[1]).get_json()["job_id"]
    job = wait_ended(client, alice[1], job_id)
    assert job["status"] == "finished", (job, worker.output())
    key = f"artifacts/{job_id}.pdf"
    stored = s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert stored.startswith(b"%PDF") and len(stored) == job["result"]["bytes"]
    assert not any(s3.artifacts_dir.iterdir())  # the staging file is gone

    response = client.get(job["result"]["download_url"], headers=alice[1])
    assert response.status_code == 302
    with urllib.request.urlopen(response.headers["Location"]) as download:
        assert download.read() == stored
        assert download.headers["Content-Type"] == "application/pdf"

    later = time.time() + 8 * 86400
    assert apply_retention(huey.storage, s3, later)["finished"] == 1
    left = s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    # Only the store's marker (PostgreSQL: which store the hosts share) stays.
    assert [o["Key"] for o in left] in ([], ["artifacts/qrq-store-id"])


def test_a_stopped_store_fails_the_job_with_the_reason_and_stops_a_starting_consumer(
        settings, monkeypatch, aws_env, templates, alice, consumer, tmp_path):
    server = S3Server(tmp_path / "moto.log").start()
    bucket = server.make_bucket()
    s3 = use_s3(settings, monkeypatch, server, bucket)
    monkeypatch.setenv("QRQ_PDF_RETRIES", "0")
    client = create_app({"SETTINGS": s3, "TESTING": True}).test_client()
    worker = consumer(workers=1)
    job_id = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    assert wait_ended(client, alice[1], job_id)["status"] == "finished", worker.output()
    server.stop()

    failing = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    job = wait_ended(client, alice[1], failing)
    assert job["status"] == "failed", job
    assert job["error"].startswith(f"the artifact store s3://{bucket}/artifacts could not "
                                   f"store {failing}.pdf: "), job["error"]
    assert not job.get("result")
    assert not any(s3.artifacts_dir.iterdir())  # its staging file went with it
    error = assert_error(client.get(f"/api/jobs/{job_id}/download", headers=alice[1]), 503)
    assert error["code"] == "store_unavailable"

    # A consumer starting while the store is out of reach says so in one line and exits.
    worker.stop()
    started = subprocess.run([str(Path(sys.executable).parent / "huey_consumer"),
                              "huey_app.huey", "-w", "1"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, env=worker.env)
    assert started.returncode == 1, started
    lines = started.stderr.strip().splitlines()
    assert lines[-1].startswith(f"Error: the artifact store s3://{bucket}/artifacts could "
                                "not be reached: "), started.stderr

"""Failed jobs stay listed until purged, and can be re-run: CLI, admin API, retention."""

import time

import pytest
from huey.serializer import SignedSerializer

from qrq.artifacts import identity, open_store
from qrq.cli import main
from qrq.queue import dead_letters, huey, jobs, submit
from qrq.queue.retention import apply_retention, parse_age, purge_jobs
from tasks.mail import send_mail_task
from tests.test_api import assert_error

PDF = "/api/generate-qr-pdf"


def failed_pdf_job(client, headers, template_id=3):
    """A PDF job that fails for good: its template vanishes before it runs."""
    from qrq.appdb.db import app_db
    from qrq.appdb.models import Template

    job_id = client.post(PDF, json={"template_id": template_id}, headers=headers
                         ).get_json()["job_id"]
    with app_db.connection_context():
        row = Template.get_by_id(template_id)
        data = row.__data__.copy()
        row.delete_instance()
    huey.execute(huey.dequeue())
    assert jobs.get(huey.storage, job_id)["status"] == "failed"
    return job_id, data


def restore_template(data):
    from qrq.appdb.db import app_db
    from qrq.appdb.models import Template

    with app_db.connection_context():
        Template.insert(data).execute()


def test_admin_api_retries_a_failed_job_under_the_same_id(client, templates, alice, make_user):
    _, admin = make_user("root", admin=True)
    job_id, data = failed_pdf_job(client, alice[1])
    assert_error(client.post(f"/api/admin/jobs/{job_id}/retry"), 401)
    assert_error(client.post(f"/api/admin/jobs/{job_id}/retry", headers=alice[1]), 403)
    restore_template(data)
    response = client.post(f"/api/admin/jobs/{job_id}/retry", headers=admin)
    assert response.status_code == 202
    assert jobs.get(huey.storage, job_id)["status"] == "queued"
    assert_error(client.post(f"/api/admin/jobs/{job_id}/retry", headers=admin), 409)
    huey.execute(huey.dequeue())
    record = jobs.get(huey.storage, job_id)
    assert (record["status"], record["attempts"], record["error"]) == ("finished", 2, None)
    assert_error(client.post("/api/admin/jobs/00000000-0000-4000-8000-000000000000/retry",
                             headers=admin), 404)


def test_cli_retry_all_failed_and_purge(client, runner, templates, alice):
    first, data = failed_pdf_job(client, alice[1])
    restore_template(data)
    second, data = failed_pdf_job(client, alice[1])
    restore_template(data)
    result = runner.invoke(main, ["jobs", "retry", "--all-failed"])
    assert result.exit_code == 0 and "2 job(s) queued again" in result.output
    huey.execute(huey.dequeue())
    huey.execute(huey.dequeue())
    assert {jobs.get(huey.storage, i)["status"] for i in (first, second)} == {"finished"}
    assert runner.invoke(main, ["jobs", "retry", first]).exit_code == 1  # finished: 409
    assert runner.invoke(main, ["jobs", "retry"]).exit_code == 2
    # Nothing is old enough yet; with a zero age everything ended goes, files too.
    assert "purged 0" in runner.invoke(main, ["jobs", "purge", "--older-than", "1d"]).output
    assert "purged 2" in runner.invoke(main, ["jobs", "purge", "--older-than", "0s"]).output
    assert jobs.get(huey.storage, first) is None
    assert [p.name for p in huey.settings.artifacts_dir.iterdir()] in (
        [], [identity.MARKER])  # PostgreSQL: which store the hosts share
    bad = runner.invoke(main, ["jobs", "purge", "--older-than", "soon"])
    assert bad.exit_code == 2


def test_admin_purge_validates_its_input(client, alice, make_user):
    _, admin = make_user("root", admin=True)
    assert_error(client.post("/api/admin/jobs/purge", json={"older_than": "x"},
                             headers=admin), 422, "older_than")
    assert_error(client.post("/api/admin/jobs/purge", json={"status": "running"},
                             headers=admin), 422, "status")
    assert_error(client.post("/api/admin/jobs/purge", json={"older_than": "\u0663d"},
                             headers=admin), 422, "older_than")  # an Arabic-Indic 3
    assert_error(client.post("/api/admin/jobs/purge", json={"bogus": 1}, headers=admin),
                 422, "bogus")
    assert_error(client.post("/api/admin/jobs/retry-failed", json={"bogus": 1},
                             headers=admin), 422, "bogus")
    for wrong in ("bogus", "\u0000", 5):  # as pause and resume answer it
        assert_error(client.post("/api/admin/jobs/retry-failed", json={"type": wrong},
                                 headers=admin), 422, "type")
    response = client.post("/api/admin/jobs/purge", json={"older_than": "30d"},
                           headers=admin)
    assert response.status_code == 200 and response.get_json() == {"purged": 0}


@pytest.mark.parametrize("text, seconds", [("30d", 30 * 86400), ("12h", 43200),
                                           ("90m", 5400), ("1w", 604800), ("0s", 0)])
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


def test_retention_keeps_recent_and_running_jobs(client, templates, alice, settings):
    done = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    huey.execute(huey.dequeue())
    waiting = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    huey.storage.put_data(f"r:{done}", b"stale")  # a stale revoke key (from an older qrq)
    now = time.time()
    assert apply_retention(huey.storage, settings, now)["finished"] == 0
    # Eight days later the finished job and its PDF are gone; the queued one stays.
    later = now + 8 * 86400
    report = apply_retention(huey.storage, settings, later)
    assert report["finished"] == 1
    assert jobs.get(huey.storage, done) is None
    assert jobs.get(huey.storage, waiting)["status"] == "queued"
    assert not any(settings.artifacts_dir.glob(f"{done}*"))
    assert huey.storage.sql("select count(*) from kv where key like 'r:%'",
                            results=True)[0][0] == 0
    assert purge_jobs(huey.storage, open_store(settings), 0, ("finished",), later) == 0


def test_purge_stale_skips_a_file_that_vanishes_and_keeps_live_artifacts(
        client, templates, alice, settings):
    done = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    huey.execute(huey.dequeue())
    artifacts = settings.artifacts_dir
    orphan = artifacts / "0badc0de-0000-4000-8000-000000000000.pdf"
    orphan.write_bytes(b"%PDF-")
    # A dangling link stands for a render's temp file renamed away mid-scan.
    (artifacts / "0badc0de-0000-4000-8000-000000000001.pdf.tmp").symlink_to(
        artifacts / "gone")
    later = time.time() + 2 * 86400
    from qrq.queue.retention import purge_stale

    report = purge_stale(huey.storage, open_store(settings), later)
    assert report["orphan_artifacts"] == 1
    assert not orphan.exists()
    assert any(artifacts.glob(f"{done}*"))  # its job still exists: kept


# -- bulk retry: one implementation, a report per job -----------------------------------

def forge_payload(job_id):
    """Re-sign a job's stored payload with another secret, as after a secret rotation."""
    payload = huey.storage.sql("select payload from job where id = ?", (job_id,),
                               results=True)[0][0]
    other = SignedSerializer(secret="another-secret-of-thirty-two-bytes!", salt="qrq")
    huey.storage.sql("update job set payload = ? where id = ?",
                     (other.serialize(huey.serializer.deserialize(payload)), job_id),
                     commit=True)


def two_failed_one_forged(client, alice):
    good, data = failed_pdf_job(client, alice[1])
    restore_template(data)
    forged, data = failed_pdf_job(client, alice[1])
    restore_template(data)
    forge_payload(forged)
    return good, forged


def test_admin_api_retry_failed_reports_a_job_it_cannot_retry(client, templates, alice,
                                                              make_user):
    _, admin = make_user("root", admin=True)
    good, forged = two_failed_one_forged(client, alice)
    assert_error(client.post(f"/api/admin/jobs/{forged}/retry", headers=admin), 409)
    response = client.post("/api/admin/jobs/retry-failed", json={}, headers=admin)
    assert response.status_code == 202
    body = response.get_json()
    assert body["retried"] == [good]
    assert [s["job_id"] for s in body["skipped"]] == [forged]
    assert body["skipped"][0]["reason"]
    assert jobs.get(huey.storage, good)["status"] == "queued"
    assert jobs.get(huey.storage, forged)["status"] == "failed"
    assert_error(client.post("/api/admin/jobs/retry-failed", json={"type": 5},
                             headers=admin), 422, "type")


def test_cli_retry_all_failed_lists_what_it_could_not_retry(client, runner, templates,
                                                            alice):
    good, forged = two_failed_one_forged(client, alice)
    result = runner.invoke(main, ["jobs", "retry", "--all-failed"])
    assert result.exit_code == 1
    assert f"queued {good}" in result.output and "1 job(s) queued again" in result.output
    assert f"skipped {forged}: " in result.output
    assert jobs.get(huey.storage, good)["status"] == "queued"


def failed_mail_jobs(count: int) -> list[str]:
    """*count* mail jobs that failed for good (made so in the queue, not by running them)."""
    ids = [submit(send_mail_task, ["ops@example.com"], "s", f"m{i}", owner_id=None)
           for i in range(count)]
    huey.storage.sql("delete from task", commit=True)
    huey.storage.sql("update job set status = 'failed', error = 'smtp', finished_at = 1",
                     commit=True)
    return ids


def test_a_bulk_retry_queues_each_job_once_and_says_why_it_skipped_others(settings,
                                                                          monkeypatch):
    monkeypatch.setattr(dead_letters, "RETRY_CHUNK", 3)  # several transactions
    a, b, c, d = failed_mail_jobs(4)
    waiting = submit(send_mail_task, ["ops@example.com"], "s", "queued", owner_id=None)
    missing = "00000000-0000-4000-8000-000000000000"
    report = dead_letters.retry_jobs(huey, [a, missing, a, b, waiting, c, d, b])
    assert report["done"] == [a, b, c, d]
    reasons = {(s["job_id"], s["reason"]) for s in report["skipped"]}
    assert reasons == {(missing, f"job {missing} not found"),
                       (a, "listed more than once; it runs once"),  # twice in one chunk
                       (waiting, f"job {waiting} is queued; only failed, canceled or "
                                 "expired jobs can be retried"),
                       (b, f"job {b} is queued; only failed, canceled or expired jobs "
                           "can be retried")}  # (its second listing: in the next chunk)
    rows = huey.storage.sql("select job_id from task order by job_id", results=True)
    assert sorted(job_id for job_id, in rows) == sorted([a, b, c, d, waiting])
    assert {jobs.get(huey.storage, i)["status"] for i in (a, b, c, d)} == {"queued"}


@pytest.mark.sqlite_only("counts the transactions on the test's own SQLite connection")
def test_a_bulk_retry_writes_a_chunk_of_jobs_per_transaction(settings, monkeypatch):
    monkeypatch.setattr(dead_letters, "RETRY_CHUNK", 4)
    ids = failed_mail_jobs(9)
    begun = []
    huey.storage.conn.set_trace_callback(
        lambda sql: begun.append(sql) if sql.lower().startswith("begin") else None)
    try:
        report = dead_letters.retry_failed(huey)
    finally:
        huey.storage.conn.set_trace_callback(None)
    assert sorted(report["retried"]) == sorted(ids) and report["skipped"] == []
    assert len(begun) == 3  # 4 + 4 + 1 jobs; one transaction each was 9

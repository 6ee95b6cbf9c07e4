"""GET /metrics (Prometheus), GET /healthz, GET /api/admin/queue-status and ``qrq health``."""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qrq.appdb.db import app_db
from qrq.appdb.models import User
from qrq.errors import ValidationError
from qrq.queue import huey, job_task, submit
from tests.conftest import ROOT, wait_until
from tests.test_api import assert_error


@job_task("batch", name="test.metrics_ok")
def ok(task=None):
    return None


@job_task("pdf", name="test.metrics_bad")
def bad(task=None):
    raise ValidationError("nope")


def run_next():
    task = huey.dequeue()
    huey.execute(task)
    return task.id


def scrape(client, headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def admin(make_user):
    return make_user("root", admin=True)[1]


def test_metrics_need_a_token(client, alice, admin, settings, app):
    assert_error(client.get("/metrics"), 401)
    assert_error(client.get("/metrics", headers={"Authorization": "Bearer nope"}), 401)
    assert_error(client.get("/metrics", headers=alice[1]), 403)
    assert client.get("/metrics", headers=admin).status_code == 200
    # An operator reads it like the rest of the dashboard; no one may POST to it.
    with app_db.connection_context():
        _, token = User.create_with_token("watcher", operator=True)
    assert client.get("/metrics", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 200
    assert_error(client.post("/metrics", headers=admin), 405)
    app.config["QRQ"] = dataclasses.replace(settings, metrics_token="s3cret-scrape")
    scraper = {"Authorization": "Bearer s3cret-scrape"}
    assert client.get("/metrics", headers=scraper).status_code == 200
    assert_error(client.get("/metrics", headers={"Authorization": "Bearer s3cret"}), 401)


def test_metrics_count_jobs_per_type_and_state(client, admin):
    finished = submit(ok, owner_id=None)
    assert run_next() == finished
    failed = submit(bad, owner_id=None)
    assert run_next() == failed
    submit(ok, owner_id=None)
    submit(ok, owner_id=None, delay=3600)
    samples = scrape(client, admin)
    assert value(samples, "qrq_jobs", type="batch", state="queued") == 1
    assert value(samples, "qrq_jobs", type="batch", state="scheduled") == 1
    assert value(samples, "qrq_jobs", type="batch", state="finished") == 1
    assert value(samples, "qrq_jobs", type="pdf", state="failed") == 1
    assert value(samples, "qrq_jobs", type="mail", state="queued") == 0
    assert value(samples, "qrq_jobs_ended_last_hour", type="pdf", status="failed") == 1
    assert value(samples, "qrq_jobs_ended_last_hour", type="batch", status="finished") == 1
    assert 0 <= value(samples, "qrq_queue_oldest_job_age_seconds", type="batch") < 60
    assert value(samples, "qrq_queue_oldest_job_age_seconds", type="pdf") == 0
    assert value(samples, "qrq_schedule_entries") == 1
    # The run-time histogram of the last hour: cumulative buckets ending in +Inf.
    assert value(samples, "qrq_job_duration_seconds_bucket", type="batch", le="+Inf") == 1
    assert value(samples, "qrq_job_duration_seconds_bucket", type="batch", le="3600.0") == 1
    assert value(samples, "qrq_job_duration_seconds_gcount", type="batch") == 1
    assert ("qrq_job_duration_seconds_bucket", (("le", "+Inf"), ("type", "pdf"))) \
        not in samples  # failed jobs have no run time
    assert all(name.startswith("qrq_") for name, _ in samples)


def test_consumer_heartbeat_age_per_consumer(client, admin):
    samples = scrape(client, admin)
    assert value(samples, "qrq_consumer_last_heartbeat_age_seconds") == float("inf")
    assert value(samples, "qrq_alert_firing", kind="no_consumer") == 1
    consumer = huey.create_consumer(workers=2, worker_type="thread")
    consumer._register()
    huey.storage.sql("update consumer set heartbeat_at = ?", (time.time() - 42,), commit=True)
    samples = scrape(client, admin)
    labels = {"consumer": consumer.consumer_id, "host": consumer.consumer_id.split(":")[0],
              "pid": consumer.consumer_id.split(":")[1]}
    assert 42 <= value(samples, "qrq_consumer_heartbeat_age_seconds", **labels) < 100
    assert value(samples, "qrq_consumer_workers", **labels) == 2
    assert value(samples, "qrq_consumer_running_jobs", **labels) == 0
    assert 42 <= value(samples, "qrq_consumer_last_heartbeat_age_seconds") < 100
    assert value(samples, "qrq_alert_firing", kind="no_consumer") == 0


SCRAPE = """
import json, sys
from qrq.queue import job_task, submit
from qrq.web import create_app

@job_task("batch", name="test.metrics_ok")
def ok(task=None):
    return None

app = create_app({"TESTING": True})
if sys.argv[1] == "submit":
    for _ in range(3):
        submit(ok, owner_id=None)
response = app.test_client().get("/metrics", headers={"Authorization": "Bearer " + sys.argv[2]})
print(json.dumps([response.status_code, response.get_data(as_text=True)]))
"""


def test_every_process_reports_the_same_numbers(client, settings, make_user):
    """Several web processes (gunicorn workers) share nothing but the database."""
    user, _ = make_user("root", admin=True)
    from qrq.appdb.db import app_db

    with app_db.connection_context():
        token = user.reset_token()
    headers = {"Authorization": f"Bearer {token}"}
    submit(ok, owner_id=None)
    env = {"QRQ_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "QRQ_LEASE_SECONDS": str(settings.lease_seconds),
           "QRQ_DATABASE_URL": settings.database_url}

    def other_process(mode):
        out = subprocess.run([sys.executable, "-c", SCRAPE, mode, token], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
        status, text = json.loads(out.splitlines()[-1])
        assert status == 200, text
        return text

    def queued(text):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "qrq_jobs" and sample.labels == {"type": "batch",
                                                                    "state": "queued"}:
                    return sample.value

    assert queued(other_process("read")) == 1  # it sees what this process queued
    assert queued(other_process("submit")) == 4
    assert queued(client.get("/metrics", headers=headers).text) == 4  # and we see its jobs


def test_bad_tokens_are_throttled_per_address_in_the_error_shape(client, app, admin):
    from qrq.appdb.throttle import LIMIT

    bad_token = {"Authorization": "Bearer qrq_guess"}
    for url in ("/metrics", "/api/admin/queue-status") * (LIMIT // 2):
        assert_error(client.get(url, headers=bad_token), 401)
    for url in ("/metrics", "/api/admin/queue-status", "/api/jobs"):
        response = client.get(url, headers=admin)  # a good token too, for a while
        assert assert_error(response, 429)["code"] == "too_many_attempts"
        assert int(response.headers["Retry-After"]) >= 1
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert other.get("/metrics", headers=admin).status_code == 200
    # A missing or malformed header is not a guess: it never counts.
    for _ in range(LIMIT + 1):
        assert_error(other.get("/api/admin/queue-status"), 401)
    assert other.get("/api/admin/queue-status", headers=admin).status_code == 200


def test_healthz_is_open_and_says_which_database_fails(client, settings):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"web": "ok", "queue_db": "ok",
                                                              "app_db": "ok"}}
    assert client.head("/healthz").status_code == 200
    huey.storage.sql("alter table job rename to job_gone", commit=True)
    try:
        error = assert_error(client.get("/healthz"), 503)
        assert error["code"] == "unavailable" and "queue_db" in error["message"]
        assert "app_db" not in error["message"]
    finally:
        huey.storage.sql("alter table job_gone rename to job", commit=True)
    assert client.get("/healthz").status_code == 200


@pytest.mark.sqlite_only("a damaged app.db file")
def test_a_corrupt_app_db_gives_503_and_the_app_still_starts(settings, tmp_path):
    from qrq.web import create_app

    settings.app_db.write_bytes(b"not a database, " * 512)
    for _ in range(2):  # a restart too
        client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
        error = assert_error(client.get("/healthz"), 503)
        assert error["code"] == "unavailable" and "app_db" in error["message"]
        assert "queue_db" not in error["message"]
        assert_error(client.get("/api/jobs", headers={"Authorization": "Bearer x"}), 503)


@pytest.mark.sqlite_only("SQLite's page cap stands in for a full disk")
def test_healthz_reports_a_full_disk(client):
    """A full disk simulated at the SQLite layer (``max_page_count``: SQLITE_FULL, as
    ENOSPC gives); tests/test_reliability.py fills a real tmpfs."""
    from qrq.errors import StorageFull

    conn = huey.storage.conn
    conn.execute(f"pragma max_page_count = {conn.execute('pragma page_count').fetchone()[0]}")
    with pytest.raises(StorageFull):
        huey.storage.sql("insert into kv (queue, key, value) values ('q', 'k', "
                         "zeroblob(100000))", commit=True)
    error = assert_error(client.get("/healthz"), 503)
    assert error["code"] == "storage_full" and "queue_db" in error["message"]
    assert "app_db" not in error["message"]
    conn.execute("pragma max_page_count = 1000000")  # space is back
    huey.storage.sql("insert into kv (queue, key, value) values ('q', 'k', 'v')", commit=True)
    assert client.get("/healthz").status_code == 200


def test_queue_status_is_for_admins_only(client, alice, admin):
    assert_error(client.get("/api/admin/queue-status"), 401)
    assert_error(client.get("/api/admin/queue-status", headers=alice[1]), 403)
    assert client.get("/api/admin/queue-status", headers=admin).status_code == 200


def test_queue_status_reports_types_and_consumers(client, admin):
    consumer = huey.create_consumer(workers=2, worker_type="thread")
    consumer._register()
    running = submit(ok, owner_id=None)
    assert huey.dequeue().id == running
    submit(ok, owner_id=None)
    submit(bad, owner_id=None)  # a pdf job, left queued
    body = client.get("/api/admin/queue-status", headers=admin).get_json()
    assert set(body["types"]) >= {"pdf", "batch", "analytics", "maintenance", "mail"}
    batch = body["types"]["batch"]
    assert batch["queued"] == 1 and batch["running"] == 1
    assert body["types"]["pdf"]["queued"] == 1
    assert isinstance(batch["oldest_queued_age_seconds"], float)
    assert body["types"]["analytics"]["oldest_queued_age_seconds"] is None
    (me,) = body["consumers"]
    assert me["id"] == consumer.consumer_id and me["workers"] == 2 and me["alive"] is True
    assert me["last_heartbeat"].endswith("Z") and me["started_at"].endswith("Z")
    assert [j["job_id"] for j in me["current_jobs"]] == [running]
    assert body["alerts"] == []


def test_health_command_checks_databases_and_consumers(runner, settings):
    from qrq.cli import main

    result = runner.invoke(main, ["health"])
    assert result.exit_code == 0 and "ok" in result.output
    result = runner.invoke(main, ["health", "--consumer"])
    assert result.exit_code == 1 and "no consumer registered" in result.output
    consumer = huey.create_consumer(workers=1, worker_type="thread")
    consumer._register()
    result = runner.invoke(main, ["health", "--consumer"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(main, ["health", "--consumer", "--this-host"]).exit_code == 0
    huey.storage.sql("update consumer set host = 'elsewhere'", commit=True)
    result = runner.invoke(main, ["health", "--consumer", "--this-host"])
    assert result.exit_code == 1 and "no consumer registered on" in result.output
    huey.storage.sql("update consumer set heartbeat_at = ?", (time.time() - 300,),
                     commit=True)
    result = runner.invoke(main, ["health", "--consumer"])
    assert result.exit_code == 1 and "no consumer heartbeat in the last 90s" in result.output
    assert runner.invoke(main, ["health", "--consumer", "--max-age", "600"]).exit_code == 0


def test_health_command_names_a_broken_database_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "app.db").touch()  # a data directory, but no tables in its app database
    sqlite = {k: v for k, v in os.environ.items() if k != "QRQ_DATABASE_URL"}
    done = subprocess.run([str(Path(sys.executable).parent / "qrq"), "--data-dir", str(data),
                           "health"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env=sqlite)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    # The reason in the one line (not in a log line before it).
    assert done.stderr.startswith("Error: app database has no qrq tables (run qrq init") \
        and done.stderr.endswith("(OperationalError: no such table: user)\n"), done.stderr
    # As /healthz says it, and a missing PostgreSQL table the same: tests/test_postgres_errors.py
    # A file that is no database at all: one line too, from any command that reads it.
    for name, commands in (("app.db", ["health"]), ("queue.db", ["health", "status"])):
        (data / name).write_bytes(b"not a database" * 100)
        for command in commands:
            done = subprocess.run([str(Path(sys.executable).parent / "qrq"), "--data-dir",
                                   str(data), command], capture_output=True, text=True,
                                  timeout=120, cwd=ROOT, env=sqlite)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            assert done.stderr.strip() == (f"Error: a database in {data} cannot be read: "
                                           "file is not a database")


def test_status_and_alerts_commands(runner, settings):
    from qrq.cli import main

    submit(ok, owner_id=None)
    result = runner.invoke(main, ["status", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["types"]["batch"]["queued"] == 1
    result = runner.invoke(main, ["status"])
    assert result.exit_code == 0 and "batch" in result.output
    result = runner.invoke(main, ["alerts", "--no-mail"])
    assert result.exit_code == 1 and "no_consumer" in result.output
    huey.create_consumer(workers=1, worker_type="thread")._register()
    result = runner.invoke(main, ["alerts", "--no-mail"])
    assert result.exit_code == 0 and "no alert" in result.output


@pytest.mark.slow
def test_health_command_against_a_real_consumer(settings, consumer):
    env = {"QRQ_DATA_DIR": str(settings.data_dir), "PATH": "/usr/bin:/bin",
           "QRQ_DATABASE_URL": settings.database_url}
    qrq = [sys.executable, "-m", "qrq", "health", "--consumer", "--this-host"]

    def health():
        return subprocess.run(qrq, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)

    assert health().returncode == 1
    worker = consumer(workers=1)
    wait_until(lambda: health().returncode == 0, timeout=60, interval=0.2,
               message="qrq health to see the consumer")
    worker.stop()
    result = health()
    assert result.returncode == 1 and "no consumer registered" in result.stderr

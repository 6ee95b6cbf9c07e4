"""``qrq migrate-to-postgres``: an installation on SQLite files moves into an empty
PostgreSQL database and goes on there: queued jobs run, old records stay visible."""

import json
import secrets
import sqlite3
import time
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from qrq.appdb.db import app_db, init_db
from qrq.appdb.models import User
from qrq.cli import main
from qrq.config import load_settings
from qrq.queue import huey, migrations, submit
from tests import slow_tasks
from tests.browsing import server  # noqa: F401  (a fixture)
from tests.conftest import Consumer, wait_until

PDF = "/api/generate-qr-pdf"
BATCH = "/api/batch/generate-qrs"


def migrate(data_dir, url):
    return CliRunner().invoke(main, ["migrate-to-postgres"],
                              env={"QRQ_DATA_DIR": str(data_dir), "QRQ_DATABASE_URL": url})


@pytest.mark.sqlite_only("the installation being moved is on SQLite")
def test_jobs_batches_and_users_move_and_go_on_running_on_postgresql(
        settings, client, templates, alice, pg_url, monkeypatch):
    # On SQLite: a finished job, two queued ones, a queued batch.
    done = client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
    huey.execute(huey.dequeue())
    queued = [client.post(PDF, json={"template_id": 1}, headers=alice[1]).get_json()["job_id"]
              for _ in range(2)]
    batch = client.post(BATCH, json={"template_ids": [1], "options": {"copies": 3}},
                        headers=alice[1]).get_json()["batch_job_id"]
    huey.storage.sql("drop table queue_key", commit=True)  # a queue.db of the last release
    huey.storage.close()
    app_db.close_all()
    # A newcomer looks at the new database first, from another host with a key of its
    # own: `qrq status` evaluates the alerts there (rows in its alert table) and records
    # its key. Neither may make it "not empty", nor the move ask for `qrq key adopt`:
    # the copy replaces both.
    looked = CliRunner().invoke(main, ["status"], env={
        "QRQ_DATA_DIR": str(settings.data_dir.parent / "elsewhere"),
        "QRQ_DATABASE_URL": pg_url, "QRQ_SECRET_KEY": secrets.token_urlsafe(32)})
    assert looked.exit_code == 0, looked.output

    moved = migrate(settings.data_dir, pg_url)
    assert moved.exit_code == 0, moved.output
    assert "note:" not in moved.output  # the mover's key is the moved queue's
    # From now on the SQLite files are refused without QRQ_DATABASE_URL: their queued
    # jobs would run a second time.
    left_behind = CliRunner().invoke(main, ["jobs", "list"],
                                     env={"QRQ_DATA_DIR": str(settings.data_dir)})
    assert left_behind.exit_code == 1
    assert "was moved to PostgreSQL" in left_behind.output
    assert "set QRQ_DATABASE_URL" in left_behind.output
    assert "MOVED-TO-POSTGRESQL.txt" in left_behind.output
    assert "Traceback" not in left_behind.output
    assert "job: 4 rows" in moved.output and "user: 1 rows" in moved.output
    assert "counts checked" in moved.output
    # A second move finds the target full and copies nothing.
    again = migrate(settings.data_dir, pg_url)
    assert again.exit_code == 1 and "not empty" in again.output

    monkeypatch.setenv("QRQ_DATABASE_URL", pg_url)
    on_pg = load_settings(lease_seconds=3.0)
    huey.init(on_pg)
    from qrq.web import create_app

    client = create_app({"SETTINGS": on_pg, "TESTING": True}).test_client()
    old = client.get(f"/api/jobs/{done}", headers=alice[1]).get_json()
    assert old["status"] == "finished"
    consumer = Consumer(on_pg, extra_env={"QRQ_DATABASE_URL": pg_url}).start()
    try:
        for job_id in [*queued, batch]:
            wait_until(lambda job_id=job_id: client.get(
                f"/api/jobs/{job_id}", headers=alice[1]).get_json()["status"] == "finished",
                timeout=120, message=f"job {job_id} finished on PostgreSQL")
    finally:
        consumer.stop()
    # New rows get ids past the copied ones.
    with app_db.connection_context():
        user, _ = User.create_with_token("bob")
    assert user.id == alice[0].id + 1
    huey.storage.close()


def test_a_fresh_consumer_heartbeat_refuses_the_move(tmp_path, pg_url):
    data = tmp_path / "data"
    data.mkdir()
    init_db(data / "app.db")
    app_db.close_all()
    with sqlite3.connect(data / "queue.db") as conn:
        conn.execute("create table consumer (id text primary key, host text, pid integer, "
                     "started_at real, heartbeat_at real, workers integer)")
        conn.execute("insert into consumer values ('c', 'web1', 42, ?, ?, 2)",
                     (time.time(), time.time()))
    conn.close()
    refused = migrate(data, pg_url)
    assert refused.exit_code == 1
    assert "stop the consumers" in refused.output and "web1 pid 42" in refused.output


def test_the_app_database_alone_moves_with_its_types(tmp_path, pg_url):
    from qrq.move_to_postgres import move

    path = tmp_path / "app.db"
    init_db(path)
    with app_db.connection_context():
        admin, _ = User.create_with_token("root", admin=True)
        User.create_with_token("plain")
    app_db.close_all()
    init_db(pg_url)  # the schema, as the command makes it first
    app_db.close_all()
    assert move([path], pg_url) == {"adminsession": 0, "template": 0, "throttle": 0,
                                    "user": 2}
    with app_db.connection_context():
        assert [(u.name, u.is_admin) for u in User.select().order_by(User.id)] == [
            ("root", True), ("plain", False)]
        assert User.get_by_id(admin.id).created_at == admin.created_at
        assert User.create_with_token("third")[0].id == 3
    app_db.close_all()


@pytest.mark.sqlite_only("the installation being moved is on SQLite")
def test_a_web_app_left_running_through_the_move_refuses_every_change(
        settings, templates, alice, pg_url, server):
    # The README says to stop the web app first. One that was not would queue jobs in
    # the old files, where no consumer runs them, and cancel or pause there what runs
    # on PostgreSQL: it answers 503 instead, and so does its /healthz.
    def call(path, body=None, method="POST"):
        request = urllib.request.Request(
            server + path, data=None if body is None else json.dumps(body).encode(),
            method=method, headers={**alice[1], "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, first = call(PDF, {"template_id": 1})
    assert status == 202
    huey.storage.close()
    app_db.close_all()
    moved = migrate(settings.data_dir, pg_url)
    assert moved.exit_code == 0, moved.output
    for status, body in (call(PDF, {"template_id": 1}),
                         call(f"/api/jobs/{first['job_id']}", method="DELETE"),
                         call("/healthz", method="GET")):
        assert status == 503, body
        assert "moved to PostgreSQL" in body["error"]["message"]
        assert "QRQ_DATABASE_URL" in body["error"]["message"]
    with sqlite3.connect(settings.queue_db) as conn:
        assert conn.execute("select count(*) from job").fetchone()[0] == 1  # the first only
        assert conn.execute("select status from job").fetchone()[0] == "queued"
    conn.close()
    # Going back on purpose (the note deleted): the files take jobs again, also with a
    # qrq upgraded since the move (a schema step to apply, which the triggers refused).
    with sqlite3.connect(settings.queue_db) as conn:
        conn.execute("drop trigger qrq_moved_queue_schema_version_delete")
        conn.execute("delete from queue_schema_version where version = ?",
                     (migrations.LATEST,))
    conn.close()
    settings.moved_marker.unlink()
    huey.init(load_settings(lease_seconds=3.0))
    assert migrations.current_version(huey.storage) == migrations.LATEST
    assert not huey.storage.moved_away()
    assert submit(slow_tasks.noop, owner_id=None)
    assert huey.storage.sql("select count(*) from job", results=True)[0][0] == 2

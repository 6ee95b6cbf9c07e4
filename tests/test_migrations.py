"""Schema versions of the queue database (both backends), ``qrq migrate``, and what a
process says at start-up when the queue database cannot be used."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from qrq.appdb import migrations as app_migrations
from qrq.appdb.db import app_db
from qrq.cli import main
from qrq.queue import huey, migrations, signing
from qrq.queue.sqlite_storage import LeasedSqliteStorage

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def starting_processes():
    """The CLI, the consumer and the web app, each as it starts."""
    return ([str(BIN / "qrq"), "jobs", "list"],
            [str(BIN / "huey_consumer"), "huey_app.huey", "-w", "1"],
            [sys.executable, "-c", "import web"])


def refuse_with_one_line(env, expected):
    """Each starting process exits non-zero with one ``Error:`` line naming *expected*."""
    for args in starting_processes():
        done = subprocess.run(args, env={**os.environ, **env}, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, (args, done.stderr)
        assert len(lines) == 1 and "Traceback" not in done.stderr, (args, done.stderr)
        assert lines[0].startswith("Error: ") and expected in lines[0], (args, lines)


def test_a_new_database_is_at_the_latest_version(settings):
    assert migrations.current_version(huey.storage) == migrations.LATEST


@pytest.mark.postgres_only
def test_opening_the_queue_takes_no_lock_a_running_job_waits_on(settings):
    # Every process and qrq command opens the queue, which creates what the schema
    # lacks. On PostgreSQL `create index if not exists` locks its table even when the
    # index exists: a `qrq status` during a batch deadlocked with the batch's writes,
    # and failed it. With the schema complete, opening it runs no DDL at all.
    import threading

    with psycopg.connect(settings.database_url) as job_writes:
        job_writes.execute("lock table job, batch_item, job_attempt in row exclusive mode")
        opened = threading.Thread(target=migrations.migrate, args=(huey.storage,))
        opened.start()
        try:
            opened.join(timeout=60)
            assert not opened.is_alive(), "opening the queue waited on the job's locks"
        finally:
            job_writes.rollback()
            opened.join(timeout=60)


def test_qrq_migrate_applies_what_is_missing_and_says_so(settings, runner):
    huey.storage.sql(f"delete from {migrations.TABLE} where version = ?",
                     (migrations.LATEST,), commit=True)
    done = runner.invoke(main, ["migrate"])
    assert done.exit_code == 0, done.output
    assert done.output.strip().splitlines()[0] == (
        f"queue database: applied step {migrations.LATEST}; now at version {migrations.LATEST}")
    again = runner.invoke(main, ["migrate"])
    assert again.output.strip().splitlines() == [
        f"queue database: up to date (version {migrations.LATEST})",
        f"app database: up to date (version {app_migrations.LATEST})"]


def test_qrq_migrate_of_a_queue_from_before_the_key_record_checks_and_records_the_key(
        settings, runner):
    # A queue made by the previous release has no queue_key table: qrq migrate made it
    # stop at "no such table".
    huey.storage.sql("drop table queue_key", commit=True)
    done = runner.invoke(main, ["migrate"])
    assert done.exit_code == 0, done.output
    assert signing.recorded(huey.storage)["fingerprint"] == signing.fingerprint(
        settings.secret_key)
    other = CliRunner(env={"QRQ_DATA_DIR": str(settings.data_dir),
                           "QRQ_SECRET_KEY": secrets.token_urlsafe(32)})
    refused = other.invoke(main, ["migrate"])
    assert refused.exit_code == 1 and "is not this queue's" in refused.output


def test_qrq_migrate_also_brings_the_app_database_up(settings, runner):
    with app_db.connection_context():
        app_db.execute_sql(f"delete from {app_migrations.TABLE}")
    done = runner.invoke(main, ["migrate"])
    assert done.exit_code == 0, done.output
    line = done.output.strip().splitlines()[-1]
    steps = ", ".join(str(step) for step in range(1, app_migrations.LATEST + 1))
    assert line == (f"app database: applied step{'s' if app_migrations.LATEST > 1 else ''} "
                    f"{steps}; now at version {app_migrations.LATEST}")


def test_a_database_migrated_by_a_newer_qrq_is_refused(settings, runner):
    huey.storage.sql(f"insert into {migrations.TABLE} (version, applied_at) values (?, ?)",
                     (migrations.LATEST + 1, 0.0), commit=True)
    refuse_with_one_line({"QRQ_DATA_DIR": str(settings.data_dir)},
                         f"schema version {migrations.LATEST + 1}, this qrq knows up to "
                         f"{migrations.LATEST}")
    done = runner.invoke(main, ["migrate"])
    assert done.exit_code == 1 and "upgrade qrq" in done.output


def test_an_old_queue_file_is_brought_under_versions(tmp_path):
    """A queue.db from before versions (its job-deletion triggers, a task table
    without the lease columns) gets step 1's columns and loses the triggers."""
    import sqlite3

    from qrq.queue.schema import JOBS

    path = tmp_path / "queue.db"
    conn = sqlite3.connect(path)
    # The job table before its idempotency columns were added.
    old_job = JOBS[0].replace(", idempotency_key text, request_hash text)", ")")
    conn.executescript(
        "create table task (id integer not null primary key, queue text not null, "
        "data blob not null, priority real not null default 0.0);"
        f"{old_job};"
        "create table webhook_target (job_id text primary key, owner_id integer, "
        "url text not null, created_at real not null);"
        "create trigger webhook_job_deleted after delete on job begin "
        "delete from webhook_target where job_id = old.id; end;")
    conn.close()
    storage = LeasedSqliteStorage("q", filename=str(path))
    try:
        assert migrations.current_version(storage) == migrations.LATEST
        with storage.db() as curs:
            assert {"lease_until", "lease_owner", "job_type"} <= storage.table_columns(
                curs, "task")
            assert "idempotency_key" in storage.table_columns(curs, "job")
        assert storage.sql("select name from sqlite_master where type = 'trigger'",
                           results=True) == []
    finally:
        storage.dispose()


@pytest.fixture
def pg_bad_urls(pg_server):
    """URLs that cannot serve as qrq's database, each with the words its error gives."""
    parts = psycopg.conninfo.conninfo_to_dict(pg_server)
    host, port = parts["host"], parts["port"]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("drop role if exists qrq_reader")
        conn.execute("create role qrq_reader login")
        conn.execute("revoke create on schema public from public")
    yield {
        "unreachable": (f"postgresql://postgres@{host}:1/postgres", "127.0.0.1:1/postgres"),
        "missing database": (f"postgresql://postgres@{host}:{port}/no_such_db",
                             'database "no_such_db" does not exist'),
        "wrong url": (f"postgresql://postgres@{host}:{port}/postgres?sslmode=bogus",
                      "sslmode"),
        "no permission": (f"postgresql://qrq_reader@{host}:{port}/postgres",
                          "permission denied"),
    }
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute("drop role if exists qrq_reader")


def test_a_queue_database_that_cannot_be_used_is_one_line_at_start_up(tmp_path, pg_bad_urls):
    for url, expected in pg_bad_urls.values():
        refuse_with_one_line({"QRQ_DATA_DIR": str(tmp_path / "data"),
                              "QRQ_DATABASE_URL": url}, expected)

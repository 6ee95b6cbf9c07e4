"""Backups of qrq's PostgreSQL schema: pg_dump in the set, checked by a restore into a
scratch database, verified again and restored from the CLI's library calls."""

import pytest

from qrq.appdb.db import app_db, init_db
from qrq.appdb.models import User
from qrq.backup import list_sets, postgres, restore, run_backup, verify_set
from qrq.backup.sets import get_set
from qrq.config import load_settings
from tests.test_backup import make_db


@pytest.fixture
def pg_settings(tmp_path, pg_url):
    """Settings whose qrq tables are in a fresh PostgreSQL schema (the app tables here:
    the queue's are made by the queue storage), with one scan database beside."""
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path / "data"),
                              "QRQ_DATABASE_URL": pg_url})
    settings.ensure_dirs()
    init_db(pg_url)
    with app_db.connection_context():
        for name in ("alice", "bob"):
            User.create_with_token(name)
    make_db(settings.data_dir / "analytics" / "shop.db", 30)
    yield settings
    app_db.close_all()


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_run_dumps_the_schema_checks_the_dump_and_keeps_the_scan_databases(pg_settings):
    manifest = run_backup(pg_settings)
    assert manifest["status"] == "ok", manifest
    by_name = {e["name"]: e for e in manifest["databases"]}
    # No app.db or queue.db files: their tables are in the dump.
    assert set(by_name) == {"postgresql", "analytics/shop.db"}
    dump = by_name["postgresql"]
    assert dump["codec"] == "pg_dump" and dump["tables"]["user"] == 2
    assert "postgresql://" not in str(dump)  # no URL (or password) in the manifest
    set_dir = pg_settings.backups_dir / manifest["id"]
    assert (set_dir / "postgresql.dump").stat().st_mode & 0o077 == 0
    assert verify_set(pg_settings.backups_dir, manifest,
                      database_url=pg_settings.database_url) == {
        "analytics/shop.db": [], "postgresql": []}
    # No scratch database is left behind.
    with app_db.connection_context():
        left = app_db.execute_sql("select count(*) from pg_database "
                                  "where datname like 'qrq_verify_%%'").fetchone()[0]
    assert left == 0


def test_a_damaged_dump_fails_verification_and_restores_nothing(pg_settings, tmp_path):
    manifest = run_backup(pg_settings)
    flip_a_byte(pg_settings.backups_dir / manifest["id"] / "postgresql.dump")
    problems = verify_set(pg_settings.backups_dir, manifest,
                          database_url=pg_settings.database_url)["postgresql"]
    assert problems and "sha256" in problems[0]
    with pytest.raises(Exception, match="damaged"):
        restore(pg_settings.backups_dir, manifest, tmp_path / "out",
                database_url=pg_settings.database_url)
    with app_db.connection_context():
        assert User.select().count() == 2


def test_restore_puts_the_schema_back_as_it_was(pg_settings, tmp_path):
    manifest = run_backup(pg_settings)
    with app_db.connection_context():
        User.delete().where(User.name == "alice").execute()
        User.create_with_token("carol")
    app_db.close_all()
    restore(pg_settings.backups_dir, get_set(pg_settings.backups_dir, manifest["id"]),
            tmp_path / "out", ["postgresql"], database_url=pg_settings.database_url)
    with app_db.connection_context():
        assert sorted(u.name for u in User.select()) == ["alice", "bob"]
        # The identity goes on past the restored ids.
        user, _ = User.create_with_token("dave")
        assert user.id == 3


def test_a_restore_of_a_dump_needs_the_database_url(pg_settings, tmp_path):
    manifest = run_backup(pg_settings)
    with pytest.raises(Exception, match="QRQ_DATABASE_URL"):
        restore(pg_settings.backups_dir, manifest, tmp_path / "out", ["postgresql"])
    assert list_sets(pg_settings.backups_dir)[0]["status"] == "ok"


def test_missing_pg_dump_is_one_clear_error(pg_settings, tmp_path, monkeypatch):
    monkeypatch.setattr(postgres, "TOOL_DIRS", str(tmp_path / "none" / "*"))
    monkeypatch.setenv("PATH", str(tmp_path))
    manifest = run_backup(pg_settings)
    entry = {e["name"]: e for e in manifest["databases"]}["postgresql"]
    assert entry["status"] == "failed"
    assert entry["error"].startswith("pg_dump is not installed")
    assert manifest["status"] == "partial"


PASSWORD = "Zq7-not-on-a-command-line"


@pytest.fixture
def role_url():
    """A URL of a database of the administrator's on a private cluster, for a role qrq
    with CREATE on its schema and CREATEDB (README, "Moving to PostgreSQL") that logs in
    with a password (scram-sha-256, where the other clusters trust every login)."""
    import psycopg

    from tests.clusters import Cluster

    cluster = Cluster()
    try:
        with psycopg.connect(cluster.url, autocommit=True) as admin:
            admin.execute(f"create role qrq login password '{PASSWORD}' createdb")
            admin.execute("create database qrq")
            hba = cluster.dir / "data" / "pg_hba.conf"
            hba.write_text("host all qrq 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            admin.execute("select pg_reload_conf()")
        with psycopg.connect(_with(cluster.url, path="/qrq"), autocommit=True) as admin:
            admin.execute("grant create, usage on schema public to qrq")
        yield _with(cluster.url, path="/qrq", user=f"qrq:{PASSWORD}")
    finally:
        app_db.close_all()
        cluster.close()


def test_a_role_that_does_not_own_the_schema_restores_its_dump(tmp_path, role_url):
    # Only the schema's owner may comment on it, and the dump holds public's comment.
    import psycopg

    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path / "data"),
                              "QRQ_DATABASE_URL": role_url})
    settings.ensure_dirs()
    init_db(role_url)
    with app_db.connection_context():
        User.create_with_token("alice")
    manifest = run_backup(settings)
    assert manifest["status"] == "ok", manifest
    with app_db.connection_context():
        User.delete().execute()
    app_db.close_all()
    restore(settings.backups_dir, manifest, tmp_path / "out", ["postgresql"],
            database_url=role_url)
    with psycopg.connect(role_url) as conn:
        assert conn.execute('select name from "user"').fetchall() == [("alice",)]


def test_pg_dump_and_pg_restore_get_the_password_out_of_sight(tmp_path, role_url,
                                                             monkeypatch):
    # On their command line any local user reads it (ps, /proc/PID/cmdline).
    import subprocess

    command_lines = []

    class Watched(subprocess.Popen):
        def __init__(self, args, **kwargs):
            command_lines.append(" ".join(map(str, args)))
            super().__init__(args, **kwargs)

    monkeypatch.setattr(postgres.subprocess, "Popen", Watched)
    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path / "data"),
                              "QRQ_DATABASE_URL": role_url})
    settings.ensure_dirs()
    init_db(role_url)
    manifest = run_backup(settings)  # pg_dump, and pg_restore into a scratch database
    assert manifest["status"] == "ok", manifest
    app_db.close_all()
    restore(settings.backups_dir, manifest, tmp_path / "out", ["postgresql"],
            database_url=role_url)
    with_database = [line for line in command_lines if "--dbname=" in line]
    assert {line.split()[0].rsplit("/", 1)[-1] for line in with_database} == {
        "pg_dump", "pg_restore"}
    assert not [line for line in command_lines if PASSWORD in line]


def _with(url, *, path, user=None):
    """*url* with another database (*path*) and, if given, ``user:password``."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.split('@')[-1]}"
    return parts._replace(netloc=netloc, path=path).geturl()

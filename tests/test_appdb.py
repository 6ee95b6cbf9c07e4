"""The app database (users, templates, sessions, throttle) on SQLite and on PostgreSQL:
the same models, bound to either; its schema versions."""

import sqlite3

import pytest
from peewee import SqliteDatabase

from qrq.appdb import migrations, sessions, throttle
from qrq.appdb.db import app_db, init_db
from qrq.appdb.models import MODELS, Template, User
from qrq.errors import TooManyAttempts


@pytest.fixture(params=["sqlite", "postgres"])
def bound(request, tmp_path):
    """``app_db`` bound to a fresh app.db or a fresh PostgreSQL schema."""
    where = (tmp_path / "app.db" if request.param == "sqlite"
             else request.getfixturevalue("pg_url"))
    init_db(where)
    yield request.param
    app_db.close_all()


def test_users_templates_sessions_and_the_throttle_work_on_either_database(bound):
    stamp = 1_799_999_999.123456  # a 4-byte float would come back ~30 s off
    with app_db.connection_context():
        user, token = User.create_with_token("alice", admin=True, email="a@example.com")
        assert User.from_token(token).id == user.id
        assert User.from_token("qrq_nope") is None
        template = Template.create(name="t", domain="example.com", payload="x",
                                   qr_size_mm=60.1)
        assert Template.get_by_id_or_404(template.id).qr_size_mm == 60.1
        assert User.get_by_id(user.id).to_dict()["created_at"].endswith("Z")

        key = sessions.open_session(user, 3600.0, now=stamp)
        assert sessions.session_user(key, now=stamp + 3599.9).id == user.id
        assert sessions.session_user(key, now=stamp + 3600.1) is None
        sessions.end_session(key)
        assert sessions.session_user(key, now=stamp) is None

        for _ in range(throttle.LIMIT - 1):
            throttle.record_failure("10.0.0.1", now=stamp)
        throttle.check("10.0.0.1", now=stamp)  # not yet
        throttle.record_failure("10.0.0.1", now=stamp)
        with pytest.raises(TooManyAttempts) as refused:
            throttle.check("10.0.0.1", now=stamp + 0.5)
        assert refused.value.retry_after == 60
        # A new window starts the count again.
        throttle.record_failure("10.0.0.2", now=stamp)
        throttle.record_failure("10.0.0.2", now=stamp + throttle.WINDOW + 1)
        row = app_db.execute_sql(throttle.sql(
            'select failures, window_start from throttle where address = ?'),
            ("10.0.0.2",)).fetchone()
        assert tuple(row) == (1, stamp + throttle.WINDOW + 1)


def test_a_fresh_database_is_at_the_latest_version(bound):
    with app_db.connection_context():
        assert migrations.current_version(app_db) == migrations.LATEST
        assert migrations.migrate(app_db) == []  # nothing left to apply


def test_an_app_db_from_before_versioning_is_brought_under_it_and_keeps_its_rows(tmp_path):
    path = tmp_path / "app.db"
    old = SqliteDatabase(str(path))
    with old.bind_ctx(MODELS):
        old.create_tables(MODELS)
        User.create(name="bob", token_hash="h" * 64)
    old.close()
    init_db(path)
    with app_db.connection_context():
        assert migrations.current_version(app_db) == migrations.LATEST
        assert User.get(User.name == "bob").token_hash == "h" * 64
    app_db.close_all()


@pytest.mark.parametrize("create", [True, False])
def test_a_database_from_a_newer_qrq_is_refused(tmp_path, create):
    path = tmp_path / "app.db"
    init_db(path)
    app_db.close_all()
    with sqlite3.connect(path) as conn:
        conn.execute(f"insert into {migrations.TABLE} values (?, 0)",
                     (migrations.LATEST + 1,))
    conn.close()
    with pytest.raises(migrations.SchemaTooNew, match="upgrade qrq"):
        init_db(path, create=create)
    app_db.close_all()


def test_migrate_applies_what_is_missing_and_then_nothing(tmp_path):
    from qrq.appdb.db import migrate_app_db
    from qrq.config import load_settings

    settings = load_settings({"QRQ_DATA_DIR": str(tmp_path)})
    old = SqliteDatabase(str(settings.app_db))
    with old.bind_ctx(MODELS):
        old.create_tables(MODELS)
    old.close()
    assert migrate_app_db(settings) == ([1], migrations.LATEST)
    assert migrate_app_db(settings) == ([], migrations.LATEST)

"""The app database (users, templates, sessions, throttle): binding and probing.

``app_db`` (in :mod:`qrq.appdb.database`) is created unbound so the models can be
declared at import time; the web app, the CLI and the tasks bind it with
:func:`open_app_db` (the settings' database) or :func:`init_db` (one target).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from peewee import Database

from qrq.appdb import migrations
from qrq.appdb.database import PRAGMAS, app_db, postgres_database, sqlite_database
from qrq.config import Settings
from qrq.errors import QrqError

__all__ = ["PRAGMAS", "AppDatabaseLost", "app_db", "bind", "bound_to", "init_db",
           "migrate_app_db", "open_app_db", "probe", "target"]


def target(settings: Settings) -> str:
    """Where *settings* keep the app database: the PostgreSQL URL, else app.db's path."""
    return settings.database_url or str(settings.app_db)


def init_db(where: Path | str, busy_timeout: float = 10.0, create: bool = True) -> Database:
    """Bind ``app_db`` to *where* (a ``postgresql://`` URL or the path of app.db) and,
    with *create*, bring its schema up to date.

    :raises SchemaTooNew: the database was written by a newer qrq.
    """
    where = _canonical(str(where))
    if not app_db.deferred:  # bound before (tests and tasks rebind it)
        app_db.close_all()
    if where.startswith("postgresql://"):
        app_db.initialize(postgres_database(where, busy_timeout))
    else:
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        app_db.initialize(sqlite_database(where, busy_timeout))
    if create:
        with app_db.connection_context():
            migrations.migrate(app_db)
    else:
        with app_db.connection_context():
            migrations.check(app_db)
    app_db.close_all()
    return app_db


class AppDatabaseLost(QrqError):
    """app.db is missing or empty beside a queue that holds jobs."""

    status = 503
    code = "app_database_lost"


def open_app_db(settings: Settings, create: bool = True, *,
                ran_before: Callable[[], bool] | None = None) -> Database:
    """Bind ``app_db`` to the database *settings* name.

    :raises AppDatabaseLost: on SQLite, app.db is missing or has no tables while
        *ran_before* says the installation has run (its queue holds jobs): made anew,
        it would hold none of its users and tokens (a lost file, a mount that is not
        there). ``qrq init`` makes a new one on purpose.
    """
    if create and ran_before is not None and not settings.database_url \
            and not _has_tables(settings.app_db) and ran_before():
        raise AppDatabaseLost(
            f"{settings.app_db} is missing or empty, but the queue beside it holds jobs: "
            "made anew it would hold none of the users and tokens. Restore it (qrq backup "
            "restore latest --db app.db --to <data dir> --force), or run qrq init to "
            "start again with no users")
    return init_db(target(settings), settings.busy_timeout, create=create)


def _has_tables(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False  # missing
    try:
        return conn.execute("select count(*) from sqlite_master where type = 'table'"
                            ).fetchone()[0] > 0
    except sqlite3.Error:
        return True  # not a database: its own error, where it is opened
    finally:
        conn.close()


def migrate_app_db(settings: Settings) -> tuple[list[int], int]:
    """Apply the schema steps the app database lacks (``qrq migrate``); return the
    steps applied and the version it is at now.

    :raises SchemaTooNew: it was migrated by a newer qrq.
    """
    init_db(target(settings), settings.busy_timeout, create=False)
    with app_db.connection_context():
        applied = migrations.migrate(app_db)
        version = migrations.current_version(app_db)
    app_db.close_all()
    return applied, version


def bound_to(settings: Settings) -> bool:
    """Whether ``app_db`` is bound to the database *settings* name already."""
    return not app_db.deferred and app_db.database == _canonical(target(settings))


def bind(settings: Settings) -> Database:
    """Bind ``app_db`` to *settings*' database unless it is already (tasks, mail)."""
    if not bound_to(settings):
        open_app_db(settings, ran_before=lambda: True)  # a task runs: the queue has jobs
    return app_db


def _canonical(where: str) -> str:
    # libpq takes both schemes; peewee reads a URL as one only with the long one.
    return "postgresql://" + where[len("postgres://"):] if where.startswith("postgres://") \
        else where


def probe() -> None:
    """Open the app database and read the user table once (health checks).

    :raises peewee.DatabaseError: it cannot be opened or read (missing, corrupt, locked).
    """
    with app_db.connection_context():
        app_db.execute_sql('select 1 from "user" limit 1').fetchall()
